//! A safe reader for PyTorch `torch.save` files (the zip format of PyTorch ≥ 1.6).
//!
//! A `.pt`/`.pth`/`.ckpt` file is a zip archive `<archive>/data.pkl` + `<archive>/data/<key>`
//! (+ `byteorder`, `version`, …). `data.pkl` is a Python pickle whose tensors point at the
//! `data/<key>` records through persistent ids. Pickles can run arbitrary code when loaded by
//! Python; this module instead *interprets* the pickle opcodes with a tiny stack machine that
//! knows a handful of allow-listed globals and never calls anything:
//!
//! * `collections.OrderedDict` (called with no arguments or a list of pairs) → a dict;
//! * `torch._utils._rebuild_tensor_v2` / `_rebuild_tensor` → a strided view of a storage;
//! * `torch._utils._rebuild_parameter` / `_rebuild_parameter_with_state` → the wrapped tensor;
//! * `torch.{Float,Half,BFloat16,Double,Long,Int,Short,Char,Byte,Bool}Storage` → the dtype of
//!   a persistent storage id `('storage', <type>, key, location, numel)`.
//!
//! Any other global (for example `os.system` or `builtins.eval`) is refused the moment the
//! pickle names it, with [`Error::PickleGlobal`] naming `module.name`.
//!
//! Supported opcodes (protocols 2–5): `PROTO FRAME STOP MARK POP POP_MARK DUP EMPTY_DICT DICT
//! EMPTY_LIST LIST EMPTY_TUPLE TUPLE TUPLE1 TUPLE2 TUPLE3 EMPTY_SET FROZENSET ADDITEMS APPEND
//! APPENDS SETITEM SETITEMS BININT BININT1 BININT2 LONG1 LONG4 BINFLOAT NEWTRUE NEWFALSE NONE
//! BINUNICODE SHORT_BINUNICODE BINUNICODE8 BINSTRING SHORT_BINSTRING BINBYTES SHORT_BINBYTES
//! BINBYTES8 BYTEARRAY8 BINPUT LONG_BINPUT MEMOIZE BINGET LONG_BINGET GLOBAL STACK_GLOBAL
//! REDUCE BUILD BINPERSID`. Text-mode (protocol 0/1) opcodes, `NEWOBJ`, `NEWOBJ_EX`, `INST`,
//! `OBJ`, the extension registry and out-of-band buffers are rejected with [`Error::Pickle`].
//! Integers wider than 64 bits are rejected too.
//!
//! **Keys.** The unpickled object (or the sub-object selected by a path, see
//! [`TensorStore::from_torch_bytes_at`]) must be a dict. Nested dicts, lists and tuples are
//! flattened with dotted keys: `{'a': {'b': t}}` gives `a.b`, `{'l': [t0, t1]}` gives `l.0` and
//! `l.1`; int dict keys are written in decimal. Only tensors become entries: numbers, strings,
//! `None` and other leaves (`epoch`, `_metadata`, optimizer hyper-parameters) are skipped.
//!
//! **Tensors.** Contiguous views of a little-endian file are referenced in place (no copy); any
//! other view (transposed, sliced, expanded, big-endian file) is materialised into its own
//! contiguous little-endian buffer, bounds-checked against its storage. Float tensors read as
//! f32 through [`TensorStore::read_f32`]; integer and bool tensors keep their dtype
//! (see [`TensorStore::read_raw`]).
//!
//! **Hostile input.** Every read is bounds-checked and every size×stride product is checked for
//! overflow. The stack, mark stack, memo and object count have fixed caps; tensor copies are
//! limited to `2 × file size + 64 MiB` and flattening work to `16 × pickle size + 1 Mi` steps
//! (shared sub-objects cannot blow up), nesting to 64 levels (cycles cannot recurse forever).

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::rc::Rc;

use safetensors::Dtype;

use super::TensorStore;
use super::zip::ZipArchive;
use crate::error::{Error, Result};

/// Most values on the pickle stack at once.
const MAX_STACK: usize = 1 << 20;
/// Most open MARKs at once.
const MAX_MARKS: usize = 1 << 16;
/// Most memo entries.
const MAX_MEMO: usize = 1 << 20;
/// Most objects (strings, containers, tensors, …) one pickle may create.
const MAX_OBJECTS: usize = 1 << 22;
/// Deepest nesting of dicts/lists that is flattened into keys.
const MAX_NESTING: usize = 64;
/// Most dimensions of a tensor.
const MAX_DIMS: usize = 64;
/// Longest global name echoed back in an error message.
const MAX_NAME_ECHO: usize = 200;

