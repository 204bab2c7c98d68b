//! From trained parameters (addressed by field path) back to checkpoint keys in diffusers /
//! transformers layout.
//!
//! The mapping is not written by hand: a module is built once from
//! [`TensorStore::tracing`](crate::weights::TensorStore::tracing) stores, whose every tensor
//! names the key it was read from. Reading that module's parameters back gives, for each path,
//! the key, the stored shape and whether the loader transposed it (as [`crate::nn::Linear`]
//! does). Anything else a loader did to a tensor is refused, so an export always inverts the
//! load exactly.

use std::collections::BTreeMap;

use burn::module::Module;

use super::params;
use crate::error::{Error, Result};
use crate::tensor::HostTensor;

/// Where one parameter goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Index of the tracing store (component) it was read from.
    pub store: usize,
    /// Its key there.
    pub key: String,
    /// Its stored shape.
    pub shape: Vec<usize>,
    /// The loader transposed the stored `[a, b]` matrix to `[b, a]`.
    pub transposed: bool,
}

/// Parameter path → stored key, for every parameter of a module.
#[derive(Debug, Clone, Default)]
pub struct KeyMap {
    /// The targets by parameter path.
    pub targets: BTreeMap<String, Target>,
    /// The keys read per store, in order (every one must be claimed by exactly one parameter).
    stores: Vec<Vec<(String, Vec<usize>)>>,
}

/// One tracing store's record: its marker base and its [`TensorStore::traced`](crate::weights::TensorStore::traced) keys.
pub type Traced = (usize, Vec<(String, Vec<usize>)>);

impl KeyMap {
    /// Maps every parameter of `module` (built from tracing stores `traced`) to its key.
    pub fn trace<M: Module>(module: &M, traced: &[Traced]) -> Result<Self> {
        let fail = |path: &str, why: String| Error::SafeTensors {
            file: "export key map".into(),
            message: format!("parameter `{path}`: {why}"),
        };
        let mut claimed: Vec<Vec<bool>> =
            traced.iter().map(|(_, k)| vec![false; k.len()]).collect();
        let mut targets = BTreeMap::new();
        for (path, host) in params::read(module) {
            let marker = host.data.first().copied().unwrap_or(0.0);
            let index = -marker - 1.0;
            if index < 0.0 || index.fract() != 0.0 {
                return Err(fail(&path, "not read from a tracing store".into()));
            }
            let index = index as usize;
            let Some((store, (base, keys))) = traced
                .iter()
                .enumerate()
                .find(|(_, (base, keys))| index >= *base && index < base + keys.len())
            else {
                return Err(fail(&path, format!("marker {index} matches no traced key")));
            };
            let k = index - base;
            let (key, shape) = &keys[k];
            let transposed = layout(&host, shape)
                .ok_or_else(|| fail(&path, format!("`{key}` {shape:?} was transformed at load")))?;
            if std::mem::replace(&mut claimed[store][k], true) {
                return Err(fail(&path, format!("`{key}` feeds two parameters")));
            }
            targets.insert(
                path,
                Target {
                    store,
                    key: key.clone(),
                    shape: shape.clone(),
                    transposed,
                },
            );
        }
        for (store, flags) in claimed.iter().enumerate() {
            if let Some(k) = flags.iter().position(|c| !c) {
                return Err(fail(
                    "-",
                    format!(
                        "key `{}` of store {store} feeds no parameter",
                        traced[store].1[k].0
                    ),
                ));
            }
        }
        Ok(KeyMap {
            targets,
            stores: traced.iter().map(|(_, k)| k.clone()).collect(),
        })
    }

