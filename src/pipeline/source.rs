//! Where model files come from: a folder on disk (native) or a map of bytes (web, tests).

use std::collections::BTreeMap;

use crate::error::{Error, Result};
use crate::weights::TensorStore;

/// Read access to a diffusers-layout model folder by relative path (`unet/config.json`).
pub trait FileSource {
    /// The file's bytes, `Ok(None)` when it does not exist.
    fn read(&self, rel: &str) -> Result<Option<Vec<u8>>>;

    /// A human-readable name for error messages and sidecars.
    fn describe(&self) -> String;

    /// What identifies `rel`'s content (just read as `bytes`) for a fingerprint: its length and
    /// CRC-32 (folders on disk: its length and modification time, which costs nothing).
    fn stamp(&self, _rel: &str, bytes: &[u8]) -> FileStamp {
        FileStamp::content(&[bytes])
    }

    /// The safetensors file `rel` as a tensor store (named `rel`), `Ok(None)` when it does not
    /// exist. Sources that can read part of a file (folders on disk, the browser's files) read
    /// only its header here and each tensor when a model consumes it.
    fn tensors(&self, rel: &str) -> Result<Option<TensorStore>> {
        self.read(rel)?
            .map(|bytes| TensorStore::from_bytes(rel, bytes))
            .transpose()
    }

    /// What identifies the safetensors file `rel`, just opened as `store` by
    /// [`FileSource::tensors`] (by default [`TensorStore::stamp`]: for a store in memory, the
    /// length and CRC-32 of its bytes, as [`FileSource::stamp`]).
    fn stamp_tensors(&self, _rel: &str, store: &TensorStore) -> FileStamp {
        store.stamp()
    }

    /// [`FileSource::tensors`], or an error naming the file when missing.
    fn require_tensors(&self, rel: &str) -> Result<TensorStore> {
        self.tensors(rel)?.ok_or_else(|| Error::Io {
            path: format!("{}/{rel}", self.describe()).into(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "file not found"),
        })
    }

    /// The file's bytes, or an error naming it when missing.
    fn require(&self, rel: &str) -> Result<Vec<u8>> {
        self.read(rel)?.ok_or_else(|| Error::Io {
            path: format!("{}/{rel}", self.describe()).into(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "file not found"),
        })
    }
}

/// What identifies a file's content in a fingerprint (a synthesis folder's `shard.json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FileStamp {
    /// Length in bytes.
    pub bytes: u64,
    /// CRC-32 of the content (files held in memory).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crc32: Option<u32>,
    /// Modification time in nanoseconds since the Unix epoch (files on disk).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modified_ns: Option<u128>,
}

impl FileStamp {
    /// The stamp of content held in memory, in `parts` taken together: total length and CRC-32.
    pub fn content(parts: &[&[u8]]) -> Self {
        let mut crc = crc32fast::Hasher::new();
        for p in parts {
            crc.update(p);
        }
        FileStamp {
            bytes: parts.iter().map(|p| p.len() as u64).sum(),
            crc32: Some(crc.finalize()),
            modified_ns: None,
        }
    }
}

/// A source that stamps every file read through it ([`FileSource::stamp`]).
pub(crate) struct Stamping<'a> {
    inner: &'a dyn FileSource,
    stamps: std::cell::RefCell<BTreeMap<String, FileStamp>>,
}

impl<'a> Stamping<'a> {
    pub(crate) fn new(inner: &'a dyn FileSource) -> Self {
        Stamping {
            inner,
            stamps: Default::default(),
        }
    }

    /// The stamps of the files read so far, by relative path.
    pub(crate) fn into_stamps(self) -> BTreeMap<String, FileStamp> {
        self.stamps.into_inner()
    }
}

impl FileSource for Stamping<'_> {
    fn read(&self, rel: &str) -> Result<Option<Vec<u8>>> {
        let bytes = self.inner.read(rel)?;
        if let Some(b) = &bytes {
            let stamp = self.inner.stamp(rel, b);
            self.stamps.borrow_mut().insert(rel.to_string(), stamp);
        }
        Ok(bytes)
    }

    fn tensors(&self, rel: &str) -> Result<Option<TensorStore>> {
        let store = self.inner.tensors(rel)?;
        if let Some(s) = &store {
            let stamp = self.inner.stamp_tensors(rel, s);
            self.stamps.borrow_mut().insert(rel.to_string(), stamp);
        }
        Ok(store)
    }

    fn stamp_tensors(&self, rel: &str, store: &TensorStore) -> FileStamp {
        self.inner.stamp_tensors(rel, store)
    }

    fn describe(&self) -> String {
        self.inner.describe()
    }

    fn stamp(&self, rel: &str, bytes: &[u8]) -> FileStamp {
        self.inner.stamp(rel, bytes)
    }
}