impl TensorStore {
    /// Reads a PyTorch `torch.save` file (zip format) held in memory, without executing any
    /// of its pickle. The top-level object must be a dict; nested dicts (and lists) are
    /// flattened into dotted keys and non-tensor leaves are skipped (see the module docs).
    /// `name` is used in error messages.
    pub fn from_torch_bytes(name: impl Into<String>, bytes: Vec<u8>) -> Result<Self> {
        Self::from_torch_bytes_at(name, bytes, &[])
    }

    /// Like [`TensorStore::from_torch_bytes`], but first descends into the dict at `path`
    /// (e.g. `&["netG_state_dict"]`), whose tensors then get keys relative to it
    /// (`main.0.weight`, not `netG_state_dict.main.0.weight`). Tensors outside the selected
    /// object are never read. A missing path component is [`Error::MissingKey`] with the
    /// dotted path so far; a component may also name an int key by its decimal form.
    pub fn from_torch_bytes_at(
        name: impl Into<String>,
        bytes: Vec<u8>,
        path: &[&str],
    ) -> Result<Self> {
        let name = name.into();
        let (placements, keys) = {
            let archive = TorchArchive::open(&name, &bytes)?;
            let mut vm = Vm::new(&name, archive.pickle);
            let root = vm.run()?;
            let selected = vm.select(root, path)?;
            let tensors = Flattener::new(&vm).flatten(selected)?;
            archive.place_all(&vm, tensors)?
        };

        let mut store = TensorStore::empty(name);
        let input = if placements.iter().any(|p| matches!(p, Placement::Input(_))) {
            Some(store.push_buffer(bytes))
        } else {
            drop(bytes);
            None
        };
        let mut buffers = Vec::with_capacity(placements.len());
        for placement in placements {
            buffers.push(match placement {
                Placement::Input(range) => (input.expect("input buffer kept"), range),
                Placement::Owned(data) => {
                    let len = data.len();
                    (store.push_buffer(data), 0..len)
                }
            });
        }
        for (key, (placement, dtype, shape)) in keys {
            let (buffer, range) = buffers[placement].clone();
            store.insert_range(key, dtype, shape, buffer, range)?;
        }
        Ok(store)
    }
}

// ---------------------------------------------------------------------------------------------
// The archive.

/// Where a tensor's contiguous bytes live.
enum Placement {
    /// A range of the input file (contiguous little-endian view).
    Input(Range<usize>),
    /// A copy made for a strided view or a big-endian file.
    Owned(Vec<u8>),
}

/// key → (index into the placements, dtype, shape).
type KeyTable = BTreeMap<String, (usize, Dtype, Vec<usize>)>;

struct TorchArchive<'a> {
    file: &'a str,
    bytes: &'a [u8],
    zip: ZipArchive<'a>,
    /// `<archive>/` — the prefix of every record.
    prefix: Vec<u8>,
    pickle: &'a [u8],
    big_endian: bool,
}

impl<'a> TorchArchive<'a> {
    fn open(file: &'a str, bytes: &'a [u8]) -> Result<Self> {
        let bad = |message: String| Error::TorchArchive {
            file: file.to_string(),
            message,
        };
        if bytes.first() == Some(&0x80) {
            return Err(bad(
                "this is the legacy (pre-1.6, non-zip) torch.save format, which is not \
                 supported; re-save it with a current PyTorch"
                    .into(),
            ));
        }
        let zip = ZipArchive::parse(bytes).map_err(bad)?;
        // Like torch: the archive name is the first record's top-level folder.
        let first = zip
            .entries()
            .first()
            .ok_or_else(|| bad("the zip archive is empty".into()))?;
        let slash = first
            .name
            .iter()
            .position(|&b| b == b'/')
            .ok_or_else(|| bad("records are not inside an archive folder".into()))?;
        let prefix = first.name[..=slash].to_vec();
        let record = |suffix: &str| [prefix.as_slice(), suffix.as_bytes()].concat();

        let pkl = zip.find(&record("data.pkl")).ok_or_else(|| {
            bad(format!(
                "no `{}data.pkl` record (not a torch.save file?)",
                String::from_utf8_lossy(&prefix)
            ))
        })?;
        let pickle = &bytes[zip.data_range(pkl).map_err(bad)?];
        let big_endian = match zip.find(&record("byteorder")) {
            None => false,
            Some(entry) => match &bytes[zip.data_range(entry).map_err(bad)?] {
                b"little" => false,
                b"big" => true,
                other => {
                    return Err(bad(format!(
                        "unknown byteorder `{}`",
                        String::from_utf8_lossy(&other[..other.len().min(32)])
                    )));
                }
            },
        };
        Ok(TorchArchive {
            file,
            bytes,
            zip,
            prefix,
            pickle,
            big_endian,
        })
    }

    fn bad(&self, message: String) -> Error {
        Error::TorchArchive {
            file: self.file.to_string(),
            message,
        }
    }