    /// Splits `values` (parameters by path, e.g. [`params::read`] of the trained module) into
    /// one key → tensor map per store, in stored layout. Every mapped path must be present.
    pub fn export(
        &self,
        values: &BTreeMap<String, HostTensor>,
    ) -> Result<Vec<BTreeMap<String, HostTensor>>> {
        let mut out = vec![BTreeMap::new(); self.stores.len()];
        for (path, t) in &self.targets {
            let host = values.get(path).ok_or_else(|| Error::MissingKey {
                file: "exported parameters".into(),
                key: path.clone(),
            })?;
            let n: usize = t.shape.iter().product();
            if host.data.len() != n {
                return Err(Error::ShapeMismatch {
                    file: "exported parameters".into(),
                    key: path.clone(),
                    expected: t.shape.clone(),
                    found: host.shape.clone(),
                });
            }
            let data = if t.transposed {
                let [a, b] = [host.shape[0], host.shape[1]];
                transpose(&host.data, a, b)
            } else {
                host.data.clone()
            };
            out[t.store].insert(
                t.key.clone(),
                HostTensor {
                    shape: t.shape.clone(),
                    data,
                },
            );
        }
        Ok(out)
    }
}

/// `Some(false)`: `host` holds the marker tensor of `shape` as stored; `Some(true)`: its
/// transpose (stored 2-D `[a, b]` or `[a, b, 1, 1]`, loaded `[b, a]`); `None`: anything else.
fn layout(host: &HostTensor, shape: &[usize]) -> Option<bool> {
    let n: usize = shape.iter().product();
    if host.data.len() != n {
        return None;
    }
    let marked = |data: &[f32]| {
        data.iter()
            .skip(1)
            .enumerate()
            .all(|(j, v)| *v == (j + 1) as f32)
    };
    if marked(&host.data) {
        return Some(false);
    }
    if host.shape.len() == 2 {
        let [rows, cols] = [host.shape[0], host.shape[1]];
        let mut stored = transpose(&host.data, rows, cols);
        stored[0] = 0.0;
        if marked(&stored) {
            return Some(true);
        }
    }
    None
}

/// Row-major `[rows, cols]` → `[cols, rows]`.
fn transpose(data: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0; data.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = data[r * cols + c];
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::Linear;
    use crate::weights::TensorStore;
    use burn::tensor::Device;

    #[derive(Module, Debug)]
    struct Pair {
        a: Linear,
        b: Linear,
    }

    #[test]
    fn linear_layers_map_back_transposed_and_biases_as_is() {
        let device = Device::flex();
        let store = TensorStore::tracing("t", 5);
        let root = store.root(&device);
        let pair = Pair {
            b: Linear::load(&root.pp("second"), 3, 2, true).unwrap(),
            a: Linear::load(&root.pp("first.0"), 2, 4, false).unwrap(),
        };
        let map = KeyMap::trace(&pair, &[(5, store.traced())]).unwrap();
        let t = &map.targets["a.weight"];
        assert_eq!(
            (t.key.as_str(), t.shape.as_slice(), t.transposed),
            ("first.0.weight", &[4, 2][..], true)
        );
        assert!(!map.targets["b.bias"].transposed);
        assert_eq!(map.targets["b.bias"].key, "second.bias");
        // Export inverts the load: values written by key read back identical through Linear::load.
        let mut values = params::read(&pair);
        for (i, v) in values
            .values_mut()
            .flat_map(|h| h.data.iter_mut())
            .enumerate()
        {
            *v = i as f32 * 0.5;
        }
        let pair = params::write(pair, &values, "test").unwrap();
        let files = map.export(&params::read(&pair)).unwrap();
        let mut again = TensorStore::empty("again");
        for (k, h) in &files[0] {
            let bytes = h.data.iter().flat_map(|v| v.to_le_bytes()).collect();
            again
                .insert(
                    k.clone(),
                    safetensors::tensor::Dtype::F32,
                    h.shape.clone(),
                    bytes,
                )
                .unwrap();
        }
        let root = again.root(&device);
        let reloaded = Pair {
            b: Linear::load(&root.pp("second"), 3, 2, true).unwrap(),
            a: Linear::load(&root.pp("first.0"), 2, 4, false).unwrap(),
        };
        again.finish().unwrap();
        assert_eq!(params::read(&reloaded), params::read(&pair));
    }

    #[test]
    fn a_module_not_built_from_the_trace_is_refused() {
        let device = Device::flex();
        let store = TensorStore::synthetic("s", 0);
        let l = Linear::load(&store.root(&device), 2, 2, false).unwrap();
        let err = KeyMap::trace(&l, &[(0, Vec::new())])
            .unwrap_err()
            .to_string();
        assert!(err.contains("weight"), "{err}");
    }
}
