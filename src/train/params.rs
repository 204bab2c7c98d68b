//! A module's float parameters addressed by their field path (`down_blocks.0.resnets.1.conv1.weight`):
//! read them to the host (checkpoints, EMA, export) and write host values back.

use std::collections::BTreeMap;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::tensor::{Tensor, TensorData};

use crate::error::{Error, Result};
use crate::tensor::HostTensor;

/// One float parameter: its path, the innermost module type that owns it, and its id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamInfo {
    /// Field path joined with `.` (enum variants are not part of it).
    pub path: String,
    /// The owning struct's type name (`Linear`, `Conv2d`, …) or `""` for a bare field.
    pub owner: String,
    /// Shape.
    pub shape: Vec<usize>,
    /// burn's parameter id (unique per process run, not persistent).
    pub id: ParamId,
}

/// Tracks the current path while a visitor or mapper walks a module. burn enters every field
/// with its *container's* type (`Struct:Conv2d` for `weight`) and every enum variant with
/// `Enum:…`.
#[derive(Default)]
pub(crate) struct PathTracker {
    names: Vec<String>,
    types: Vec<String>,
}

impl PathTracker {
    pub(crate) fn enter(&mut self, name: &str, container_type: &str) {
        self.names.push(name.to_string());
        self.types.push(container_type.to_string());
    }

    pub(crate) fn exit(&mut self) {
        self.names.pop();
        self.types.pop();
    }

    /// The path of a parameter; enum variant names are skipped so that
    /// `proj_in.Conv.weight` reads `proj_in.weight`.
    pub(crate) fn path(&self) -> String {
        let names: Vec<&str> = self
            .names
            .iter()
            .zip(&self.types)
            .filter(|(_, t)| !t.starts_with("Enum:"))
            .map(|(n, _)| n.as_str())
            .collect();
        names.join(".")
    }

    fn owner(&self) -> String {
        self.types
            .last()
            .and_then(|t| t.strip_prefix("Struct:"))
            .unwrap_or("")
            .to_string()
    }
}

struct Lister {
    tracker: PathTracker,
    out: Vec<ParamInfo>,
}

impl ModuleVisitor for Lister {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.tracker.enter(name, container_type);
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.tracker.exit();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        self.out.push(ParamInfo {
            path: self.tracker.path(),
            owner: self.tracker.owner(),
            shape: param.dims().to_vec(),
            id: param.id,
        });
    }
}

/// Every float parameter of `module`, in visiting order.
pub fn list<M: Module>(module: &M) -> Vec<ParamInfo> {
    let mut lister = Lister {
        tracker: PathTracker::default(),
        out: Vec::new(),
    };
    module.visit(&mut lister);
    lister.out
}

struct Reader {
    tracker: PathTracker,
    out: BTreeMap<String, HostTensor>,
}

impl ModuleVisitor for Reader {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.tracker.enter(name, container_type);
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.tracker.exit();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let t = param.val();
        let shape = t.dims().to_vec();
        let data = t
            .into_data()
            .try_into_vec_as::<f32>()
            .expect("float parameters hold f32 values");
        self.out
            .insert(self.tracker.path(), HostTensor { shape, data });
    }
}

/// Copies every float parameter of `module` to the host, by path.
pub fn read<M: Module>(module: &M) -> BTreeMap<String, HostTensor> {
    let mut reader = Reader {
        tracker: PathTracker::default(),
        out: BTreeMap::new(),
    };
    module.visit(&mut reader);
    reader.out
}

struct Writer<'a> {
    tracker: PathTracker,
    values: &'a BTreeMap<String, HostTensor>,
    source: &'a str,
    used: usize,
    error: Option<Error>,
}

impl ModuleMapper for Writer<'_> {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.tracker.enter(name, container_type);
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.tracker.exit();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        if self.error.is_some() {
            return param;
        }
        let path = self.tracker.path();
        let (id, tensor, mapper) = param.consume();
        let dims = tensor.dims();
        let Some(host) = self.values.get(&path) else {
            self.error = Some(Error::MissingKey {
                file: self.source.to_string(),
                key: path,
            });
            return Param::from_mapped_value(id, tensor, mapper);
        };
        if host.shape != dims {
            self.error = Some(Error::ShapeMismatch {
                file: self.source.to_string(),
                key: path,
                expected: dims.to_vec(),
                found: host.shape.clone(),
            });
            return Param::from_mapped_value(id, tensor, mapper);
        }
        self.used += 1;
        let device = tensor.device();
        let grad = tensor.is_require_grad();
        let mut fresh = Tensor::<D>::from_data(TensorData::new(host.data.clone(), dims), &device);
        if grad {
            fresh = fresh.require_grad();
        }
        Param::from_mapped_value(id, fresh, mapper)
    }
}

/// Replaces every float parameter of `module` with the host value at its path. Every
/// parameter must be present with its shape and every value must be used; `source` names the
/// file in errors.
pub fn write<M: Module>(
    module: M,
    values: &BTreeMap<String, HostTensor>,
    source: &str,
) -> Result<M> {
    let mut writer = Writer {
        tracker: PathTracker::default(),
        values,
        source,
        used: 0,
        error: None,
    };
    let module = module.map(&mut writer);
    if let Some(e) = writer.error {
        return Err(e);
    }
    if writer.used != values.len() {
        let known: std::collections::BTreeSet<String> =
            list(&module).into_iter().map(|p| p.path).collect();
        let extra = values
            .keys()
            .find(|k| !known.contains(*k))
            .cloned()
            .unwrap_or_default();
        return Err(Error::UnusedKeys {
            file: source.to_string(),
            keys: vec![extra],
        });
    }
    Ok(module)
}

struct Freezer<F> {
    tracker: PathTracker,
    keep: F,
}

impl<F: Fn(&str) -> bool> ModuleMapper for Freezer<F> {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.tracker.enter(name, container_type);
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.tracker.exit();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let train = (self.keep)(&self.tracker.path());
        let (id, tensor, mapper) = param.consume();
        let tensor = tensor.set_require_grad(train);
        Param::from_mapped_value(id, tensor, mapper)
    }
}

/// Marks the parameters whose path `keep` rejects as frozen (no gradient, so the optimizer
/// leaves them untouched) and the others as trainable.
pub fn freeze<M: Module>(module: M, keep: impl Fn(&str) -> bool) -> M {
    module.map(&mut Freezer {
        tracker: PathTracker::default(),
        keep,
    })
}
