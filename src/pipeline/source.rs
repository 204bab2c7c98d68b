//! Where model files come from: a folder on disk (native) or a map of bytes (web, tests).

use std::collections::BTreeMap;

use crate::error::{Error, Result};

/// Read access to a diffusers-layout model folder by relative path (`unet/config.json`).
pub trait FileSource {
    /// The file's bytes, `Ok(None)` when it does not exist.
    fn read(&self, rel: &str) -> Result<Option<Vec<u8>>>;

    /// A human-readable name for error messages and sidecars.
    fn describe(&self) -> String;

    /// The file's bytes, or an error naming it when missing.
    fn require(&self, rel: &str) -> Result<Vec<u8>> {
        self.read(rel)?.ok_or_else(|| Error::Io {
            path: format!("{}/{rel}", self.describe()).into(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "file not found"),
        })
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
