//! AdamW (decoupled weight decay) with its moments keyed by parameter path, so that the
//! optimizer state saves and restores exactly (burn's own optimizer keys state by per-process
//! parameter ids), plus global-norm gradient clipping.

use std::collections::BTreeMap;

use burn::module::{Module, ModuleMapper, Param};
use burn::optim::GradientsParams;
use burn::tensor::{Device, Tensor, TensorData};

use super::params::{self, ParamInfo, PathTracker};
use crate::error::{Error, Result};
use crate::tensor::HostTensor;

/// Hyper-parameters.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AdamWConfig {
    /// β₁.
    pub beta1: f64,
    /// β₂.
    pub beta2: f64,
    /// ε.
    pub eps: f64,
    /// Decoupled weight decay (multiplied by the learning rate).
    pub weight_decay: f64,
    /// Clip the global gradient norm to this (0: off).
    pub clip_norm: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        AdamWConfig {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 1e-2,
            clip_norm: 1.0,
        }
    }
}

/// Per-parameter first and second moments (flattened, on the training device without autodiff).
#[derive(Debug, Clone)]
struct Moments {
    m: Tensor<1>,
    v: Tensor<1>,
}

/// The optimizer: hyper-parameters, step count and moments by path.
#[derive(Debug, Clone)]
pub struct AdamW {
    /// Hyper-parameters.
    pub config: AdamWConfig,
    /// Completed steps.
    pub step: u64,
    state: BTreeMap<String, Moments>,
}

/// What one step did.
#[derive(Debug, Clone, Copy)]
pub struct StepReport {
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// Parameters that received a gradient.
    pub updated: usize,
}

impl AdamW {
    /// A fresh optimizer.
    pub fn new(config: AdamWConfig) -> Self {
        AdamW {
            config,
            step: 0,
            state: BTreeMap::new(),
        }
    }

    /// Applies one update with learning rate `lr` to every parameter of `module` that has a
    /// gradient in `grads` (frozen parameters have none and stay untouched).
    pub fn step<M: Module>(
        &mut self,
        lr: f64,
        module: M,
        mut grads: GradientsParams,
    ) -> (M, StepReport) {
        let infos = params::list(&module);
        let grad_norm = global_norm(&infos, &grads);
        let clip = if self.config.clip_norm > 0.0 && grad_norm > self.config.clip_norm {
            self.config.clip_norm / grad_norm
        } else {
            1.0
        };
        self.step += 1;
        let t = self.step as i32;
        let c = self.config;
        let mut mapper = Mapper {
            tracker: PathTracker::default(),
            grads: &mut grads,
            state: &mut self.state,
            lr,
            clip,
            bias1: 1.0 - c.beta1.powi(t),
            bias2: 1.0 - c.beta2.powi(t),
            config: c,
            updated: 0,
        };
        let module = module.map(&mut mapper);
        let updated = mapper.updated;
        (module, StepReport { grad_norm, updated })
    }

    /// The moments as host tensors (`<path>.m`, `<path>.v`) for a checkpoint.
    pub fn state_to_host(&self) -> BTreeMap<String, HostTensor> {
        let mut out = BTreeMap::new();
        for (path, mo) in &self.state {
            for (suffix, t) in [("m", &mo.m), ("v", &mo.v)] {
                let data = t.to_data().try_into_vec_as::<f32>().unwrap_or_default();
                out.insert(
                    format!("{path}.{suffix}"),
                    HostTensor {
                        shape: t.dims().to_vec(),
                        data,
                    },
                );
            }
        }
        out
    }

    /// Restores moments saved by [`AdamW::state_to_host`] at `step`.
    pub fn from_host(
        config: AdamWConfig,
        step: u64,
        host: &BTreeMap<String, HostTensor>,
        device: &Device,
        file: &str,
    ) -> Result<Self> {
        let mut state = BTreeMap::new();
        for (key, m) in host {
            let Some(path) = key.strip_suffix(".m") else {
                continue;
            };
            let v = host
                .get(&format!("{path}.v"))
                .ok_or_else(|| Error::MissingKey {
                    file: file.to_string(),
                    key: format!("{path}.v"),
                })?;
            let load = |h: &HostTensor| {
                Tensor::<1>::from_data(TensorData::new(h.data.clone(), [h.data.len()]), device)
            };
            state.insert(
                path.to_string(),
                Moments {
                    m: load(m),
                    v: load(v),
                },
            );
        }
        Ok(AdamW {
            config,
            step,
            state,
        })
    }
}

/// `sqrt(Σ |g|²)` over every parameter that has a gradient.
fn global_norm(infos: &[ParamInfo], grads: &GradientsParams) -> f64 {
    let mut total = 0.0f64;
    for info in infos {
        let sq = match info.shape.len() {
            1 => grads.get::<1>(info.id).map(|g| g.powi_scalar(2).sum()),
            2 => grads.get::<2>(info.id).map(|g| g.powi_scalar(2).sum()),
            3 => grads.get::<3>(info.id).map(|g| g.powi_scalar(2).sum()),
            4 => grads.get::<4>(info.id).map(|g| g.powi_scalar(2).sum()),
            _ => None,
        };
        if let Some(s) = sq {
            total += f64::from(s.into_scalar::<f32>());
        }
    }
    total.sqrt()
}

struct Mapper<'a> {
    tracker: PathTracker,
    grads: &'a mut GradientsParams,
    state: &'a mut BTreeMap<String, Moments>,
    lr: f64,
    clip: f64,
    bias1: f64,
    bias2: f64,
    config: AdamWConfig,
    updated: usize,
}

impl ModuleMapper for Mapper<'_> {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.tracker.enter(name, container_type);
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.tracker.exit();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let (id, tensor, mapper) = param.consume();
        let Some(grad) = self.grads.remove::<D>(id) else {
            return Param::from_mapped_value(id, tensor, mapper);
        };
        let path = self.tracker.path();
        let dims = tensor.dims();
        let n: usize = dims.iter().product();
        let c = self.config;
        let g = grad.reshape([n]) * self.clip;
        let device = g.device();
        let moments = self.state.remove(&path).unwrap_or_else(|| Moments {
            m: Tensor::zeros([n], &device),
            v: Tensor::zeros([n], &device),
        });
        let m = moments.m * c.beta1 + g.clone() * (1.0 - c.beta1);
        let v = moments.v * c.beta2 + g.powi_scalar(2) * (1.0 - c.beta2);
        let update = (m.clone() / self.bias1) / ((v.clone() / self.bias2).sqrt() + c.eps);
        let value = tensor.inner().reshape([n]);
        let value = value * (1.0 - self.lr * c.weight_decay) - update * self.lr;
        let fresh = Tensor::<D>::from_inner(value.reshape(dims)).require_grad();
        self.state.insert(path, Moments { m, v });
        self.updated += 1;
        Param::from_mapped_value(id, fresh, mapper)
    }
}
