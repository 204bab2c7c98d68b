//! Weight files: safetensors parsing from bytes, f16/bf16 → f32 conversion, and strict
//! key accounting (every key consumed exactly as the config implies, none left over).
//!
//! Models load through a [`Weights`] cursor, in the style of a "var builder": a module asks
//! for `prefix.name` with the shape its config implies, and the [`TensorStore`] records which
//! keys were used. [`TensorStore::finish`] then turns any unused key into an error.

pub mod keys;
pub mod ldm;
pub mod lora;
mod torch;
mod zip;

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;

use burn::tensor::{Device, Tensor, TensorData};
use safetensors::{Dtype, SafeTensors};

use crate::error::{Error, Result};

/// Where a tensor's bytes live inside the store.
#[derive(Debug, Clone)]
struct Entry {
    dtype: Dtype,
    shape: Vec<usize>,
    buffer: usize,
    start: usize,
    end: usize,
}

/// Random access to a file's bytes without holding the whole file (a browser `Blob`, a file on
/// disk): a store over it reads each tensor when a model asks for it, so memory holds one
/// tensor at a time, whatever the model's size.
pub trait ByteRanges {
    /// The file's length in bytes.
    fn size(&self) -> u64;
    /// Bytes `range` of the file (`range.end ≤ size()`).
    fn read(&self, range: Range<u64>) -> Result<Vec<u8>>;
}

/// Where the bytes of a store's tensors are: in memory, or in a file read on demand.
enum Backing {
    Bytes(Vec<u8>),
    /// A safetensors file: its header (kept for [`TensorStore::stamp`]) and the file.
    Ranges {
        header: Vec<u8>,
        file: Box<dyn ByteRanges>,
    },
}

impl Backing {
    fn len(&self) -> usize {
        match self {
            Backing::Bytes(b) => b.len(),
            Backing::Ranges { file, .. } => usize::try_from(file.size()).unwrap_or(usize::MAX),
        }
    }
}

impl std::fmt::Debug for Backing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Backing::Bytes(b) => write!(f, "Bytes({} bytes)", b.len()),
            Backing::Ranges { file, .. } => write!(f, "Ranges({} bytes)", file.size()),
        }
    }
}

/// Largest safetensors header read from a ranged file (the format's own limit).
const MAX_HEADER: u64 = 100_000_000;

/// One or more parsed safetensors files, with key usage tracking.
#[derive(Debug)]
pub struct TensorStore {
    name: String,
    buffers: Vec<Backing>,
    entries: BTreeMap<String, Entry>,
    used: RefCell<BTreeSet<String>>,
    synthetic: Option<(Init, RefCell<rand::rngs::StdRng>)>,
    trace: Option<Trace>,
    metadata: BTreeMap<String, String>,
}

/// What a tracing store hands out and remembers (see [`TensorStore::tracing`]).
#[derive(Debug)]
struct Trace {
    base: usize,
    keys: RefCell<Vec<(String, Vec<usize>)>>,
}

impl TensorStore {
    /// Parses one safetensors file held in memory. `name` is used in error messages.
    pub fn from_bytes(name: impl Into<String>, bytes: Vec<u8>) -> Result<Self> {
        let mut store = TensorStore::empty(name);
        store.add_bytes(bytes)?;
        Ok(store)
    }

    /// A store with no tensors; fill it with [`TensorStore::insert`].
    pub fn empty(name: impl Into<String>) -> Self {
        TensorStore {
            name: name.into(),
            buffers: Vec::new(),
            entries: BTreeMap::new(),
            used: RefCell::new(BTreeSet::new()),
            synthetic: None,
            trace: None,
            metadata: BTreeMap::new(),
        }
    }

