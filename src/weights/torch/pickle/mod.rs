//! The pickle stack machine: interprets the opcodes of `data.pkl` without calling anything;
//! only allow-listed globals ([`calls`]) build objects.

mod calls;
mod read;

pub(crate) use calls::{display_path, opcode_name};

use std::collections::HashMap;
use std::rc::Rc;

use safetensors::Dtype;

use crate::error::{Error, Result};

/// Most values on the pickle stack at once.
pub(crate) const MAX_STACK: usize = 1 << 20;
/// Most open MARKs at once.
pub(crate) const MAX_MARKS: usize = 1 << 16;
/// Most memo entries.
pub(crate) const MAX_MEMO: usize = 1 << 20;
/// Most objects (strings, containers, tensors, …) one pickle may create.
pub(crate) const MAX_OBJECTS: usize = 1 << 22;
/// Deepest nesting of dicts/lists that is flattened into keys.
pub(crate) const MAX_NESTING: usize = 64;
/// Most dimensions of a tensor.
pub(crate) const MAX_DIMS: usize = 64;
/// Longest global name echoed back in an error message.
pub(crate) const MAX_NAME_ECHO: usize = 200;

/// A pickle value: scalars inline, everything else an index into [`Vm::objs`].
#[derive(Debug, Clone, Copy)]
pub(crate) enum Value {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Obj(usize),
}

/// An allow-listed global.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Global {
    OrderedDict,
    RebuildTensorV2,
    RebuildTensor,
    RebuildParameter,
    RebuildParameterWithState,
    Storage(Dtype),
}

/// A storage named by a persistent id.
#[derive(Debug)]
pub(crate) struct Storage {
    pub(crate) key: Rc<str>,
    pub(crate) dtype: Dtype,
    pub(crate) numel: usize,
}

/// `_rebuild_tensor_v2(storage, offset, size, stride, …)`.
#[derive(Debug)]
pub(crate) struct TensorView {
    /// Object index of the [`Storage`].
    pub(crate) storage: usize,
    pub(crate) offset: usize,
    pub(crate) size: Vec<usize>,
    pub(crate) stride: Vec<usize>,
}

/// Dict keys by identity; strings are interned, so identity is equality for them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum KeyId {
    None,
    Int(i64),
    Float(u64),
    Obj(usize),
}

#[derive(Debug, Default)]
pub(crate) struct Dict {
    pub(crate) items: Vec<(Value, Value)>,
    pub(crate) index: HashMap<KeyId, usize>,
}

impl Dict {
    pub(crate) fn set(&mut self, key: Value, value: Value) {
        match self.index.get(&key_id(key)) {
            Some(&i) => self.items[i].1 = value,
            None => {
                self.index.insert(key_id(key), self.items.len());
                self.items.push((key, value));
            }
        }
    }
}

pub(crate) fn key_id(v: Value) -> KeyId {
    match v {
        Value::None => KeyId::None,
        Value::Bool(b) => KeyId::Int(i64::from(b)),
        Value::Int(i) => KeyId::Int(i),
        // Python: 1.0 == 1, so integral floats share the int's key.
        Value::Float(f) if f.fract() == 0.0 && f.abs() < 9.2e18 => KeyId::Int(f as i64),
        Value::Float(f) => KeyId::Float(f.to_bits()),
        Value::Obj(id) => KeyId::Obj(id),
    }
}

#[derive(Debug)]
pub(crate) enum Obj {
    Str(Rc<str>),
    /// Bytes objects are never used as data, only kept as opaque values.
    Bytes,
    List(Vec<Value>),
    Tuple(Vec<Value>),
    Dict(Dict),
    Global(Global),
    Storage(Storage),
    Tensor(TensorView),
}

impl Obj {
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Obj::Str(_) => "str",
            Obj::Bytes => "bytes",
            Obj::List(_) => "list",
            Obj::Tuple(_) => "tuple",
            Obj::Dict(_) => "dict",
            Obj::Global(_) => "global",
            Obj::Storage(_) => "storage",
            Obj::Tensor(_) => "tensor",
        }
    }
}

pub(crate) struct Vm<'a> {
    pub(crate) file: &'a str,
    pub(crate) code: &'a [u8],
    pub(crate) pos: usize,
    /// Offset of the opcode being executed (for error messages).
    pub(crate) op_at: usize,
    pub(crate) stack: Vec<Value>,
    pub(crate) marks: Vec<usize>,
    pub(crate) memo: HashMap<u32, Value>,
    pub(crate) objs: Vec<Obj>,
    pub(crate) interned: HashMap<Rc<str>, usize>,
    /// Container items copied by `OrderedDict(list)` calls (bounded by the pickle size).
    pub(crate) copied: usize,
}

