//! Shared helpers for the parity tests: fixture paths, reference tensors, error metrics.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;

use burn::tensor::{Tensor, TensorData};
use safetensors::{Dtype, SafeTensors};

/// `tests/fixtures/<rel>`.
pub fn fixture(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(rel)
}

/// A reference tensor from a fixture file.
#[derive(Debug, Clone)]
pub struct Ref {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl Ref {
    /// As a burn tensor on `device`.
    pub fn tensor<const D: usize>(&self, device: &burn::tensor::Device) -> Tensor<D> {
        let shape: [usize; D] = self.shape.clone().try_into().expect("rank");
        Tensor::from_data(TensorData::new(self.data.clone(), shape), device)
    }

    /// As latents for [`synfer::pipeline::Pipeline::generate`].
    pub fn host_tensor(&self) -> synfer::tensor::HostTensor {
        synfer::tensor::HostTensor {
            shape: self.shape.clone(),
            data: self.data.clone(),
        }
    }

    /// Slice `i` along the first axis.
    pub fn index(&self, i: usize) -> Ref {
        let per: usize = self.shape[1..].iter().product();
        Ref {
            shape: self.shape[1..].to_vec(),
            data: self.data[i * per..(i + 1) * per].to_vec(),
        }
    }
}

/// Every tensor of a reference safetensors file, as f32 (ints converted).
pub fn load_refs(rel: &str) -> HashMap<String, Ref> {
    let bytes = std::fs::read(fixture(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
    let st = SafeTensors::deserialize(&bytes).expect("valid safetensors");
    st.tensors()
        .into_iter()
        .map(|(name, view)| {
            let b = view.data();
            let data: Vec<f32> = match view.dtype() {
                Dtype::F32 => b
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                    .collect(),
                Dtype::F64 => b
                    .chunks_exact(8)
                    .map(|c| f64::from_le_bytes(c.try_into().unwrap()) as f32)
                    .collect(),
                Dtype::I32 => b
                    .chunks_exact(4)
                    .map(|c| i32::from_le_bytes(c.try_into().unwrap()) as f32)
                    .collect(),
                Dtype::I64 => b
                    .chunks_exact(8)
                    .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as f32)
                    .collect(),
                Dtype::U8 => b.iter().map(|&v| v as f32).collect(),
                other => panic!("{rel}:{name}: unexpected dtype {other:?}"),
            };
            (
                name,
                Ref {
                    shape: view.shape().to_vec(),
                    data,
                },
            )
        })
        .collect()
}

/// A tensor appended by [`rewrite_safetensors`]: name, dtype, shape, little-endian bytes.
pub type ExtraTensor = (&'static str, Dtype, Vec<usize>, Vec<u8>);

/// Rewrites a safetensors file for error tests: `edit` gets each (name, shape, bytes) and
/// returns the new (shape, bytes), or `None` to drop the tensor; dtypes are kept; `extra`
/// tensors are appended.
pub fn rewrite_safetensors(
    bytes: &[u8],
    edit: impl Fn(&str, Vec<usize>, Vec<u8>) -> Option<(Vec<usize>, Vec<u8>)>,
    extra: Vec<ExtraTensor>,
) -> Vec<u8> {
    let st = SafeTensors::deserialize(bytes).unwrap();
    let mut kept: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .filter_map(|(name, view)| {
            let dtype = view.dtype();
            edit(&name, view.shape().to_vec(), view.data().to_vec())
                .map(|(s, d)| (name, dtype, s, d))
        })
        .collect();
    kept.extend(
        extra
            .into_iter()
            .map(|(n, t, s, d)| (n.to_string(), t, s, d)),
    );
    let views: Vec<(String, safetensors::tensor::TensorView)> = kept
        .iter()
        .map(|(n, t, s, d)| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(*t, s.clone(), d).unwrap(),
            )
        })
        .collect();
    safetensors::serialize(views, None).unwrap()
}

/// Reads a tensor back to the host.
pub fn host<const D: usize>(t: Tensor<D>) -> (Vec<usize>, Vec<f32>) {
    let dims = t.dims().to_vec();
    (
        dims,
        t.into_data()
            .try_into_vec_as::<f32>()
            .expect("f32 readback"),
    )
}

/// ‖a − b‖ / ‖b‖.
pub fn rel_l2(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    let num: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| (*x as f64 - *y as f64).powi(2))
        .sum();
    let den: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
    (num / den.max(1e-30)).sqrt()
}

/// max |a − b|; NaN when either side holds a NaN (so tolerance checks fail).
pub fn max_abs(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    if a.iter().chain(b).any(|v| v.is_nan()) {
        return f64::NAN;
    }
    a.iter()
        .zip(b)
        .map(|(x, y)| (*x as f64 - *y as f64).abs())
        .fold(0.0, f64::max)
}

