//! Exponential moving average of a module's parameters (kept on the training device).

use std::collections::BTreeMap;

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::{Device, Tensor, TensorData};

use super::params::PathTracker;
use crate::tensor::HostTensor;

/// `ema ← decay · ema + (1 − decay) · θ`, per parameter path (flattened).
#[derive(Debug, Clone, Default)]
pub struct Ema {
    values: BTreeMap<String, (Vec<usize>, Tensor<1>)>,
}

struct Updater<'a> {
    tracker: PathTracker,
    ema: &'a mut BTreeMap<String, (Vec<usize>, Tensor<1>)>,
    decay: f64,
}

impl ModuleVisitor for Updater<'_> {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.tracker.enter(name, container_type);
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.tracker.exit();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let value = param.val().inner();
        let dims = value.dims().to_vec();
        let n: usize = dims.iter().product();
        let flat = value.reshape([n]);
        let path = self.tracker.path();
        let next = match self.ema.remove(&path) {
            Some((_, old)) => old * self.decay + flat * (1.0 - self.decay),
            None => flat,
        };
        self.ema.insert(path, (dims, next));
    }
}

impl Ema {
    /// An empty average: the first [`Ema::update`] copies the parameters.
    pub fn new() -> Self {
        Self::default()
    }

    /// Folds the current parameters of `module` in with weight `1 − decay`.
    pub fn update<M: Module>(&mut self, module: &M, decay: f64) {
        let mut updater = Updater {
            tracker: PathTracker::default(),
            ema: &mut self.values,
            decay,
        };
        module.visit(&mut updater);
    }

    /// The averaged parameters on the host.
    pub fn to_host(&self) -> BTreeMap<String, HostTensor> {
        self.values
            .iter()
            .map(|(k, (shape, t))| {
                let data = t.to_data().try_into_vec_as::<f32>().unwrap_or_default();
                (
                    k.clone(),
                    HostTensor {
                        shape: shape.clone(),
                        data,
                    },
                )
            })
            .collect()
    }

    /// Restores an average saved with [`Ema::to_host`].
    pub fn from_host(host: &BTreeMap<String, HostTensor>, device: &Device) -> Self {
        let values = host
            .iter()
            .map(|(k, t)| {
                let flat =
                    Tensor::<1>::from_data(TensorData::new(t.data.clone(), [t.data.len()]), device);
                (k.clone(), (t.shape.clone(), flat))
            })
            .collect();
        Ema { values }
    }
}