/// A model folder on disk.
#[cfg(not(target_family = "wasm"))]
#[derive(Debug, Clone)]
pub struct DirSource {
    root: std::path::PathBuf,
}

#[cfg(not(target_family = "wasm"))]
impl DirSource {
    /// Wraps `root`; it must be a directory.
    pub fn new(root: impl Into<std::path::PathBuf>) -> Result<Self> {
        let root = root.into();
        if !root.is_dir() {
            return Err(Error::io(
                &root,
                std::io::Error::new(std::io::ErrorKind::NotFound, "model folder not found"),
            ));
        }
        Ok(DirSource { root })
    }
}

#[cfg(not(target_family = "wasm"))]
impl FileSource for DirSource {
    fn read(&self, rel: &str) -> Result<Option<Vec<u8>>> {
        let path = self.root.join(rel);
        match std::fs::read(&path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(path, e)),
        }
    }

    fn describe(&self) -> String {
        self.root.display().to_string()
    }

    fn tensors(&self, rel: &str) -> Result<Option<TensorStore>> {
        let path = self.root.join(rel);
        match std::fs::File::open(&path) {
            Ok(file) => {
                let size = file.metadata().map_err(|e| Error::io(&path, e))?.len();
                let ranges = DiskRanges {
                    file: std::cell::RefCell::new(file),
                    size,
                    path,
                };
                TensorStore::from_ranges(rel, Box::new(ranges)).map(Some)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(path, e)),
        }
    }

    fn stamp(&self, rel: &str, bytes: &[u8]) -> FileStamp {
        self.disk_stamp(rel, bytes.len() as u64)
    }

    fn stamp_tensors(&self, rel: &str, _store: &TensorStore) -> FileStamp {
        // The file's length as the metadata gives it: no need to stamp the store's header.
        let len = std::fs::metadata(self.root.join(rel)).map_or(0, |m| m.len());
        self.disk_stamp(rel, len)
    }
}

#[cfg(not(target_family = "wasm"))]
impl DirSource {
    /// A file's length and modification time (which costs nothing to read).
    fn disk_stamp(&self, rel: &str, bytes: u64) -> FileStamp {
        let modified_ns = std::fs::metadata(self.root.join(rel))
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_nanos());
        FileStamp {
            bytes,
            crc32: None,
            modified_ns,
        }
    }
}

/// A file on disk read in ranges (a safetensors file of a [`DirSource`]).
#[cfg(not(target_family = "wasm"))]
struct DiskRanges {
    file: std::cell::RefCell<std::fs::File>,
    size: u64,
    path: std::path::PathBuf,
}

#[cfg(not(target_family = "wasm"))]
impl crate::weights::ByteRanges for DiskRanges {
    fn size(&self) -> u64 {
        self.size
    }

    fn read(&self, range: std::ops::Range<u64>) -> Result<Vec<u8>> {
        use std::io::{Read, Seek, SeekFrom};
        let mut file = self.file.borrow_mut();
        let mut bytes = vec![0; (range.end - range.start) as usize];
        file.seek(SeekFrom::Start(range.start))
            .and_then(|_| file.read_exact(&mut bytes))
            .map_err(|e| Error::io(&self.path, e))?;
        Ok(bytes)
    }
}

/// Files held in memory (uploaded in the browser, or embedded).
#[derive(Debug, Clone, Default)]
pub struct MemorySource {
    name: String,
    files: BTreeMap<String, Vec<u8>>,
}

impl MemorySource {
    /// An empty source called `name`.
    pub fn new(name: impl Into<String>) -> Self {
        MemorySource {
            name: name.into(),
            files: BTreeMap::new(),
        }
    }

    /// Adds a file at relative path `rel` (leading `./` or `/` is ignored).
    pub fn insert(&mut self, rel: &str, bytes: Vec<u8>) {
        let rel = rel.trim_start_matches("./").trim_start_matches('/');
        self.files.insert(rel.to_string(), bytes);
    }

    /// Relative paths held.
    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.files.keys().map(String::as_str)
    }

    /// The built-in model's files ([`crate::default_model`]).
    #[cfg(not(target_family = "wasm"))]
    pub fn built_in() -> Self {
        let mut src = MemorySource::new(crate::default_model::NAME);
        for (rel, bytes) in crate::default_model::FILES {
            src.insert(rel, bytes.to_vec());
        }
        src
    }
}

impl FileSource for MemorySource {
    fn read(&self, rel: &str) -> Result<Option<Vec<u8>>> {
        Ok(self.files.get(rel).cloned())
    }

    fn describe(&self) -> String {
        self.name.clone()
    }
}
