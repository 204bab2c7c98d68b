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

mod archive;
mod flatten;
mod pickle;

use archive::{Placement, TorchArchive};
use flatten::Flattener;
use pickle::Vm;

use super::TensorStore;
use crate::error::{Error, Result};

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
        Self::from_torch_selected(name.into(), bytes, path, false)
    }

    /// Like [`TensorStore::from_torch_bytes_at`] with the one-component path `[key]` when the
    /// top-level dict has `key`, else the top level itself (Lightning checkpoints hold their
    /// weights under `state_dict`, plain ones at the top); the pickle is read once.
    pub fn from_torch_bytes_under(
        name: impl Into<String>,
        bytes: Vec<u8>,
        key: &str,
    ) -> Result<Self> {
        Self::from_torch_selected(name.into(), bytes, &[key], true)
    }

    /// The tensors of the object at `path` (the top level when `or_root` and a component is
    /// missing).
    fn from_torch_selected(
        name: String,
        bytes: Vec<u8>,
        path: &[&str],
        or_root: bool,
    ) -> Result<Self> {
        let (placements, keys) = {
            let archive = TorchArchive::open(&name, &bytes)?;
            let mut vm = Vm::new(&name, archive.pickle);
            let root = vm.run()?;
            let selected = match vm.select(root, path) {
                Err(Error::MissingKey { .. }) if or_root => root,
                other => other?,
            };
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

#[cfg(test)]
mod tests;
