//! File helpers shared by the CLI, the dataset builder and training: crash-safe writes, JSON
//! Lines, and the image files of the paths a user names.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};

/// Image file extensions the crate decodes (lower case; the `image` crate is built with PNG
/// and JPEG only).
pub const IMAGE_EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];

/// Writes `bytes` to a fresh temporary file beside `path`, then renames it over `path`: a
/// reader (or a resumed run) sees the old file or the new one, never half of one. The temporary
/// file has an unpredictable name and is created exclusively (an existing file or symlink of
/// that name is never opened, followed or deleted); it is removed when anything fails.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write as _;
    let (tmp, file) = create_temp(path)?;
    // The file is closed at the end of the block, before the rename.
    let written = {
        let mut file = file;
        file.write_all(bytes)
    };
    let done = written
        .map_err(|e| Error::io(&tmp, e))
        .and_then(|()| std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e)));
    if done.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    done
}

/// Creates `.<name>.<random>.tmp` in `path`'s folder with `create_new` (O_EXCL: never an
/// existing file or symlink), retrying on a name clash.
fn create_temp(path: &Path) -> Result<(PathBuf, std::fs::File)> {
    use std::hash::{BuildHasher as _, Hasher as _};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let name = path.file_name().ok_or_else(|| {
        Error::io(
            path,
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a file path"),
        )
    })?;
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    let dir = dir.unwrap_or(Path::new("."));
    let mut last = None;
    for _ in 0..8 {
        // RandomState is seeded from the OS per process; the counter and the clock make every
        // call differ.
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
        h.write_u32(std::process::id());
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        let tmp = dir.join(format!(
            ".{}.{:016x}.tmp",
            name.to_string_lossy(),
            h.finish()
        ));
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
        {
            Ok(file) => return Ok((tmp, file)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(Error::io(&tmp, e)),
        }
    }
    Err(Error::io(
        dir,
        last.unwrap_or_else(|| std::io::Error::other("no free temporary name")),
    ))
}

/// The image files named by `paths`: files as given, folders walked recursively (sorted),
/// keeping [`IMAGE_EXTENSIONS`] only. Each folder is walked once, however many symlinks lead to
/// it (a link back to an ancestor is a loop, not more images). An unreadable folder is listed
/// itself, so that reading it reports the error.
pub fn image_files(paths: &[PathBuf]) -> Vec<PathBuf> {
    fn walk(dir: &Path, seen: &mut BTreeSet<PathBuf>, out: &mut Vec<PathBuf>) {
        // The canonical path identifies a folder whatever link led to it.
        if let Ok(real) = std::fs::canonicalize(dir)
            && !seen.insert(real)
        {
            return;
        }
        let mut entries: Vec<PathBuf> = match std::fs::read_dir(dir) {
            Ok(rd) => rd.filter_map(|e| e.ok().map(|e| e.path())).collect(),
            Err(_) => {
                out.push(dir.to_path_buf());
                return;
            }
        };
        entries.sort();
        for path in entries {
            if path.is_dir() {
                walk(&path, seen, out);
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
    let mut seen = BTreeSet::new();
    for path in paths {
        if path.is_dir() {
            walk(path, &mut seen, &mut out);
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

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("synfer-files-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn atomic_writes_never_follow_or_delete_a_planted_temp_name() {
        let dir = scratch("symlink");
        let victim = dir.join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        // The names the old scheme used (`<stem>.tmp`, `<name>.tmp`), planted as links.
        std::os::unix::fs::symlink(&victim, dir.join("out.tmp")).unwrap();
        std::os::unix::fs::symlink(&victim, dir.join("out.png.tmp")).unwrap();
        std::fs::write(dir.join("x.tmp"), b"someone's file").unwrap();
        write_atomic(&dir.join("out.png"), b"png bytes").unwrap();
        write_atomic(&dir.join("x.png"), b"png bytes").unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        assert_eq!(std::fs::read(dir.join("x.tmp")).unwrap(), b"someone's file");
        assert_eq!(std::fs::read(dir.join("out.png")).unwrap(), b"png bytes");
        // Nothing left behind but what was there and what was written.
        assert_eq!(
            names(&dir),
            [
                "out.png",
                "out.png.tmp",
                "out.tmp",
                "victim",
                "x.png",
                "x.tmp"
            ]
        );
        // A symlink at the target itself is replaced, not written through.
        std::os::unix::fs::symlink(&victim, dir.join("link.png")).unwrap();
        write_atomic(&dir.join("link.png"), b"new").unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_failed_atomic_write_names_the_path_and_leaves_no_temp_file() {
        let dir = scratch("isdir");
        std::fs::create_dir(dir.join("out.png")).unwrap();
        std::fs::write(dir.join("out.png").join("inside"), b"x").unwrap();
        let err = write_atomic(&dir.join("out.png"), b"png").unwrap_err();
        assert!(err.to_string().contains("out.png"), "{err}");
        assert_eq!(names(&dir), ["out.png"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn folder_walks_survive_symlink_loops() {
        let dir = scratch("loops");
        std::fs::create_dir(dir.join("a")).unwrap();
        std::fs::write(dir.join("a/face.png"), b"").unwrap();
        std::fs::write(dir.join("top.jpg"), b"").unwrap();
        // A link to itself's parent and two links back to the root: loops, not more images.
        std::os::unix::fs::symlink(dir.join("a"), dir.join("a/again")).unwrap();
        std::os::unix::fs::symlink(&dir, dir.join("a/up")).unwrap();
        std::os::unix::fs::symlink(&dir, dir.join("root")).unwrap();
        let files = image_files(std::slice::from_ref(&dir));
        let rel: Vec<_> = files
            .iter()
            .map(|f| f.strip_prefix(&dir).unwrap())
            .collect();
        assert_eq!(rel, [Path::new("a/face.png"), Path::new("top.jpg")]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