impl<'a> Vm<'a> {
    pub(crate) fn new(file: &'a str, code: &'a [u8]) -> Self {
        Vm {
            file,
            code,
            pos: 0,
            op_at: 0,
            stack: Vec::new(),
            marks: Vec::new(),
            memo: HashMap::new(),
            objs: Vec::new(),
            interned: HashMap::new(),
            copied: 0,
        }
    }

    pub(crate) fn err(&self, message: impl std::fmt::Display) -> Error {
        Error::Pickle {
            file: self.file.to_string(),
            message: format!("at pickle byte {}: {message}", self.op_at),
        }
    }

    // -- input --
    pub(crate) fn new_obj(&mut self, obj: Obj) -> Result<Value> {
        if self.objs.len() >= MAX_OBJECTS {
            return Err(self.err(format!("more than {MAX_OBJECTS} objects")));
        }
        self.objs.push(obj);
        Ok(Value::Obj(self.objs.len() - 1))
    }

    pub(crate) fn intern(&mut self, bytes: &[u8]) -> Result<Value> {
        let s = std::str::from_utf8(bytes).map_err(|_| self.err("string is not valid UTF-8"))?;
        if let Some(&id) = self.interned.get(s) {
            return Ok(Value::Obj(id));
        }
        let rc: Rc<str> = Rc::from(s);
        let v = self.new_obj(Obj::Str(rc.clone()))?;
        if let Value::Obj(id) = v {
            self.interned.insert(rc, id);
        }
        Ok(v)
    }

    pub(crate) fn push(&mut self, v: Value) -> Result<()> {
        if self.stack.len() >= MAX_STACK {
            return Err(self.err(format!("stack deeper than {MAX_STACK}")));
        }
        self.stack.push(v);
        Ok(())
    }

    pub(crate) fn push_obj(&mut self, obj: Obj) -> Result<()> {
        let v = self.new_obj(obj)?;
        self.push(v)
    }

    /// The stack floor: values below the innermost MARK are out of reach.
    pub(crate) fn floor(&self) -> usize {
        self.marks.last().copied().unwrap_or(0)
    }

    pub(crate) fn pop(&mut self) -> Result<Value> {
        if self.stack.len() <= self.floor() {
            return Err(self.err("stack underflow"));
        }
        Ok(self.stack.pop().expect("above the floor"))
    }

    pub(crate) fn top(&self) -> Result<Value> {
        if self.stack.len() <= self.floor() {
            return Err(self.err("stack underflow"));
        }
        Ok(*self.stack.last().expect("above the floor"))
    }

    pub(crate) fn pop_mark(&mut self) -> Result<Vec<Value>> {
        let mark = self.marks.pop().ok_or_else(|| self.err("no MARK to pop"))?;
        Ok(self.stack.split_off(mark))
    }

    pub(crate) fn str_of(&self, v: Value) -> Option<&Rc<str>> {
        match v {
            Value::Obj(id) => match &self.objs[id] {
                Obj::Str(s) => Some(s),
                _ => None,
            },
            _ => None,
        }
    }