    /// Adds one tensor from its contiguous, row-major, little-endian bytes. Errors if `key`
    /// exists already or `bytes` does not hold exactly `shape.product()` elements of `dtype`.
    pub fn insert(
        &mut self,
        key: impl Into<String>,
        dtype: Dtype,
        shape: Vec<usize>,
        bytes: Vec<u8>,
    ) -> Result<()> {
        let len = bytes.len();
        let buffer = self.push_buffer(bytes);
        self.insert_range(key.into(), dtype, shape, buffer, 0..len)
    }

    /// Adds a raw buffer that entries can point into (see [`TensorStore::insert_range`]).
    pub(crate) fn push_buffer(&mut self, bytes: Vec<u8>) -> usize {
        self.buffers.push(Backing::Bytes(bytes));
        self.buffers.len() - 1
    }

    /// Adds a tensor whose contiguous little-endian bytes are `range` of buffer `buffer`.
    /// Several entries may share one buffer. Checks the range and the element count.
    pub(crate) fn insert_range(
        &mut self,
        key: String,
        dtype: Dtype,
        shape: Vec<usize>,
        buffer: usize,
        range: std::ops::Range<usize>,
    ) -> Result<()> {
        let invalid = |message: String| Error::SafeTensors {
            file: self.name.clone(),
            message,
        };
        let available = self.buffers.get(buffer).map_or(0, Backing::len);
        if range.start > range.end || range.end > available {
            return Err(invalid(format!(
                "tensor `{key}`: byte range {range:?} outside its buffer ({available} bytes)"
            )));
        }
        if !dtype.bitsize().is_multiple_of(8) {
            return Err(invalid(format!(
                "tensor `{key}`: sub-byte dtype {dtype:?} is not supported"
            )));
        }
        let expected = shape
            .iter()
            .try_fold(dtype.bitsize() / 8, |acc, &d| acc.checked_mul(d));
        if expected != Some(range.len()) {
            return Err(invalid(format!(
                "tensor `{key}`: {} bytes do not hold shape {shape:?} of {dtype:?}",
                range.len()
            )));
        }
        if self.entries.contains_key(&key) {
            return Err(invalid(format!("key `{key}` appears more than once")));
        }
        let entry = Entry {
            dtype,
            shape,
            buffer,
            start: range.start,
            end: range.end,
        };
        self.entries.insert(key, entry);
        Ok(())
    }

    /// A store that invents every requested tensor: norm weights 1, biases 0, other weights
    /// `N(0, 0.02²)` from `seed`. Builds randomly initialised models (benchmarks, training).
    pub fn synthetic(name: impl Into<String>, seed: u64) -> Self {
        use rand::SeedableRng;
        TensorStore {
            name: name.into(),
            buffers: Vec::new(),
            entries: BTreeMap::new(),
            used: RefCell::new(BTreeSet::new()),
            synthetic: Some((
                Init::Small,
                RefCell::new(rand::rngs::StdRng::seed_from_u64(seed)),
            )),
            trace: None,
            metadata: BTreeMap::new(),
        }
    }

    /// Like [`TensorStore::synthetic`] but with PyTorch's default initialisation, the start of
    /// training from scratch: weights `U(±1/√fan_in)` (fan_in = product of all but the first
    /// dimension, as PyTorch stores them), embeddings `N(0, 0.02²)`, biases 0, norm weights 1.
    pub fn initialised(name: impl Into<String>, seed: u64) -> Self {
        let mut store = Self::synthetic(name, seed);
        if let Some((init, _)) = store.synthetic.as_mut() {
            *init = Init::PyTorch;
        }
        store
    }

    /// A store that invents every requested tensor as a marker of the request: the `k`-th key
    /// read gets element 0 = `-(base + k + 1)` and element `j > 0` = `j`. A module loaded from it
    /// shows, in each parameter, which key it came from and how the loader laid it out
    /// (`train::export` maps parameters back to checkpoint keys this way). Exact while
    /// `base + keys` and every tensor's size stay below 2²⁴.
    pub fn tracing(name: impl Into<String>, base: usize) -> Self {
        let mut store = Self::empty(name);
        store.trace = Some(Trace {
            base,
            keys: RefCell::new(Vec::new()),
        });
        store
    }

