//! Flattening the selected object into `(dotted key, tensor)` pairs.

use super::archive::clip;
use super::pickle::*;
use crate::error::Error;
use crate::error::Result;

/// Walks the selected object and lists `(dotted key, tensor object)` pairs, within a work
/// budget so that shared sub-objects cannot make the walk exponential.
pub(crate) struct Flattener<'v, 'a> {
    vm: &'v Vm<'a>,
    work: usize,
    budget: usize,
    out: Vec<(String, usize)>,
}

impl<'v, 'a> Flattener<'v, 'a> {
    pub(crate) fn new(vm: &'v Vm<'a>) -> Self {
        Flattener {
            vm,
            work: 0,
            budget: vm.code.len().saturating_mul(16).saturating_add(1 << 20),
            out: Vec::new(),
        }
    }

    pub(crate) fn flatten(mut self, root: Value) -> Result<Vec<(String, usize)>> {
        match root {
            Value::Obj(id) if matches!(self.vm.objs[id], Obj::Dict(_)) => {}
            other => {
                return Err(self.vm.err_at_end(format!(
                    "the selected object is a {}, expected a dict (a state dict)",
                    self.vm.describe(other)
                )));
            }
        }
        let mut prefix = String::new();
        self.walk(root, &mut prefix, 0)?;
        Ok(self.out)
    }

    pub(crate) fn charge(&mut self, units: usize) -> Result<()> {
        self.work = self.work.saturating_add(units);
        if self.work > self.budget {
            return Err(self.vm.err_at_end(format!(
                "flattening the object exceeds {} steps (shared or cyclic sub-objects?)",
                self.budget
            )));
        }
        Ok(())
    }

    /// Whether `v` may hold tensors (so that its key matters).
    pub(crate) fn holds_tensors(&self, v: Value) -> bool {
        matches!(v, Value::Obj(id) if matches!(
            self.vm.objs[id],
            Obj::Tensor(_) | Obj::Dict(_) | Obj::List(_) | Obj::Tuple(_)
        ))
    }

    pub(crate) fn walk(&mut self, v: Value, prefix: &mut String, depth: usize) -> Result<()> {
        let Value::Obj(id) = v else { return Ok(()) };
        let vm = self.vm;
        match &vm.objs[id] {
            Obj::Tensor(_) => {
                self.charge(prefix.len())?;
                self.out.push((prefix.clone(), id));
            }
            Obj::Dict(dict) => {
                self.enter(depth, prefix)?;
                for &(key, value) in &dict.items {
                    self.charge(1)?;
                    if !self.holds_tensors(value) {
                        continue;
                    }
                    let component: std::borrow::Cow<'_, str> = match key {
                        Value::Int(i) => i.to_string().into(),
                        Value::Obj(kid) => match &vm.objs[kid] {
                            Obj::Str(s) => (&**s).into(),
                            other => return Err(self.bad_key(prefix, other.kind())),
                        },
                        other => return Err(self.bad_key(prefix, vm.describe(other))),
                    };
                    self.child(value, &component, prefix, depth)?;
                }
            }
            Obj::List(items) | Obj::Tuple(items) => {
                self.enter(depth, prefix)?;
                for (i, &value) in items.iter().enumerate() {
                    self.charge(1)?;
                    if self.holds_tensors(value) {
                        self.child(value, &i.to_string(), prefix, depth)?;
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }

    pub(crate) fn enter(&self, depth: usize, prefix: &str) -> Result<()> {
        if depth >= MAX_NESTING {
            return Err(self.vm.err_at_end(format!(
                "`{}…` nests deeper than {MAX_NESTING} levels",
                clip(prefix)
            )));
        }
        Ok(())
    }

    pub(crate) fn child(
        &mut self,
        value: Value,
        component: &str,
        prefix: &mut String,
        depth: usize,
    ) -> Result<()> {
        self.charge(component.len())?;
        let old = prefix.len();
        if !prefix.is_empty() {
            prefix.push('.');
        }
        prefix.push_str(component);
        self.walk(value, prefix, depth + 1)?;
        prefix.truncate(old);
        Ok(())
    }

    pub(crate) fn bad_key(&self, prefix: &str, kind: &str) -> Error {
        self.vm.err_at_end(format!(
            "a dict under `{}` holding tensors has a {kind} key; only str and int keys are \
             supported",
            display_path(prefix)
        ))
    }
}
