//! Model files the page holds as `Blob`s (a `File` chosen from disk, a cached `Response`'s
//! body), read synchronously in the worker with `FileReaderSync`: small files whole, safetensors
//! files tensor by tensor. The model's weights thus pass through wasm memory one tensor at a
//! time on their way to the GPU, whatever the model's size.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::ops::Range;
use std::rc::Rc;

use wasm_bindgen::prelude::*;

use crate::error::{Error, Result};
use crate::pipeline::source::FileSource;
use crate::weights::{ByteRanges, TensorStore};

#[wasm_bindgen]
extern "C" {
    /// A `Blob` (or `File`).
    #[wasm_bindgen(js_name = Blob)]
    #[derive(Clone)]
    pub type JsBlob;
    /// `new Blob(parts)`.
    #[wasm_bindgen(constructor, js_class = Blob)]
    pub fn of(parts: &js_sys::Array) -> JsBlob;
    #[wasm_bindgen(method, getter)]
    fn size(this: &JsBlob) -> f64;
    #[wasm_bindgen(method)]
    fn slice(this: &JsBlob, start: f64, end: f64) -> JsBlob;

    /// The worker-only synchronous file reader.
    type FileReaderSync;
    #[wasm_bindgen(constructor, catch)]
    fn new() -> std::result::Result<FileReaderSync, JsValue>;
    #[wasm_bindgen(method, catch, js_name = readAsArrayBuffer)]
    fn read_as_array_buffer(
        this: &FileReaderSync,
        blob: &JsBlob,
    ) -> std::result::Result<js_sys::ArrayBuffer, JsValue>;
}

/// A JS exception's message.
fn js_message(e: &JsValue) -> String {
    e.dyn_ref::<js_sys::Error>()
        .map(|e| String::from(e.message()))
        .or_else(|| e.as_string())
        .unwrap_or_else(|| format!("{e:?}"))
}

/// One file of a [`BlobSource`], read in ranges.
struct BlobRanges {
    path: String,
    blob: JsBlob,
    largest: Rc<Cell<u64>>,
}

impl ByteRanges for BlobRanges {
    fn size(&self) -> u64 {
        self.blob.size() as u64
    }

    fn read(&self, range: Range<u64>) -> Result<Vec<u8>> {
        self.largest
            .set(self.largest.get().max(range.end - range.start));
        read_blob(&self.blob, range, &self.path)
    }
}

/// Bytes `range` of `blob` (named `path` in errors), read synchronously.
fn read_blob(blob: &JsBlob, range: Range<u64>, path: &str) -> Result<Vec<u8>> {
    let failed = |e: JsValue| Error::Io {
        path: path.into(),
        source: std::io::Error::other(format!(
            "reading bytes {range:?}: {} (FileReaderSync exists only in a Web Worker)",
            js_message(&e)
        )),
    };
    let reader = FileReaderSync::new().map_err(failed)?;
    let part = blob.slice(range.start as f64, range.end as f64);
    let buffer = reader.read_as_array_buffer(&part).map_err(failed)?;
    Ok(js_sys::Uint8Array::new(&buffer).to_vec())
}

/// A model folder as `Blob`s by relative path.
pub struct BlobSource {
    name: String,
    files: BTreeMap<String, JsBlob>,
    largest: Rc<Cell<u64>>,
}

impl BlobSource {
    /// An empty source called `name`.
    pub fn new(name: impl Into<String>) -> Self {
        BlobSource {
            name: name.into(),
            files: BTreeMap::new(),
            largest: Rc::new(Cell::new(0)),
        }
    }

    /// Adds `blob` at relative path `rel` (a leading `./` or `/` is ignored).
    pub fn insert(&mut self, rel: &str, blob: JsBlob) {
        let rel = rel.trim_start_matches("./").trim_start_matches('/');
        self.files.insert(rel.to_string(), blob);
    }

    /// Relative paths held.
    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.files.keys().map(String::as_str)
    }

    /// The largest single read so far, in bytes (the window weights pass through).
    pub fn largest_read(&self) -> u64 {
        self.largest.get()
    }
}

impl FileSource for BlobSource {
    fn read(&self, rel: &str) -> Result<Option<Vec<u8>>> {
        let Some(blob) = self.files.get(rel) else {
            return Ok(None);
        };
        let size = blob.size() as u64;
        self.largest.set(self.largest.get().max(size));
        read_blob(blob, 0..size, rel).map(Some)
    }

    fn describe(&self) -> String {
        self.name.clone()
    }

    fn tensors(&self, rel: &str) -> Result<Option<TensorStore>> {
        let Some(blob) = self.files.get(rel) else {
            return Ok(None);
        };
        let ranges = BlobRanges {
            path: rel.to_string(),
            blob: blob.clone(),
            largest: self.largest.clone(),
        };
        TensorStore::from_ranges(rel, Box::new(ranges)).map(Some)
    }
}