    /// The keys a tracing store handed out, in order, with their shapes (empty otherwise).
    pub fn traced(&self) -> Vec<(String, Vec<usize>)> {
        self.trace
            .as_ref()
            .map(|t| t.keys.borrow().clone())
            .unwrap_or_default()
    }

    /// Adds another shard to the store. Duplicate keys across shards are an error.
    pub fn add_bytes(&mut self, bytes: Vec<u8>) -> Result<()> {
        let (header_len, metadata) =
            SafeTensors::read_metadata(&bytes).map_err(|e| Error::SafeTensors {
                file: self.name.clone(),
                message: e.to_string(),
            })?;
        self.add_entries(&metadata, 8 + header_len)?;
        self.buffers.push(Backing::Bytes(bytes));
        Ok(())
    }

    /// A store over a safetensors file read through `file`: only the header is read now, each
    /// tensor's bytes when it is consumed. The header is checked as [`TensorStore::from_bytes`]
    /// checks it (offsets contiguous, sizes matching shapes, data ending with the file).
    pub fn from_ranges(name: impl Into<String>, file: Box<dyn ByteRanges>) -> Result<Self> {
        let mut store = TensorStore::empty(name);
        let invalid = |message: String| Error::SafeTensors {
            file: store.name.clone(),
            message,
        };
        let size = file.size();
        if size < 8 {
            return Err(invalid(format!(
                "{size} bytes: too short for a safetensors file"
            )));
        }
        let len = file.read(0..8)?;
        let header_len = u64::from_le_bytes(
            len.try_into()
                .map_err(|_| invalid("the header length could not be read".into()))?,
        );
        if header_len > MAX_HEADER || header_len > size - 8 {
            return Err(invalid(format!(
                "header length {header_len} exceeds the file ({size} bytes) or {MAX_HEADER}"
            )));
        }
        let header = file.read(8..8 + header_len)?;
        let metadata: safetensors::tensor::Metadata =
            serde_json::from_slice(&header).map_err(|e| invalid(format!("header: {e}")))?;
        let end = 8 + header_len + metadata.data_len() as u64;
        if end != size {
            return Err(invalid(format!(
                "the header's tensors end at byte {end}, the file has {size}"
            )));
        }
        store.add_entries(&metadata, 8 + header_len as usize)?;
        store.buffers.push(Backing::Ranges { header, file });
        Ok(store)
    }

