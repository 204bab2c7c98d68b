//! File helpers shared by the CLI, the dataset builder and training: crash-safe writes, JSON
//! Lines, and the image files of the paths a user names.

use std::path::Path;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};

/// Image file extensions the crate decodes (lower case; the `image` crate is built with PNG
/// and JPEG only).
pub const IMAGE_EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];

/// Writes `bytes` to `<path>.tmp`, then renames it over `path`: a reader (or a resumed run)
/// sees the old file or the new one, never half of one.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}

/// The image files named by `paths`: files as given, folders walked recursively (sorted),
/// keeping [`IMAGE_EXTENSIONS`] only. An unreadable folder is
/// listed itself, so that reading it reports the error.
pub fn image_files(paths: &[std::path::PathBuf]) -> Vec<std::path::PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
        let mut entries: Vec<std::path::PathBuf> = match std::fs::read_dir(dir) {
            Ok(rd) => rd.filter_map(|e| e.ok().map(|e| e.path())).collect(),
            Err(_) => {
                out.push(dir.to_path_buf());
                return;
            }
        };
        entries.sort();
        for path in entries {
            if path.is_dir() {
                walk(&path, out);
            } else if path
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
            {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    for path in paths {
        if path.is_dir() {
            walk(path, &mut out);
        } else {
            out.push(path.clone());
        }
    }
    out
}

/// One JSON object per line, each followed by a newline.
pub fn to_jsonl<T: Serialize>(items: &[T], file: &str) -> Result<String> {
    let mut text = String::new();
    for item in items {
        text.push_str(&serde_json::to_string(item).map_err(|e| Error::json(file, e))?);
        text.push('\n');
    }
    Ok(text)
}

/// Reads a JSON Lines file (blank lines skipped, errors naming the file and line); a missing file is an empty list.
pub fn read_jsonl<T: DeserializeOwned>(path: &Path) -> Result<Vec<T>> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse_jsonl(&text, &path.display().to_string()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(Error::io(path, e)),
    }
}

/// Parses JSON Lines (blank lines skipped); `file` names the source in errors, with the line.
pub(crate) fn parse_jsonl<T: DeserializeOwned>(text: &str, file: &str) -> Result<Vec<T>> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, line)| {
            serde_json::from_str(line).map_err(|e| Error::Json {
                file: format!("{file}:{}", i + 1),
                message: e.to_string(),
            })
        })
        .collect()
}
