//! The allow-listed globals a pickle may call (`OrderedDict`, tensor and parameter
//! rebuilders, storage types), persistent ids, and selecting a sub-object by path.

use safetensors::Dtype;

use super::*;
use crate::error::{Error, Result};
use crate::weights::torch::archive::clip;

impl<'a> Vm<'a> {
    /// Maps `module.name` to an allow-listed global, or refuses it.
    pub(crate) fn resolve(&self, module: &str, name: &str) -> Result<Global> {
        let g = match (module, name) {
            ("collections", "OrderedDict") => Global::OrderedDict,
            ("torch._utils", "_rebuild_tensor_v2") => Global::RebuildTensorV2,
            ("torch._utils", "_rebuild_tensor") => Global::RebuildTensor,
            ("torch._utils", "_rebuild_parameter") => Global::RebuildParameter,
            ("torch._utils", "_rebuild_parameter_with_state") => Global::RebuildParameterWithState,
            ("torch", "FloatStorage") => Global::Storage(Dtype::F32),
            ("torch", "HalfStorage") => Global::Storage(Dtype::F16),
            ("torch", "BFloat16Storage") => Global::Storage(Dtype::BF16),
            ("torch", "DoubleStorage") => Global::Storage(Dtype::F64),
            ("torch", "LongStorage") => Global::Storage(Dtype::I64),
            ("torch", "IntStorage") => Global::Storage(Dtype::I32),
            ("torch", "ShortStorage") => Global::Storage(Dtype::I16),
            ("torch", "CharStorage") => Global::Storage(Dtype::I8),
            ("torch", "ByteStorage") => Global::Storage(Dtype::U8),
            ("torch", "BoolStorage") => Global::Storage(Dtype::BOOL),
            _ => {
                let mut global = format!("{module}.{name}");
                if global.len() > MAX_NAME_ECHO {
                    global = format!("{}…", clip(&global));
                }
                return Err(Error::PickleGlobal {
                    file: self.file.to_string(),
                    global,
                });
            }
        };
        Ok(g)
    }

    pub(crate) fn reduce(&mut self, callable: Value, args: Value) -> Result<Value> {
        let global = match callable {
            Value::Obj(id) => match &self.objs[id] {
                Obj::Global(g) => *g,
                other => return Err(self.err(format!("REDUCE calls a {}", other.kind()))),
            },
            other => return Err(self.err(format!("REDUCE calls a {}", self.describe(other)))),
        };
        let args = match args {
            Value::Obj(id) => match &self.objs[id] {
                // Every allow-listed callable takes at most 7 arguments: check before copying.
                Obj::Tuple(items) if items.len() <= 7 => items.clone(),
                Obj::Tuple(items) => {
                    return Err(self.err(format!("REDUCE with {} arguments", items.len())));
                }
                other => {
                    return Err(self.err(format!("REDUCE arguments are a {}", other.kind())));
                }
            },
            other => {
                return Err(self.err(format!("REDUCE arguments are a {}", self.describe(other))));
            }
        };
        match global {
            Global::OrderedDict => match args.as_slice() {
                [] => self.new_obj(Obj::Dict(Dict::default())),
                [Value::Obj(id)] => {
                    let n = match &self.objs[*id] {
                        Obj::List(items) | Obj::Tuple(items) => items.len(),
                        other => {
                            return Err(self.err(format!("OrderedDict({})", other.kind())));
                        }
                    };
                    // A shared list could be copied over and over: count the copies.
                    self.copied = self.copied.saturating_add(n);
                    if self.copied > self.code.len().saturating_add(1 << 16) {
                        return Err(self.err("OrderedDict copies exceed the input size"));
                    }
                    let pairs = match &self.objs[*id] {
                        Obj::List(items) | Obj::Tuple(items) => items.clone(),
                        _ => unreachable!("checked above"),
                    };
                    let mut dict = Dict::default();
                    for pair in pairs {
                        let kv = match pair {
                            Value::Obj(id) => match &self.objs[id] {
                                Obj::List(kv) | Obj::Tuple(kv) if kv.len() == 2 => (kv[0], kv[1]),
                                _ => return Err(self.err("OrderedDict item is not a pair")),
                            },
                            _ => return Err(self.err("OrderedDict item is not a pair")),
                        };
                        dict.set(kv.0, kv.1);
                    }
                    self.new_obj(Obj::Dict(dict))
                }
                _ => Err(self.err("OrderedDict called with unsupported arguments")),
            },
            Global::RebuildTensorV2 | Global::RebuildTensor => {
                let arity_ok = match global {
                    Global::RebuildTensorV2 => matches!(args.len(), 6 | 7),
                    _ => args.len() == 4,
                };
                if !arity_ok {
                    return Err(self.err(format!(
                        "tensor rebuild called with {} arguments",
                        args.len()
                    )));
                }
                let view = self.tensor_view(&args)?;
                self.new_obj(Obj::Tensor(view))
            }
            Global::RebuildParameter | Global::RebuildParameterWithState => {
                let arity = if global == Global::RebuildParameter {
                    3
                } else {
                    4
                };
                match args.as_slice() {
                    [data, ..] if args.len() == arity => {
                        match data {
                            Value::Obj(id) if matches!(self.objs[*id], Obj::Tensor(_)) => Ok(*data),
                            other => Err(self
                                .err(format!("_rebuild_parameter of a {}", self.describe(*other)))),
                        }
                    }
                    _ => Err(self.err(format!(
                        "_rebuild_parameter called with {} arguments",
                        args.len()
                    ))),
                }
            }
            Global::Storage(dtype) => Err(self.err(format!(
                "calling a storage type ({dtype:?}) is not supported"
            ))),
        }
    }