    /// Adds the tensors and `__metadata__` of a safetensors header whose data starts at byte
    /// `base` of the buffer about to be pushed. A key already present is an error.
    fn add_entries(&mut self, metadata: &safetensors::tensor::Metadata, base: usize) -> Result<()> {
        let buffer = self.buffers.len();
        for (key, info) in metadata.tensors() {
            let entry = Entry {
                dtype: info.dtype,
                shape: info.shape.clone(),
                buffer,
                start: base + info.data_offsets.0,
                end: base + info.data_offsets.1,
            };
            if self.entries.insert(key.clone(), entry).is_some() {
                return Err(Error::SafeTensors {
                    file: self.name.clone(),
                    message: format!("key `{key}` appears in more than one shard"),
                });
            }
        }
        if let Some(extra) = metadata.metadata() {
            self.metadata
                .extend(extra.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        Ok(())
    }

    /// The bytes of `entry`: borrowed from memory, or read from its file.
    fn entry_bytes(&self, key: &str, entry: &Entry) -> Result<Cow<'_, [u8]>> {
        match &self.buffers[entry.buffer] {
            Backing::Bytes(b) => Ok(Cow::Borrowed(&b[entry.start..entry.end])),
            Backing::Ranges { file, .. } => {
                let bytes = file.read(entry.start as u64..entry.end as u64)?;
                if bytes.len() != entry.end - entry.start {
                    return Err(Error::SafeTensors {
                        file: self.name.clone(),
                        message: format!(
                            "tensor `{key}`: read {} of its {} bytes",
                            bytes.len(),
                            entry.end - entry.start
                        ),
                    });
                }
                Ok(Cow::Owned(bytes))
            }
        }
    }

    /// The safetensors header's `__metadata__` strings (empty for other sources).
    pub fn metadata(&self) -> &BTreeMap<String, String> {
        &self.metadata
    }

    /// Moves every tensor of `other` into this store; a key present in both is an error.
    pub fn extend(&mut self, other: TensorStore) -> Result<()> {
        if let Some(key) = other.entries.keys().find(|k| self.entries.contains_key(*k)) {
            return Err(Error::SafeTensors {
                file: format!("{} + {}", self.name, other.name),
                message: format!("key `{key}` appears in both"),
            });
        }
        let offset = self.buffers.len();
        for (key, mut entry) in other.entries {
            entry.buffer += offset;
            self.entries.insert(key, entry);
        }
        self.buffers.extend(other.buffers);
        self.name = format!("{} + {}", self.name, other.name);
        Ok(())
    }

    /// Length and CRC-32 of every tensor buffer together (a fingerprint of the content; for a
    /// file read on demand, of its header, with the file's length).
    pub fn stamp(&self) -> crate::pipeline::FileStamp {
        let parts: Vec<&[u8]> = self
            .buffers
            .iter()
            .map(|b| match b {
                Backing::Bytes(b) => b.as_slice(),
                Backing::Ranges { header, .. } => header.as_slice(),
            })
            .collect();
        let mut stamp = crate::pipeline::FileStamp::content(&parts);
        stamp.bytes = self.buffers.iter().map(|b| b.len() as u64).sum();
        stamp
    }

    /// Renames the store (the name in its error messages).
    pub(crate) fn rename(&mut self, name: impl Into<String>) {
        self.name = name.into();
    }

    /// The name used in error messages (usually the file path).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// All keys in the store, sorted.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    /// Whether `key` exists.
    pub fn contains(&self, key: &str) -> bool {
        self.entries.contains_key(key)
    }

    /// The stored shape of `key`, if present.
    pub fn shape(&self, key: &str) -> Option<&[usize]> {
        self.entries.get(key).map(|e| e.shape.as_slice())
    }

    /// The stored dtype of `key`, if present.
    pub fn dtype(&self, key: &str) -> Option<Dtype> {
        self.entries.get(key).map(|e| e.dtype)
    }

    /// The raw little-endian bytes of `key` (any dtype, e.g. int64 counters), checking its
    /// shape. Marks the key as consumed, like [`TensorStore::read_f32`].
    pub fn read_raw(&self, key: &str, expected: &[usize]) -> Result<(Dtype, Cow<'_, [u8]>)> {
        let entry = self.entry(key, expected)?;
        let bytes = self.entry_bytes(key, entry)?;
        self.used.borrow_mut().insert(key.to_string());
        Ok((entry.dtype, bytes))
    }

    /// Renames keys (and optionally reshapes them, same element count) with `rule`, which
    /// returns `Some((new_key, new_shape))` for keys to rewrite. Used for legacy layouts.
    pub fn remap(&mut self, rule: impl Fn(&str, &[usize]) -> Option<(String, Vec<usize>)>) {
        let old = std::mem::take(&mut self.entries);
        for (key, mut entry) in old {
            match rule(&key, &entry.shape) {
                Some((new_key, new_shape))
                    if new_shape.iter().product::<usize>()
                        == entry.shape.iter().product::<usize>() =>
                {
                    entry.shape = new_shape;
                    self.entries.insert(new_key, entry);
                }
                _ => {
                    self.entries.insert(key, entry);
                }
            }
        }
    }

    /// Marks keys as consumed without loading them (known, unused buffers).
    pub fn ignore(&self, key: &str) {
        if self.entries.contains_key(key) {
            self.used.borrow_mut().insert(key.to_string());
        }
    }

    /// Reads `key` as f32 values, checking its shape.
    pub fn read_f32(&self, key: &str, expected: &[usize]) -> Result<Vec<f32>> {
        if let Some(trace) = &self.trace {
            let mut keys = trace.keys.borrow_mut();
            let marker = -((trace.base + keys.len() + 1) as f32);
            keys.push((key.to_string(), expected.to_vec()));
            let n: usize = expected.iter().product();
            return Ok((0..n)
                .map(|j| if j == 0 { marker } else { j as f32 })
                .collect());
        }
        if let Some((init, rng)) = &self.synthetic {
            return Ok(synthesize(*init, key, expected, &mut rng.borrow_mut()));
        }
        let (dtype, bytes) = self.read_raw(key, expected)?;
        self.decode(key, &bytes, dtype)
    }

    /// Reads elements `part` (row-major) of `key` as f32 values, checking its shape; only those
    /// bytes are read from a file read on demand. The key counts as consumed.
    pub fn read_f32_part(
        &self,
        key: &str,
        expected: &[usize],
        part: Range<usize>,
    ) -> Result<Vec<f32>> {
        let n: usize = expected.iter().product();
        if part == (0..n) {
            return self.read_f32(key, expected);
        }
        if self.invents() {
            return Err(Error::SafeTensors {
                file: self.name.clone(),
                message: format!("tensor `{key}`: an invented tensor is read whole"),
            });
        }
        let entry = self.entry(key, expected)?;
        let width = entry.dtype.bitsize() / 8;
        if part.start > part.end || part.end > n {
            return Err(Error::SafeTensors {
                file: self.name.clone(),
                message: format!("tensor `{key}`: elements {part:?} outside its {n}"),
            });
        }
        let sub = Entry {
            start: entry.start + part.start * width,
            end: entry.start + part.end * width,
            ..entry.clone()
        };
        let bytes = self.entry_bytes(key, &sub)?;
        self.used.borrow_mut().insert(key.to_string());
        self.decode(key, &bytes, entry.dtype)
    }

    /// The entry of `key`, checked against the `expected` shape.
    fn entry(&self, key: &str, expected: &[usize]) -> Result<&Entry> {
        let entry = self.entries.get(key).ok_or_else(|| Error::MissingKey {
            file: self.name.clone(),
            key: key.to_string(),
        })?;
        if entry.shape != expected {
            return Err(Error::ShapeMismatch {
                file: self.name.clone(),
                key: key.to_string(),
                expected: expected.to_vec(),
                found: entry.shape.clone(),
            });
        }
        Ok(entry)
    }

    /// `bytes` of `key` as f32 values, or an error naming a dtype that is not a float.
    fn decode(&self, key: &str, bytes: &[u8], dtype: Dtype) -> Result<Vec<f32>> {
        decode_f32(bytes, dtype).ok_or_else(|| Error::UnsupportedDtype {
            file: self.name.clone(),
            key: key.to_string(),
            dtype: format!("{dtype:?}"),
        })
    }

    /// Whether the store invents its tensors ([`TensorStore::synthetic`],
    /// [`TensorStore::tracing`]): they are read whole, never in pieces.
    fn invents(&self) -> bool {
        self.trace.is_some() || self.synthetic.is_some()
    }

    /// Replaces (or adds) `key` with f32 values, e.g. after merging a LoRA update.
    pub fn replace_f32(&mut self, key: &str, shape: Vec<usize>, values: Vec<f32>) {
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let entry = Entry {
            dtype: Dtype::F32,
            shape,
            buffer: self.buffers.len(),
            start: 0,
            end: bytes.len(),
        };
        self.buffers.push(Backing::Bytes(bytes));
        self.entries.insert(key.to_string(), entry);
        self.used.borrow_mut().remove(key);
    }

    /// Errors if any key was never consumed.
    pub fn finish(&self) -> Result<()> {
        let used = self.used.borrow();
        let unused: Vec<String> = self
            .entries
            .keys()
            .filter(|k| !used.contains(*k))
            .cloned()
            .collect();
        if unused.is_empty() {
            Ok(())
        } else {
            Err(Error::UnusedKeys {
                file: self.name.clone(),
                keys: unused,
            })
        }
    }

    /// A cursor at the root of the key tree.
    pub fn root<'a>(&'a self, device: &'a Device) -> Weights<'a> {
        Weights {
            store: self,
            prefix: String::new(),
            device,
        }
    }
}

/// How a synthetic store invents weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Init {
    /// `N(0, 0.02²)` everywhere (benchmarks, tests).
    Small,
    /// PyTorch's layer defaults (training from scratch).
    PyTorch,
}