    /// Places every flattened tensor (shared tensor objects are placed once).
    fn place_all(
        &self,
        vm: &Vm<'_>,
        tensors: Vec<(String, usize)>,
    ) -> Result<(Vec<Placement>, KeyTable)> {
        let budget = self.bytes.len().saturating_mul(2).saturating_add(64 << 20);
        let mut copied = 0usize;
        let mut records: HashMap<Rc<str>, Range<usize>> = HashMap::new();
        let mut placed: HashMap<usize, usize> = HashMap::new();
        let mut placements = Vec::new();
        let mut keys = KeyTable::new();
        for (key, id) in tensors {
            let Obj::Tensor(view) = &vm.objs[id] else {
                unreachable!("the flattener only yields tensors")
            };
            let Obj::Storage(storage) = &vm.objs[view.storage] else {
                unreachable!("tensors are only built on storages")
            };
            let index = match placed.get(&id) {
                Some(&i) => i,
                None => {
                    let record = match records.get(&storage.key) {
                        Some(r) => r.clone(),
                        None => {
                            let r = self.record(&storage.key)?;
                            records.insert(storage.key.clone(), r.clone());
                            r
                        }
                    };
                    let p = self.place(&key, view, storage, record, &mut copied, budget)?;
                    placements.push(p);
                    placed.insert(id, placements.len() - 1);
                    placements.len() - 1
                }
            };
            if keys.contains_key(&key) {
                return Err(Error::Pickle {
                    file: self.file.to_string(),
                    message: format!("two tensors flatten to the same key `{}`", clip(&key)),
                });
            }
            keys.insert(key, (index, storage.dtype, view.size.clone()));
        }
        Ok((placements, keys))
    }

    /// The checked byte range of storage record `data/<key>`.
    fn record(&self, key: &str) -> Result<Range<usize>> {
        let name = [self.prefix.as_slice(), b"data/", key.as_bytes()].concat();
        let entry = self.zip.find(&name).ok_or_else(|| {
            self.bad(format!(
                "storage record `{}` is missing",
                String::from_utf8_lossy(&name)
            ))
        })?;
        self.zip.data_range(entry).map_err(|m| self.bad(m))
    }

    /// Places one tensor view of `storage` (whose record is `record`).
    fn place(
        &self,
        key: &str,
        view: &TensorView,
        storage: &Storage,
        record: Range<usize>,
        copied: &mut usize,
        budget: usize,
    ) -> Result<Placement> {
        let bad = |message: String| Error::Pickle {
            file: self.file.to_string(),
            message: format!("tensor `{}`: {message}", clip(key)),
        };
        let es = element_size(storage.dtype);
        let storage_bytes = storage
            .numel
            .checked_mul(es)
            .filter(|&n| n <= record.len())
            .ok_or_else(|| {
                bad(format!(
                    "storage `{}` claims {} elements of {:?} but its record holds {} bytes",
                    storage.key,
                    storage.numel,
                    storage.dtype,
                    record.len()
                ))
            })?;
        let numel = view
            .size
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d))
            .ok_or_else(|| bad(format!("size {:?} overflows", view.size)))?;
        let out_len = numel
            .checked_mul(es)
            .ok_or_else(|| bad(format!("size {:?} overflows", view.size)))?;
        if numel == 0 {
            if view.offset > storage.numel {
                return Err(bad(format!(
                    "storage offset {} beyond storage of {} elements",
                    view.offset, storage.numel
                )));
            }
            return Ok(Placement::Owned(Vec::new()));
        }
        // Highest element index the view touches.
        let mut last = view.offset;
        for (&d, &s) in view.size.iter().zip(&view.stride) {
            last = (d - 1)
                .checked_mul(s)
                .and_then(|x| x.checked_add(last))
                .ok_or_else(|| bad("size × stride overflows".into()))?;
        }
        if last >= storage.numel {
            return Err(bad(format!(
                "view (offset {}, size {:?}, stride {:?}) reaches element {last} of a storage \
                 of {} elements",
                view.offset, view.size, view.stride, storage.numel
            )));
        }
        let data = &self.bytes[record.start..record.start + storage_bytes];

        let mut expected = 1usize;
        let mut contiguous = true;
        for (&d, &s) in view.size.iter().zip(&view.stride).rev() {
            if d != 1 && s != expected {
                contiguous = false;
            }
            expected = expected.saturating_mul(d);
        }
        if contiguous && !self.big_endian {
            // In bounds: offset + numel - 1 == last < storage.numel.
            let start = record.start + view.offset * es;
            return Ok(Placement::Input(start..start + out_len));
        }

        *copied = copied.saturating_add(out_len);
        if *copied > budget {
            return Err(bad(format!(
                "materialising strided tensors needs more than {budget} bytes"
            )));
        }
        let mut out = Vec::with_capacity(out_len);
        let dims = view.size.len();
        if dims == 0 {
            out.extend_from_slice(&data[view.offset * es..(view.offset + 1) * es]);
        } else {
            let (inner_size, inner_stride) = (view.size[dims - 1], view.stride[dims - 1]);
            let mut index = vec![0usize; dims - 1];
            loop {
                // All offsets are ≤ `last`, so none of this overflows.
                let base = view.offset
                    + index
                        .iter()
                        .zip(&view.stride)
                        .map(|(&i, &s)| i * s)
                        .sum::<usize>();
                if inner_stride == 1 {
                    out.extend_from_slice(&data[base * es..(base + inner_size) * es]);
                } else {
                    for j in 0..inner_size {
                        let at = (base + j * inner_stride) * es;
                        out.extend_from_slice(&data[at..at + es]);
                    }
                }
                // Odometer over the outer dimensions.
                let mut d = dims - 1;
                loop {
                    if d == 0 {
                        debug_assert_eq!(out.len(), out_len);
                        if self.big_endian && es > 1 {
                            out.chunks_exact_mut(es).for_each(<[u8]>::reverse);
                        }
                        return Ok(Placement::Owned(out));
                    }
                    d -= 1;
                    index[d] += 1;
                    if index[d] < view.size[d] {
                        break;
                    }
                    index[d] = 0;
                }
            }
        }
        if self.big_endian && es > 1 {
            out.chunks_exact_mut(es).for_each(<[u8]>::reverse);
        }
        Ok(Placement::Owned(out))
    }
}

