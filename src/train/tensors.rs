//! Host tensor maps to and from safetensors files (checkpoints and exported weights).

use std::collections::BTreeMap;
use std::path::Path;

use safetensors::tensor::{Dtype, TensorView};

use crate::error::{Error, Result};
use crate::files::write_atomic;
use crate::tensor::HostTensor;
use crate::weights::TensorStore;

/// Storage precision of a written file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precision {
    /// f32 (checkpoints: exact resume).
    F32,
    /// f16 (shipped weights).
    F16,
}

/// Serialises `tensors` (sorted by key) as safetensors bytes with `metadata`.
pub fn to_bytes(
    tensors: &BTreeMap<String, HostTensor>,
    precision: Precision,
    metadata: Option<std::collections::HashMap<String, String>>,
) -> Result<Vec<u8>> {
    let buffers: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(k, t)| {
            let bytes = match precision {
                Precision::F32 => t.data.iter().flat_map(|v| v.to_le_bytes()).collect(),
                Precision::F16 => t
                    .data
                    .iter()
                    .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
                    .collect(),
            };
            (k.clone(), t.shape.clone(), bytes)
        })
        .collect();
    let dtype = match precision {
        Precision::F32 => Dtype::F32,
        Precision::F16 => Dtype::F16,
    };
    let views = buffers
        .iter()
        .map(|(k, shape, bytes)| {
            TensorView::new(dtype, shape.clone(), bytes)
                .map(|v| (k.clone(), v))
                .map_err(|e| Error::SafeTensors {
                    file: k.clone(),
                    message: e.to_string(),
                })
        })
        .collect::<Result<Vec<_>>>()?;
    safetensors::tensor::serialize(views, metadata).map_err(|e| Error::SafeTensors {
        file: "<memory>".into(),
        message: e.to_string(),
    })
}

/// Writes `tensors` to `path` ([`write_atomic`]).
pub fn save(
    path: &Path,
    tensors: &BTreeMap<String, HostTensor>,
    precision: Precision,
) -> Result<()> {
    let bytes = to_bytes(tensors, precision, None)?;
    write_atomic(path, &bytes)
}

/// Reads every tensor of a safetensors file as f32.
pub fn load(path: &Path) -> Result<BTreeMap<String, HostTensor>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let store = TensorStore::from_bytes(path.display().to_string(), bytes)?;
    let keys: Vec<String> = store.keys().map(str::to_string).collect();
    keys.into_iter()
        .map(|k| {
            let shape = store.shape(&k).unwrap_or(&[]).to_vec();
            let data = store.read_f32(&k, &shape)?;
            Ok((k, HostTensor { shape, data }))
        })
        .collect()
}