    pub(crate) fn describe(&self, v: Value) -> &'static str {
        match v {
            Value::None => "None",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Float(_) => "float",
            Value::Obj(id) => self.objs[id].kind(),
        }
    }

    pub(crate) fn memo_put(&mut self, index: u32) -> Result<()> {
        let v = self.top()?;
        if self.memo.len() >= MAX_MEMO && !self.memo.contains_key(&index) {
            return Err(self.err(format!("more than {MAX_MEMO} memo entries")));
        }
        self.memo.insert(index, v);
        Ok(())
    }

    pub(crate) fn memo_get(&mut self, index: u32) -> Result<()> {
        let v = *self
            .memo
            .get(&index)
            .ok_or_else(|| self.err(format!("memo entry {index} is not defined")))?;
        self.push(v)
    }

    // -- execution --

    pub(crate) fn run(&mut self) -> Result<Value> {
        loop {
            self.op_at = self.pos;
            let op = match self.code.get(self.pos) {
                Some(&op) => op,
                None => return Err(self.err("pickle ends without STOP")),
            };
            self.pos += 1;
            match op {
                // PROTO
                0x80 => {
                    let v = self.byte()?;
                    if v > 5 {
                        return Err(self.err(format!("unsupported pickle protocol {v}")));
                    }
                }
                // FRAME: a length hint; frames need no special handling here.
                0x95 => {
                    self.u64()?;
                }
                // STOP
                b'.' => return self.pop(),
                // MARK
                b'(' => {
                    if self.marks.len() >= MAX_MARKS {
                        return Err(self.err(format!("more than {MAX_MARKS} open MARKs")));
                    }
                    self.marks.push(self.stack.len());
                }
                // POP
                b'0' => {
                    if self.stack.len() > self.floor() {
                        self.stack.pop();
                    } else {
                        self.pop_mark()?;
                    }
                }
                // POP_MARK
                b'1' => {
                    self.pop_mark()?;
                }
                // DUP
                b'2' => {
                    let v = self.top()?;
                    self.push(v)?;
                }
                // EMPTY_DICT
                b'}' => self.push_obj(Obj::Dict(Dict::default()))?,
                // DICT
                b'd' => {
                    let items = self.pop_mark()?;
                    let dict = self.dict_from(&items)?;
                    self.push_obj(Obj::Dict(dict))?;
                }
                // EMPTY_LIST, EMPTY_SET
                b']' | 0x8f => self.push_obj(Obj::List(Vec::new()))?,
                // LIST, FROZENSET
                b'l' | 0x91 => {
                    let items = self.pop_mark()?;
                    self.push_obj(Obj::List(items))?;
                }
                // EMPTY_TUPLE
                b')' => self.push_obj(Obj::Tuple(Vec::new()))?,
                // TUPLE
                b't' => {
                    let items = self.pop_mark()?;
                    self.push_obj(Obj::Tuple(items))?;
                }
                // TUPLE1..3
                0x85..=0x87 => {
                    let n = usize::from(op - 0x84);
                    let mut items = Vec::with_capacity(n);
                    for _ in 0..n {
                        items.push(self.pop()?);
                    }
                    items.reverse();
                    self.push_obj(Obj::Tuple(items))?;
                }
                // APPEND
                b'a' => {
                    let v = self.pop()?;
                    self.extend_list(&[v])?;
                }
                // APPENDS, ADDITEMS
                b'e' | 0x90 => {
                    let items = self.pop_mark()?;
                    self.extend_list(&items)?;
                }
                // SETITEM
                b's' => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    self.set_items(&[k, v])?;
                }
                // SETITEMS
                b'u' => {
                    let items = self.pop_mark()?;
                    self.set_items(&items)?;
                }
                // BININT
                b'J' => {
                    let v = self.u32()? as i32;
                    self.push(Value::Int(i64::from(v)))?;
                }
                // BININT1
                b'K' => {
                    let v = self.byte()?;
                    self.push(Value::Int(i64::from(v)))?;
                }
                // BININT2
                b'M' => {
                    let v = self.u16()?;
                    self.push(Value::Int(i64::from(v)))?;
                }
                // LONG1
                0x8a => {
                    let n = usize::from(self.byte()?);
                    let v = self.long(n)?;
                    self.push(Value::Int(v))?;
                }
                // LONG4
                0x8b => {
                    let n = self.u32()? as i32;
                    let n = usize::try_from(n).map_err(|_| self.err("negative LONG4 length"))?;
                    let v = self.long(n)?;
                    self.push(Value::Int(v))?;
                }
                // BINFLOAT (big-endian)
                b'G' => {
                    let b = self.take(8)?;
                    let mut a = [0u8; 8];
                    a.copy_from_slice(b);
                    self.push(Value::Float(f64::from_be_bytes(a)))?;
                }
                // NEWTRUE, NEWFALSE, NONE
                0x88 => self.push(Value::Bool(true))?,
                0x89 => self.push(Value::Bool(false))?,
                b'N' => self.push(Value::None)?,
                // BINUNICODE, BINSTRING (as UTF-8, like torch.load's default encoding)
                b'X' | b'T' => {
                    let n = self.u32()?;
                    if op == b'T' && (n as i32) < 0 {
                        return Err(self.err("negative BINSTRING length"));
                    }
                    let b = self.take(n as usize)?;
                    let v = self.intern(b)?;
                    self.push(v)?;
                }
                // SHORT_BINUNICODE, SHORT_BINSTRING
                0x8c | b'U' => {
                    let n = usize::from(self.byte()?);
                    let b = self.take(n)?;
                    let v = self.intern(b)?;
                    self.push(v)?;
                }
                // BINUNICODE8
                0x8d => {
                    let n = self.len64()?;
                    let b = self.take(n)?;
                    let v = self.intern(b)?;
                    self.push(v)?;
                }
                // BINBYTES, SHORT_BINBYTES, BINBYTES8, BYTEARRAY8
                b'B' | b'C' | 0x8e | 0x96 => {
                    let n = match op {
                        b'B' => self.u32()? as usize,
                        b'C' => usize::from(self.byte()?),
                        _ => self.len64()?,
                    };
                    self.take(n)?;
                    self.push_obj(Obj::Bytes)?;
                }
                // BINPUT, LONG_BINPUT, MEMOIZE
                b'q' => {
                    let i = self.byte()?;
                    self.memo_put(u32::from(i))?;
                }
                b'r' => {
                    let i = self.u32()?;
                    self.memo_put(i)?;
                }
                0x94 => {
                    let i = u32::try_from(self.memo.len()).expect("memo is capped");
                    self.memo_put(i)?;
                }
                // BINGET, LONG_BINGET
                b'h' => {
                    let i = self.byte()?;
                    self.memo_get(u32::from(i))?;
                }
                b'j' => {
                    let i = self.u32()?;
                    self.memo_get(i)?;
                }
                // GLOBAL
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    let g = self.resolve(module, name)?;
                    self.push_obj(Obj::Global(g))?;
                }
                // STACK_GLOBAL
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    let (Some(module), Some(name)) = (self.str_of(module), self.str_of(name))
                    else {
                        return Err(self.err("STACK_GLOBAL needs two strings"));
                    };
                    let (module, name) = (module.clone(), name.clone());
                    let g = self.resolve(&module, &name)?;
                    self.push_obj(Obj::Global(g))?;
                }
                // REDUCE
                b'R' => {
                    let args = self.pop()?;
                    let callable = self.pop()?;
                    let v = self.reduce(callable, args)?;
                    self.push(v)?;
                }
                // BUILD: only on dicts (OrderedDict attributes such as `_metadata`) and
                // tensors (Python attributes); the state is ignored.
                b'b' => {
                    let _state = self.pop()?;
                    let target = self.top()?;
                    match target {
                        Value::Obj(id)
                            if matches!(self.objs[id], Obj::Dict(_) | Obj::Tensor(_)) => {}
                        other => {
                            return Err(self.err(format!("BUILD on a {}", self.describe(other))));
                        }
                    }
                }
                // BINPERSID
                b'Q' => {
                    let pid = self.pop()?;
                    let storage = self.persistent_load(pid)?;
                    self.push_obj(Obj::Storage(storage))?;
                }
                other => {
                    let name = opcode_name(other);
                    return Err(self.err(format!(
                        "unsupported opcode 0x{other:02x}{}",
                        name.map(|n| format!(" ({n})")).unwrap_or_default()
                    )));
                }
            }
        }
    }

    pub(crate) fn dict_from(&self, items: &[Value]) -> Result<Dict> {
        if !items.len().is_multiple_of(2) {
            return Err(self.err("odd number of items for a dict"));
        }
        let mut dict = Dict::default();
        for pair in items.chunks_exact(2) {
            dict.set(pair[0], pair[1]);
        }
        Ok(dict)
    }

    pub(crate) fn extend_list(&mut self, items: &[Value]) -> Result<()> {
        let target = self.top()?;
        match target {
            Value::Obj(id) => match &mut self.objs[id] {
                Obj::List(list) => {
                    list.extend_from_slice(items);
                    Ok(())
                }
                other => {
                    let kind = other.kind();
                    Err(self.err(format!("APPEND to a {kind}")))
                }
            },
            other => Err(self.err(format!("APPEND to a {}", self.describe(other)))),
        }
    }

    pub(crate) fn set_items(&mut self, items: &[Value]) -> Result<()> {
        if !items.len().is_multiple_of(2) {
            return Err(self.err("odd number of items for SETITEMS"));
        }
        let target = self.top()?;
        match target {
            Value::Obj(id) => match &mut self.objs[id] {
                Obj::Dict(dict) => {
                    for pair in items.chunks_exact(2) {
                        dict.set(pair[0], pair[1]);
                    }
                    Ok(())
                }
                other => {
                    let kind = other.kind();
                    Err(self.err(format!("SETITEM on a {kind}")))
                }
            },
            other => Err(self.err(format!("SETITEM on a {}", self.describe(other)))),
        }
    }
}