/// At most [`MAX_NAME_ECHO`] bytes of `s`, for error messages about hostile names.
fn clip(s: &str) -> &str {
    &s[..s.floor_char_boundary(MAX_NAME_ECHO)]
}

fn element_size(dtype: Dtype) -> usize {
    dtype.bitsize() / 8
}

// ---------------------------------------------------------------------------------------------
// The pickle machine.

/// A pickle value: scalars inline, everything else an index into [`Vm::objs`].
#[derive(Debug, Clone, Copy)]
enum Value {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Obj(usize),
}

/// An allow-listed global.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Global {
    OrderedDict,
    RebuildTensorV2,
    RebuildTensor,
    RebuildParameter,
    RebuildParameterWithState,
    Storage(Dtype),
}

/// A storage named by a persistent id.
#[derive(Debug)]
struct Storage {
    key: Rc<str>,
    dtype: Dtype,
    numel: usize,
}

/// `_rebuild_tensor_v2(storage, offset, size, stride, …)`.
#[derive(Debug)]
struct TensorView {
    /// Object index of the [`Storage`].
    storage: usize,
    offset: usize,
    size: Vec<usize>,
    stride: Vec<usize>,
}

/// Dict keys by identity; strings are interned, so identity is equality for them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum KeyId {
    None,
    Int(i64),
    Float(u64),
    Obj(usize),
}

#[derive(Debug, Default)]
struct Dict {
    items: Vec<(Value, Value)>,
    index: HashMap<KeyId, usize>,
}

impl Dict {
    fn set(&mut self, key: Value, value: Value) {
        match self.index.get(&key_id(key)) {
            Some(&i) => self.items[i].1 = value,
            None => {
                self.index.insert(key_id(key), self.items.len());
                self.items.push((key, value));
            }
        }
    }
}