/// Invented values for a synthetic store (see [`TensorStore::synthetic`]).
fn synthesize(init: Init, key: &str, shape: &[usize], rng: &mut rand::rngs::StdRng) -> Vec<f32> {
    use rand_distr::{Distribution, Normal, Uniform};
    let n = shape.iter().product();
    let is_norm = key.contains("norm") && shape.len() == 1;
    if key.ends_with("bias") {
        vec![0.0; n]
    } else if is_norm {
        vec![1.0; n]
    } else if init == Init::PyTorch && shape.len() >= 2 && !key.contains("embedding") {
        let fan_in: usize = shape[1..].iter().product();
        let bound = 1.0 / (fan_in.max(1) as f32).sqrt();
        let uniform = Uniform::new_inclusive(-bound, bound).expect("valid bound");
        (0..n).map(|_| uniform.sample(rng)).collect()
    } else {
        let normal = Normal::new(0.0f32, 0.02).expect("valid normal");
        (0..n).map(|_| normal.sample(rng)).collect()
    }
}

/// Decodes little-endian F32/F16/BF16/F64 bytes to f32; `None` for other dtypes.
fn decode_f32(bytes: &[u8], dtype: Dtype) -> Option<Vec<f32>> {
    Some(match dtype {
        Dtype::F32 => bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        Dtype::F16 => bytes
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        Dtype::BF16 => bytes
            .chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        Dtype::F64 => bytes
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().expect("chunk of 8")) as f32)
            .collect(),
        _ => return None,
    })
}