    pub(crate) fn non_negative(&self, v: Value, what: &str) -> Result<usize> {
        match v {
            Value::Int(i) => usize::try_from(i)
                .map_err(|_| self.err(format!("{what} is negative or too large ({i})"))),
            Value::Bool(b) => Ok(usize::from(b)),
            other => Err(self.err(format!("{what} is a {}, not an int", self.describe(other)))),
        }
    }

    pub(crate) fn int_tuple(&self, v: Value, what: &str) -> Result<Vec<usize>> {
        let items = match v {
            Value::Obj(id) => match &self.objs[id] {
                Obj::Tuple(items) | Obj::List(items) => items,
                other => return Err(self.err(format!("{what} is a {}", other.kind()))),
            },
            other => return Err(self.err(format!("{what} is a {}", self.describe(other)))),
        };
        if items.len() > MAX_DIMS {
            return Err(self.err(format!("{what} has more than {MAX_DIMS} dimensions")));
        }
        items.iter().map(|&i| self.non_negative(i, what)).collect()
    }

    pub(crate) fn tensor_view(&self, args: &[Value]) -> Result<TensorView> {
        let storage = match args[0] {
            Value::Obj(id) if matches!(self.objs[id], Obj::Storage(_)) => id,
            other => {
                return Err(self.err(format!(
                    "tensor rebuilt from a {}, not a storage",
                    self.describe(other)
                )));
            }
        };
        let offset = self.non_negative(args[1], "storage offset")?;
        let size = self.int_tuple(args[2], "tensor size")?;
        let stride = self.int_tuple(args[3], "tensor stride")?;
        if size.len() != stride.len() {
            return Err(self.err(format!(
                "tensor size {size:?} and stride {stride:?} differ in length"
            )));
        }
        Ok(TensorView {
            storage,
            offset,
            size,
            stride,
        })
    }

    /// `('storage', <storage type>, key, location, numel)` → a [`Storage`].
    pub(crate) fn persistent_load(&self, pid: Value) -> Result<Storage> {
        let items = match pid {
            Value::Obj(id) => match &self.objs[id] {
                Obj::Tuple(items) => items.as_slice(),
                other => {
                    return Err(self.err(format!("persistent id is a {}", other.kind())));
                }
            },
            other => {
                return Err(self.err(format!("persistent id is a {}", self.describe(other))));
            }
        };
        let [kind, storage_type, key, location, numel] = items else {
            return Err(self.err(format!(
                "persistent id has {} fields, expected 5",
                items.len()
            )));
        };
        if self.str_of(*kind).map(|s| &**s) != Some("storage") {
            return Err(self.err("persistent id is not a `storage` record"));
        }
        let dtype = match storage_type {
            Value::Obj(id) => match self.objs[*id] {
                Obj::Global(Global::Storage(dtype)) => dtype,
                _ => return Err(self.err("persistent id names no storage type")),
            },
            _ => return Err(self.err("persistent id names no storage type")),
        };
        let key = self
            .str_of(*key)
            .ok_or_else(|| self.err("storage key is not a string"))?
            .clone();
        if self.str_of(*location).is_none() {
            return Err(self.err("storage location is not a string"));
        }
        let numel = self.non_negative(*numel, "storage size")?;
        Ok(Storage { key, dtype, numel })
    }

    /// Descends from `root` through dict keys `path`.
    pub(crate) fn select(&self, root: Value, path: &[&str]) -> Result<Value> {
        let mut current = root;
        let mut walked = String::new();
        for component in path {
            let dict = match current {
                Value::Obj(id) => match &self.objs[id] {
                    Obj::Dict(d) => d,
                    other => {
                        return Err(self.err_at_end(format!(
                            "`{}` is a {}, not a dict",
                            display_path(&walked),
                            other.kind()
                        )));
                    }
                },
                other => {
                    return Err(self.err_at_end(format!(
                        "`{}` is a {}, not a dict",
                        display_path(&walked),
                        self.describe(other)
                    )));
                }
            };
            if !walked.is_empty() {
                walked.push('.');
            }
            walked.push_str(component);
            let by_str = self
                .interned
                .get(*component)
                .and_then(|&id| dict.index.get(&KeyId::Obj(id)));
            let by_int = component
                .parse::<i64>()
                .ok()
                .and_then(|i| dict.index.get(&KeyId::Int(i)));
            let index = by_str.or(by_int).ok_or_else(|| Error::MissingKey {
                file: self.file.to_string(),
                key: walked.clone(),
            })?;
            current = dict.items[*index].1;
        }
        Ok(current)
    }

    pub(crate) fn err_at_end(&self, message: String) -> Error {
        Error::Pickle {
            file: self.file.to_string(),
            message,
        }
    }
}

pub(crate) fn display_path(walked: &str) -> &str {
    if walked.is_empty() {
        "<top level>"
    } else {
        walked
    }
}

/// Names of opcodes we do not execute, for error messages.
pub(crate) fn opcode_name(op: u8) -> Option<&'static str> {
    Some(match op {
        b'I' => "INT",
        b'L' => "LONG",
        b'F' => "FLOAT",
        b'S' => "STRING",
        b'V' => "UNICODE",
        b'g' => "GET",
        b'p' => "PUT",
        b'P' => "PERSID",
        b'i' => "INST",
        b'o' => "OBJ",
        0x81 => "NEWOBJ",
        0x92 => "NEWOBJ_EX",
        0x82 => "EXT1",
        0x83 => "EXT2",
        0x84 => "EXT4",
        0x97 => "NEXT_BUFFER",
        0x98 => "READONLY_BUFFER",
        _ => return None,
    })
}