/// Asserts shape equality and relative L2 ≤ `tol`, naming `what`.
pub fn assert_close<const D: usize>(what: &str, ours: Tensor<D>, reference: &Ref, tol: f64) {
    let (shape, data) = host(ours);
    assert_eq!(shape, reference.shape, "{what}: shape");
    let err = rel_l2(&data, &reference.data);
    eprintln!("{what}: relative L2 = {err:.3e}");
    assert!(err <= tol, "{what}: relative L2 {err:.3e} > {tol:e}");
}

/// Which keys [`assert_strict_loading`] corrupts in a weights file.
pub struct StrictCase {
    /// A 1-D tensor cut one element short (expect [`synfer::Error::ShapeMismatch`]).
    pub shrink: &'static str,
    /// A tensor given another shape with the same data, e.g. the original's HWIO layout.
    pub relayout: Option<(&'static str, Vec<usize>)>,
    /// A tensor dropped (expect [`synfer::Error::MissingKey`]).
    pub missing: &'static str,
    /// A tensor added (expect [`synfer::Error::UnusedKeys`]).
    pub extra: ExtraTensor,
}

/// Checks that `load` (a strict safetensors loader that names `file` in its errors) accepts
/// `bytes` and refuses, with the right typed error naming the key, a truncated file, an empty
/// one and each corruption of `case`.
pub fn assert_strict_loading(
    file: &str,
    bytes: &[u8],
    load: impl Fn(&[u8]) -> synfer::Result<()>,
    case: StrictCase,
) {
    use synfer::Error;
    load(bytes).unwrap_or_else(|e| panic!("{file}: the committed file loads: {e}"));
    match load(&bytes[..bytes.len() / 2]) {
        Err(Error::SafeTensors { file: f, .. }) => assert_eq!(f, file),
        other => panic!("{file} truncated: {other:?}"),
    }
    assert!(matches!(load(&[]), Err(Error::SafeTensors { .. })));

    let edit = |key: &str, new: &dyn Fn(Vec<usize>, Vec<u8>) -> (Vec<usize>, Vec<u8>)| {
        rewrite_safetensors(
            bytes,
            |name, shape, data| {
                Some(if name == key {
                    new(shape, data)
                } else {
                    (shape, data)
                })
            },
            vec![],
        )
    };
    let bad = edit(case.shrink, &|shape, data| {
        let width = data.len() / shape[0];
        (vec![shape[0] - 1], data[..data.len() - width].to_vec())
    });
    match load(&bad) {
        Err(Error::ShapeMismatch {
            key,
            expected,
            found,
            ..
        }) => {
            assert_eq!(key, case.shrink);
            assert_eq!(expected, [found[0] + 1]);
        }
        other => panic!("{file} mis-shaped {}: {other:?}", case.shrink),
    }
    if let Some((key, shape)) = &case.relayout {
        let bad = edit(key, &|_, data| (shape.clone(), data));
        match load(&bad) {
            Err(Error::ShapeMismatch { key: k, .. }) => assert_eq!(&k, key),
            other => panic!("{file} relayout {key}: {other:?}"),
        }
    }
    let bad = rewrite_safetensors(
        bytes,
        |name, shape, data| (name != case.missing).then_some((shape, data)),
        vec![],
    );
    match load(&bad) {
        Err(Error::MissingKey { key, .. }) => assert_eq!(key, case.missing),
        other => panic!("{file} missing {}: {other:?}", case.missing),
    }
    let extra = case.extra.0;
    let bad = rewrite_safetensors(
        bytes,
        |_, shape, data| Some((shape, data)),
        vec![case.extra],
    );
    match load(&bad) {
        Err(Error::UnusedKeys { keys, .. }) => assert_eq!(keys, [extra]),
        other => panic!("{file} extra {extra}: {other:?}"),
    }
}

/// The end-to-end request recorded in a reference JSON's `e2e` block: prompt, negative prompt,
/// steps, guidance and size.
pub fn e2e_request(meta: &serde_json::Value) -> synfer::pipeline::GenerateRequest {
    let e = &meta["e2e"];
    synfer::pipeline::GenerateRequest {
        prompt: e["prompt"].as_str().unwrap().into(),
        negative_prompt: e["negative_prompt"].as_str().map(String::from),
        steps: e["num_inference_steps"].as_u64().unwrap() as usize,
        guidance_scale: e["guidance_scale"].as_f64().unwrap(),
        width: Some(e["width"].as_u64().unwrap() as usize),
        height: Some(e["height"].as_u64().unwrap() as usize),
        ..Default::default()
    }
}

/// A fresh folder `name` (under the temp dir, per process) assembled from fixture parts by
/// symlinks: each `(fixture, parts)` links `tests/fixtures/<fixture>/<part>` for every part.
pub fn linked_model(name: &str, sources: &[(&str, &[&str])]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("synfer-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for (source, parts) in sources {
        for part in *parts {
            std::os::unix::fs::symlink(fixture(source).join(part), dir.join(part)).unwrap();
        }
    }
    dir
}