/// A position in a [`TensorStore`]'s key tree, bound to a device.
#[derive(Clone)]
pub struct Weights<'a> {
    store: &'a TensorStore,
    prefix: String,
    device: &'a Device,
}

impl<'a> Weights<'a> {
    /// Descends into `name` (`a.b` + `c` → `a.b.c`).
    pub fn pp(&self, name: impl std::fmt::Display) -> Weights<'a> {
        let prefix = if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}.{}", self.prefix, name)
        };
        Weights {
            store: self.store,
            prefix,
            device: self.device,
        }
    }

    /// The full key for `name` under this cursor.
    pub fn key(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}.{}", self.prefix, name)
        }
    }

    /// Whether `name` exists under this cursor.
    pub fn contains(&self, name: &str) -> bool {
        self.store.contains(&self.key(name))
    }

    /// The device tensors are created on.
    pub fn device(&self) -> &'a Device {
        self.device
    }

    /// Loads `name` as a tensor of the given shape. A large tensor goes to the device in
    /// pieces of whole rows (dimension 0) of at most [`PIECE_ELEMENTS`] elements, joined there,
    /// so that host memory holds one piece at a time (the page's weights pass through wasm
    /// memory on their way to the GPU).
    pub fn tensor<const D: usize>(&self, name: &str, shape: [usize; D]) -> Result<Tensor<D>> {
        let key = self.key(name);
        let pieces = self.pieces(&shape);
        let mut parts = Vec::with_capacity(pieces.len());
        for rows in pieces {
            let row: usize = shape[1..].iter().product();
            let values =
                self.store
                    .read_f32_part(&key, &shape, rows.start * row..rows.end * row)?;
            let mut dims = shape;
            dims[0] = rows.len();
            parts.push(Tensor::from_data(
                TensorData::new(values, dims),
                self.device,
            ));
        }
        Ok(join(parts, 0))
    }

    /// `[d_out, d_in]` weight `name` (PyTorch's layout) as `[d_in, d_out]`, transposed on the
    /// host in pieces of output rows as [`Weights::tensor`] reads them.
    pub fn transposed(&self, name: &str, d_out: usize, d_in: usize) -> Result<Tensor<2>> {
        let key = self.key(name);
        let shape = [d_out, d_in];
        let mut parts = Vec::new();
        for rows in self.pieces(&shape) {
            let values =
                self.store
                    .read_f32_part(&key, &shape, rows.start * d_in..rows.end * d_in)?;
            let n = rows.len();
            let mut t = vec![0f32; values.len()];
            for o in 0..n {
                for i in 0..d_in {
                    t[i * n + o] = values[o * d_in + i];
                }
            }
            parts.push(Tensor::from_data(
                TensorData::new(t, [d_in, n]),
                self.device,
            ));
        }
        Ok(join(parts, 1))
    }

    /// [`pieces`] of `shape`, or the whole for a store that invents its tensors (each read of a
    /// tracing store is a new key).
    fn pieces(&self, shape: &[usize]) -> Vec<Range<usize>> {
        if self.store.invents() {
            std::iter::once(0..shape.first().copied().unwrap_or(1)).collect()
        } else {
            pieces(shape)
        }
    }
}