fn key_id(v: Value) -> KeyId {
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
enum Obj {
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
    fn kind(&self) -> &'static str {
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

struct Vm<'a> {
    file: &'a str,
    code: &'a [u8],
    pos: usize,
    /// Offset of the opcode being executed (for error messages).
    op_at: usize,
    stack: Vec<Value>,
    marks: Vec<usize>,
    memo: HashMap<u32, Value>,
    objs: Vec<Obj>,
    interned: HashMap<Rc<str>, usize>,
    /// Container items copied by `OrderedDict(list)` calls (bounded by the pickle size).
    copied: usize,
}

impl<'a> Vm<'a> {
    fn new(file: &'a str, code: &'a [u8]) -> Self {
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

    fn err(&self, message: impl std::fmt::Display) -> Error {
        Error::Pickle {
            file: self.file.to_string(),
            message: format!("at pickle byte {}: {message}", self.op_at),
        }
    }

    // -- input --

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.code.len())
            .ok_or_else(|| self.err(format!("truncated: needs {n} more bytes")))?;
        let out = &self.code[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    fn byte(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Result<u64> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    fn len64(&mut self) -> Result<usize> {
        let n = self.u64()?;
        usize::try_from(n).map_err(|_| self.err(format!("length {n} too large")))
    }

    fn line(&mut self) -> Result<&'a str> {
        let rest = &self.code[self.pos..];
        let n = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or_else(|| self.err("unterminated GLOBAL name"))?;
        let s =
            std::str::from_utf8(&rest[..n]).map_err(|_| self.err("GLOBAL name is not UTF-8"))?;
        self.pos += n + 1;
        Ok(s)
    }

    /// Little-endian two's-complement integer of `n` bytes (LONG1/LONG4).
    fn long(&mut self, n: usize) -> Result<i64> {
        let b = self.take(n)?;
        if n > 8 {
            return Err(self.err(format!("{n}-byte integer does not fit in 64 bits")));
        }
        if n == 0 {
            return Ok(0);
        }
        let fill = if b[n - 1] & 0x80 != 0 { 0xff } else { 0 };
        let mut a = [fill; 8];
        a[..n].copy_from_slice(b);
        Ok(i64::from_le_bytes(a))
    }

    // -- stack --

    fn new_obj(&mut self, obj: Obj) -> Result<Value> {
        if self.objs.len() >= MAX_OBJECTS {
            return Err(self.err(format!("more than {MAX_OBJECTS} objects")));
        }
        self.objs.push(obj);
        Ok(Value::Obj(self.objs.len() - 1))
    }

    fn intern(&mut self, bytes: &[u8]) -> Result<Value> {
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

    fn push(&mut self, v: Value) -> Result<()> {
        if self.stack.len() >= MAX_STACK {
            return Err(self.err(format!("stack deeper than {MAX_STACK}")));
        }
        self.stack.push(v);
        Ok(())
    }

    fn push_obj(&mut self, obj: Obj) -> Result<()> {
        let v = self.new_obj(obj)?;
        self.push(v)
    }

    /// The stack floor: values below the innermost MARK are out of reach.
    fn floor(&self) -> usize {
        self.marks.last().copied().unwrap_or(0)
    }

    fn pop(&mut self) -> Result<Value> {
        if self.stack.len() <= self.floor() {
            return Err(self.err("stack underflow"));
        }
        Ok(self.stack.pop().expect("above the floor"))
    }

    fn top(&self) -> Result<Value> {
        if self.stack.len() <= self.floor() {
            return Err(self.err("stack underflow"));
        }
        Ok(*self.stack.last().expect("above the floor"))
    }

    fn pop_mark(&mut self) -> Result<Vec<Value>> {
        let mark = self.marks.pop().ok_or_else(|| self.err("no MARK to pop"))?;
        Ok(self.stack.split_off(mark))
    }

    fn str_of(&self, v: Value) -> Option<&Rc<str>> {
        match v {
            Value::Obj(id) => match &self.objs[id] {
                Obj::Str(s) => Some(s),
                _ => None,
            },
            _ => None,
        }
    }

    fn describe(&self, v: Value) -> &'static str {
        match v {
            Value::None => "None",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Float(_) => "float",
            Value::Obj(id) => self.objs[id].kind(),
        }
    }

    fn memo_put(&mut self, index: u32) -> Result<()> {
        let v = self.top()?;
        if self.memo.len() >= MAX_MEMO && !self.memo.contains_key(&index) {
            return Err(self.err(format!("more than {MAX_MEMO} memo entries")));
        }
        self.memo.insert(index, v);
        Ok(())
    }

    fn memo_get(&mut self, index: u32) -> Result<()> {
        let v = *self
            .memo
            .get(&index)
            .ok_or_else(|| self.err(format!("memo entry {index} is not defined")))?;
        self.push(v)
    }

    // -- execution --

    fn run(&mut self) -> Result<Value> {
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

    fn dict_from(&self, items: &[Value]) -> Result<Dict> {
        if !items.len().is_multiple_of(2) {
            return Err(self.err("odd number of items for a dict"));
        }
        let mut dict = Dict::default();
        for pair in items.chunks_exact(2) {
            dict.set(pair[0], pair[1]);
        }
        Ok(dict)
    }

    fn extend_list(&mut self, items: &[Value]) -> Result<()> {
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

    fn set_items(&mut self, items: &[Value]) -> Result<()> {
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

    /// Maps `module.name` to an allow-listed global, or refuses it.
    fn resolve(&self, module: &str, name: &str) -> Result<Global> {
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

    fn reduce(&mut self, callable: Value, args: Value) -> Result<Value> {
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

    fn non_negative(&self, v: Value, what: &str) -> Result<usize> {
        match v {
            Value::Int(i) => usize::try_from(i)
                .map_err(|_| self.err(format!("{what} is negative or too large ({i})"))),
            Value::Bool(b) => Ok(usize::from(b)),
            other => Err(self.err(format!("{what} is a {}, not an int", self.describe(other)))),
        }
    }

    fn int_tuple(&self, v: Value, what: &str) -> Result<Vec<usize>> {
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

    fn tensor_view(&self, args: &[Value]) -> Result<TensorView> {
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
    fn persistent_load(&self, pid: Value) -> Result<Storage> {
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
    fn select(&self, root: Value, path: &[&str]) -> Result<Value> {
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

    fn err_at_end(&self, message: String) -> Error {
        Error::Pickle {
            file: self.file.to_string(),
            message,
        }
    }
}

fn display_path(walked: &str) -> &str {
    if walked.is_empty() {
        "<top level>"
    } else {
        walked
    }
}

/// Names of opcodes we do not execute, for error messages.
fn opcode_name(op: u8) -> Option<&'static str> {
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

// ---------------------------------------------------------------------------------------------
// Flattening.

/// Walks the selected object and lists `(dotted key, tensor object)` pairs, within a work
/// budget so that shared sub-objects cannot make the walk exponential.
struct Flattener<'v, 'a> {
    vm: &'v Vm<'a>,
    work: usize,
    budget: usize,
    out: Vec<(String, usize)>,
}

impl<'v, 'a> Flattener<'v, 'a> {
    fn new(vm: &'v Vm<'a>) -> Self {
        Flattener {
            vm,
            work: 0,
            budget: vm.code.len().saturating_mul(16).saturating_add(1 << 20),
            out: Vec::new(),
        }
    }

    fn flatten(mut self, root: Value) -> Result<Vec<(String, usize)>> {
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

    fn charge(&mut self, units: usize) -> Result<()> {
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
    fn holds_tensors(&self, v: Value) -> bool {
        matches!(v, Value::Obj(id) if matches!(
            self.vm.objs[id],
            Obj::Tensor(_) | Obj::Dict(_) | Obj::List(_) | Obj::Tuple(_)
        ))
    }

    fn walk(&mut self, v: Value, prefix: &mut String, depth: usize) -> Result<()> {
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

    fn enter(&self, depth: usize, prefix: &str) -> Result<()> {
        if depth >= MAX_NESTING {
            return Err(self.vm.err_at_end(format!(
                "`{}…` nests deeper than {MAX_NESTING} levels",
                clip(prefix)
            )));
        }
        Ok(())
    }

    fn child(
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

    fn bad_key(&self, prefix: &str, kind: &str) -> Error {
        self.vm.err_at_end(format!(
            "a dict under `{}` holding tensors has a {kind} key; only str and int keys are \
             supported",
            display_path(prefix)
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::super::zip::tests::build_zip;
    use super::*;

    /// A pickle writer for hand-made test files.
    #[derive(Default)]
    struct P(Vec<u8>);

    impl P {
        fn op(mut self, bytes: &[u8]) -> Self {
            self.0.extend_from_slice(bytes);
            self
        }
        fn s(mut self, s: &str) -> Self {
            self.0.push(b'X');
            self.0.extend_from_slice(&(s.len() as u32).to_le_bytes());
            self.0.extend_from_slice(s.as_bytes());
            self
        }
        fn int(self, i: u8) -> Self {
            self.op(&[b'K', i])
        }
        fn global(self, module: &str, name: &str) -> Self {
            self.op(format!("c{module}\n{name}\n").as_bytes())
        }
        /// `_rebuild_tensor_v2(('storage', FloatStorage, key, 'cpu', numel), offset, size, stride, False, OrderedDict())`
        fn tensor(self, key: &str, numel: u8, offset: u8, size: &[u8], stride: &[u8]) -> Self {
            let mut p = self
                .global("torch._utils", "_rebuild_tensor_v2")
                .op(b"((")
                .s("storage")
                .global("torch", "FloatStorage")
                .s(key)
                .s("cpu")
                .int(numel)
                .op(b"tQ")
                .int(offset)
                .op(b"(");
            for &d in size {
                p = p.int(d);
            }
            p = p.op(b"t(");
            for &d in stride {
                p = p.int(d);
            }
            p.op(b"t\x89")
                .global("collections", "OrderedDict")
                .op(b")RtR")
        }
    }

    fn archive(pickle: &[u8], storages: &[(&str, Vec<u8>)]) -> Vec<u8> {
        let mut files: Vec<(String, Vec<u8>)> = vec![
            ("t/data.pkl".into(), pickle.to_vec()),
            ("t/byteorder".into(), b"little".to_vec()),
        ];
        for (k, v) in storages {
            files.push((format!("t/data/{k}"), v.clone()));
        }
        let refs: Vec<(&str, &[u8])> = files
            .iter()
            .map(|(n, d)| (n.as_str(), d.as_slice()))
            .collect();
        build_zip(&refs, false)
    }

    fn f32_bytes(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    #[test]
    fn strided_views_and_zero_copy() {
        // {'a': 2x3 contiguous, 't': its transpose, 's': storage[4:6], 'e': expand(2,2)}
        let pickle = P::default()
            .op(b"\x80\x02}(")
            .s("a")
            .tensor("0", 6, 0, &[2, 3], &[3, 1])
            .s("t")
            .tensor("0", 6, 0, &[3, 2], &[1, 3])
            .s("s")
            .tensor("0", 6, 4, &[2], &[1])
            .s("e")
            .tensor("0", 6, 1, &[2, 2], &[0, 1])
            .op(b"u.");
        let data = f32_bytes(&[0., 1., 2., 3., 4., 5.]);
        let store =
            TensorStore::from_torch_bytes("t.pt", archive(&pickle.0, &[("0", data)])).unwrap();
        assert_eq!(
            store.read_f32("a", &[2, 3]).unwrap(),
            [0., 1., 2., 3., 4., 5.]
        );
        assert_eq!(
            store.read_f32("t", &[3, 2]).unwrap(),
            [0., 3., 1., 4., 2., 5.]
        );
        assert_eq!(store.read_f32("s", &[2]).unwrap(), [4., 5.]);
        assert_eq!(store.read_f32("e", &[2, 2]).unwrap(), [1., 2., 1., 2.]);
        store.finish().unwrap();
    }

    #[test]
    fn view_beyond_storage_is_an_error() {
        let pickle = P::default()
            .op(b"\x80\x02}")
            .s("a")
            .tensor("0", 6, 1, &[2, 3], &[3, 1])
            .op(b"s.");
        let err = TensorStore::from_torch_bytes(
            "t.pt",
            archive(&pickle.0, &[("0", f32_bytes(&[0.; 6]))]),
        )
        .unwrap_err();
        assert!(
            matches!(&err, Error::Pickle { message, .. } if message.contains("reaches element 6")),
            "{err}"
        );
        // numel larger than the record.
        let pickle = P::default()
            .op(b"\x80\x02}")
            .s("a")
            .tensor("0", 7, 0, &[7], &[1])
            .op(b"s.");
        let err = TensorStore::from_torch_bytes(
            "t.pt",
            archive(&pickle.0, &[("0", f32_bytes(&[0.; 6]))]),
        )
        .unwrap_err();
        assert!(matches!(err, Error::Pickle { .. }), "{err}");
    }

    #[test]
    fn forbidden_globals_are_named() {
        for (module, name) in [("os", "system"), ("builtins", "eval"), ("torch", "load")] {
            let pickle = P::default()
                .op(b"\x80\x02")
                .global(module, name)
                .s("echo pwned")
                .op(b"\x85R.");
            let err =
                TensorStore::from_torch_bytes("evil.pt", archive(&pickle.0, &[])).unwrap_err();
            match err {
                Error::PickleGlobal { file, global } => {
                    assert_eq!(file, "evil.pt");
                    assert_eq!(global, format!("{module}.{name}"));
                }
                other => panic!("{other}"),
            }
        }
        // STACK_GLOBAL too (protocol 4).
        let pickle = P::default()
            .op(b"\x80\x04")
            .op(b"\x8c\x05posix\x8c\x06system\x93")
            .op(b".");
        let err = TensorStore::from_torch_bytes("evil.pt", archive(&pickle.0, &[])).unwrap_err();
        assert!(matches!(&err, Error::PickleGlobal { global, .. } if global == "posix.system"));
    }

    #[test]
    fn nested_and_int_keys_and_path() {
        // {'outer': {'inner': t, 3: t, 'n': None}, 'l': [t, 1.5], 'epoch': 3}
        let pickle = P::default()
            .op(b"\x80\x02}(")
            .s("outer")
            .op(b"}(")
            .s("inner")
            .tensor("0", 2, 0, &[2], &[1])
            .op(b"q\x01")
            .int(3)
            .op(b"h\x01")
            .s("n")
            .op(b"Nu")
            .s("l")
            .op(b"](h\x01G\x3f\xf8\0\0\0\0\0\0e")
            .s("epoch")
            .int(3)
            .op(b"u.");
        let bytes = archive(&pickle.0, &[("0", f32_bytes(&[7., 8.]))]);
        let store = TensorStore::from_torch_bytes("n.pt", bytes.clone()).unwrap();
        let keys: Vec<&str> = store.keys().collect();
        assert_eq!(keys, ["l.0", "outer.3", "outer.inner"]);
        assert_eq!(store.read_f32("outer.3", &[2]).unwrap(), [7., 8.]);
        let sub = TensorStore::from_torch_bytes_at("n.pt", bytes.clone(), &["outer"]).unwrap();
        assert_eq!(sub.keys().collect::<Vec<_>>(), ["3", "inner"]);
        let err =
            TensorStore::from_torch_bytes_at("n.pt", bytes.clone(), &["outer", "x"]).unwrap_err();
        assert!(
            matches!(&err, Error::MissingKey { key, .. } if key == "outer.x"),
            "{err}"
        );
        let err = TensorStore::from_torch_bytes_at("n.pt", bytes, &["epoch"]).unwrap_err();
        assert!(matches!(err, Error::Pickle { .. }), "{err}");
    }

    #[test]
    fn hostile_structures_are_bounded() {
        // A list containing itself, flattened: nesting limit, not a stack overflow.
        let pickle = P::default()
            .op(b"\x80\x02}")
            .s("x")
            .op(b"]q\x00h\x00a")
            .op(b"s.");
        let err = TensorStore::from_torch_bytes("c.pt", archive(&pickle.0, &[])).unwrap_err();
        assert!(matches!(err, Error::Pickle { .. }), "{err}");

        // Exponential sharing: x0 = (t, t); x(i+1) = (x(i), x(i)) fifty times.
        let mut p = P::default()
            .op(b"\x80\x02}")
            .s("x")
            .tensor("0", 1, 0, &[], &[])
            .op(b"2\x86");
        for _ in 0..50 {
            p = p.op(b"2\x86");
        }
        let pickle = p.op(b"s.");
        let err =
            TensorStore::from_torch_bytes("x.pt", archive(&pickle.0, &[("0", f32_bytes(&[1.]))]))
                .unwrap_err();
        assert!(
            matches!(&err, Error::Pickle { message, .. } if message.contains("steps")),
            "{err}"
        );
    }

    #[test]
    fn broadcast_bomb_is_refused() {
        // One element expanded to 2^24 × 2^24 with stride (0, 0): refused before allocating.
        let pickle = P::default()
            .op(b"\x80\x02}")
            .s("x")
            .global("torch._utils", "_rebuild_tensor_v2")
            .op(b"((")
            .s("storage")
            .global("torch", "FloatStorage")
            .s("0")
            .s("cpu")
            .int(1)
            .op(b"tQ")
            .int(0)
            .op(b"(J\0\0\0\x01J\0\0\0\x01t(")
            .int(0)
            .int(0)
            .op(b"t\x89NtRs.");
        let err =
            TensorStore::from_torch_bytes("b.pt", archive(&pickle.0, &[("0", f32_bytes(&[1.]))]))
                .unwrap_err();
        assert!(
            matches!(&err, Error::Pickle { message, .. } if message.contains("materialising")),
            "{err}"
        );
    }

    #[test]
    fn repeated_copies_are_bounded() {
        // A 1000-pair list handed to OrderedDict 1000 times: refused, not 10^6 copies.
        let mut p = P::default().op(b"\x80\x02ccollections\nOrderedDict\nq\x00](");
        for _ in 0..1000 {
            p = p.op(b"K\x01K\x02\x86");
        }
        p = p.op(b"eq\x010");
        for _ in 0..1000 {
            p = p.op(b"h\x00h\x01\x85R0");
        }
        let pickle = p.op(b"}.");
        let err = TensorStore::from_torch_bytes("o.pt", archive(&pickle.0, &[])).unwrap_err();
        assert!(
            matches!(&err, Error::Pickle { message, .. } if message.contains("copies")),
            "{err}"
        );
        // REDUCE with a huge argument tuple is refused before copying it.
        let mut p = P::default().op(b"\x80\x02ccollections\nOrderedDict\n(");
        for _ in 0..100 {
            p = p.op(b"N");
        }
        let pickle = p.op(b"tR.");
        let err = TensorStore::from_torch_bytes("o.pt", archive(&pickle.0, &[])).unwrap_err();
        assert!(
            matches!(&err, Error::Pickle { message, .. } if message.contains("100 arguments")),
            "{err}"
        );
    }

    #[test]
    fn truncation_never_panics() {
        let pickle = P::default()
            .op(b"\x80\x02}(")
            .s("a")
            .tensor("0", 6, 0, &[2, 3], &[3, 1])
            .op(b"u.");
        let bytes = archive(&pickle.0, &[("0", f32_bytes(&[0.; 6]))]);
        for cut in 0..pickle.0.len() {
            let p = &pickle.0[..cut];
            let _ =
                TensorStore::from_torch_bytes("t.pt", archive(p, &[("0", f32_bytes(&[0.; 6]))]));
        }
        for cut in 0..bytes.len() {
            let _ = TensorStore::from_torch_bytes("t.pt", bytes[..cut].to_vec());
        }
    }
}