/// Ranges of rows (dimension 0) of a tensor of `shape`, each of at most [`PIECE_ELEMENTS`]
/// elements unless one row is larger (one range for small tensors).
fn pieces(shape: &[usize]) -> Vec<Range<usize>> {
    let rows = shape.first().copied().unwrap_or(1);
    let row: usize = shape.iter().skip(1).product::<usize>().max(1);
    let per = (PIECE_ELEMENTS / row).max(1);
    if rows <= per {
        return std::iter::once(0..rows).collect();
    }
    (0..rows)
        .step_by(per)
        .map(|r| r..(r + per).min(rows))
        .collect()
}

/// Largest piece of a weight tensor that passes through host memory at once, in elements
/// (16 MiB as f32).
pub const PIECE_ELEMENTS: usize = 4 << 20;

/// `parts` joined along `dim` on their device (one part: itself).
fn join<const D: usize>(mut parts: Vec<Tensor<D>>, dim: usize) -> Tensor<D> {
    if parts.len() == 1 {
        parts.pop().expect("one part")
    } else {
        Tensor::cat(parts, dim)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file in memory read in ranges, remembering the largest read.
    struct Ranged(Vec<u8>, std::rc::Rc<std::cell::Cell<u64>>);

    impl ByteRanges for Ranged {
        fn size(&self) -> u64 {
            self.0.len() as u64
        }

        fn read(&self, range: Range<u64>) -> Result<Vec<u8>> {
            self.1.set(self.1.get().max(range.end - range.start));
            Ok(self.0[range.start as usize..range.end as usize].to_vec())
        }
    }

    fn file() -> Vec<u8> {
        let a: Vec<u8> = [1.5f32, -2.0, 3.25]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let b: Vec<u8> = (0..64u16)
            .flat_map(|i| half::f16::from_f32(i as f32 / 8.0).to_le_bytes())
            .collect();
        let views = [
            (
                "a",
                safetensors::tensor::TensorView::new(Dtype::F32, vec![3], &a).unwrap(),
            ),
            (
                "b",
                safetensors::tensor::TensorView::new(Dtype::F16, vec![8, 8], &b).unwrap(),
            ),
        ];
        let meta = std::collections::HashMap::from([("k".to_string(), "v".to_string())]);
        safetensors::serialize(views, Some(meta)).unwrap()
    }

    fn ranged(bytes: Vec<u8>) -> (Result<TensorStore>, std::rc::Rc<std::cell::Cell<u64>>) {
        let largest = std::rc::Rc::new(std::cell::Cell::new(0));
        let store =
            TensorStore::from_ranges("f.safetensors", Box::new(Ranged(bytes, largest.clone())));
        (store, largest)
    }

    #[test]
    fn a_ranged_store_reads_what_the_whole_file_holds_one_tensor_at_a_time() {
        let bytes = file();
        let whole = TensorStore::from_bytes("f.safetensors", bytes.clone()).unwrap();
        let (store, largest) = ranged(bytes.clone());
        let store = store.unwrap();
        let header = largest.get();
        assert!(
            header < bytes.len() as u64 - 128,
            "only the header was read: {header}"
        );
        assert_eq!(store.keys().collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(store.metadata(), whole.metadata());
        for (key, shape) in [("a", vec![3]), ("b", vec![8, 8])] {
            assert_eq!(
                store.read_f32(key, &shape).unwrap(),
                whole.read_f32(key, &shape).unwrap()
            );
        }
        assert_eq!(
            largest.get().max(header),
            header.max(128),
            "one tensor per read"
        );
        store.finish().unwrap();
        assert!(matches!(
            store.read_f32("b", &[64]),
            Err(Error::ShapeMismatch { .. })
        ));
    }

    /// A tensor larger than a piece reaches the device in pieces of rows (each read alone from
    /// a ranged file) and equals the whole; so does the transposed load of a linear weight.
    #[test]
    fn large_tensors_load_in_pieces_equal_to_the_whole() {
        let (rows, cols) = (2 * PIECE_ELEMENTS / 2048 + 3, 2048);
        let values: Vec<f32> = (0..rows * cols)
            .map(|i| (i % 4099) as f32 - 2000.0)
            .collect();
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let view =
            safetensors::tensor::TensorView::new(Dtype::F32, vec![rows, cols], &bytes).unwrap();
        let file = safetensors::serialize([("w", view)], None).unwrap();
        let (store, largest) = ranged(file);
        let store = store.unwrap();
        let device = Device::flex();
        let w = store.root(&device);
        assert_eq!(pieces(&[rows, cols]).len(), 3);
        let t = w.tensor("w", [rows, cols]).unwrap();
        assert!(
            largest.get() <= (PIECE_ELEMENTS * 4) as u64,
            "read {}",
            largest.get()
        );
        assert_eq!(t.into_data().try_to_vec::<f32>().unwrap(), values);
        let t = w.transposed("w", rows, cols).unwrap();
        assert_eq!(t.dims(), [cols, rows]);
        let got = t.into_data().try_to_vec::<f32>().unwrap();
        for (i, o) in [(0, 0), (5, rows - 1), (cols - 1, 2048), (7, 2049)] {
            assert_eq!(got[i * rows + o], values[o * cols + i], "({i}, {o})");
        }
        store.finish().unwrap();
    }

    #[test]
    fn a_damaged_ranged_file_is_refused_naming_it() {
        let bytes = file();
        let cases: [(&str, Vec<u8>); 4] = [
            ("too short", bytes[..5].to_vec()),
            ("header past the end", {
                let mut b = bytes.clone();
                b[..8].copy_from_slice(&(bytes.len() as u64).to_le_bytes());
                b
            }),
            ("truncated data", bytes[..bytes.len() - 2].to_vec()),
            ("bad header", {
                let mut b = bytes.clone();
                b[8] = b'[';
                b
            }),
        ];
        for (what, bytes) in cases {
            let (store, _) = ranged(bytes);
            match store {
                Err(Error::SafeTensors { file, .. }) => assert_eq!(file, "f.safetensors", "{what}"),
                other => panic!("{what}: {other:?}"),
            }
        }
    }
}
