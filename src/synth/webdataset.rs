//! WebDataset output (`format = "webdataset"`): POSIX tar shards `<split>-NNNNNN.tar`, each
//! holding `KEY.png` (the image, with its settings inside), `KEY.json` (its
//! [`metadata::Record`](crate::dataset::metadata::Record)) and `KEY.cls` (the final label's
//! class index in [`CLASSES`]) for up to `shard_size` items, `KEY` being the item id.
//!
//! Tar `k` of a split holds the items of that split whose rank among the plan's items of the
//! split is in `[k·size, (k+1)·size)`, so a tar's members do not depend on sharding. A kept
//! image is first written to `.staging/KEY.png`; once every item of a tar that this run owns is
//! in the manifest, the tar is written atomically (temporary file, rename) and the staged
//! images are removed, so a killed run leaves whole tars and staged images, never a partial
//! tar, and a resumed run writes the same bytes. `synth merge` joins the tars of the same name
//! from every shard folder. Member headers are fixed (mode 0644, owner 0, mtime 0), so equal
//! content gives equal bytes.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use super::manifest::Record;
use super::plan::Item;
use crate::error::{Error, Result};
use crate::expression::CLASSES;
use crate::files::write_atomic;

/// Items per tar when the plan does not say.
pub const DEFAULT_SHARD_SIZE: usize = 1000;
/// Where kept images wait for their tar.
pub const STAGING: &str = ".staging";

/// Which tar each item goes to.
#[derive(Debug, Clone)]
pub struct Tars {
    /// Tar name of each plan item (by index).
    tar_of: Vec<String>,
    /// The member item indices this run owns, per tar.
    members: BTreeMap<String, Vec<usize>>,
}

impl Tars {
    /// The tars of `items` (every item of the plan, index order) at `size` items per tar, with
    /// the members this run owns (`owned`: its shard's items).
    pub fn new(items: &[Item], size: usize, owned: &BTreeSet<usize>) -> Self {
        let mut rank: BTreeMap<&str, usize> = BTreeMap::new();
        let mut tar_of = Vec::with_capacity(items.len());
        let mut members: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for item in items {
            let r = rank.entry(item.split.as_str()).or_insert(0);
            let name = format!("{}-{:06}.tar", item.split, *r / size.max(1));
            *r += 1;
            if owned.contains(&item.index) {
                members.entry(name.clone()).or_default().push(item.index);
            }
            tar_of.push(name);
        }
        Tars { tar_of, members }
    }

    /// The path of a kept item's image inside its tar: `<tar>/<id>.png` (the record's
    /// `file_name`).
    pub fn file_name(&self, item: &Item) -> String {
        format!("{}/{}.png", self.tar_of[item.index], item.id)
    }

    /// Packs every tar that is complete (see [`Self::pack_item`]); a resumed run tidies what a
    /// killed one left.
    pub fn pack_all(&self, out: &Path, records: &BTreeMap<usize, Record>) -> Result<()> {
        for name in self.members.keys() {
            self.pack(out, name, records)?;
        }
        Ok(())
    }

    /// Packs the tar of item `index` (the one a newly finished item can complete) when every
    /// member this run owns is in `records`, unless it exists, and removes its staged images.
    pub fn pack_item(
        &self,
        out: &Path,
        index: usize,
        records: &BTreeMap<usize, Record>,
    ) -> Result<()> {
        self.pack(out, &self.tar_of[index], records)
    }

    /// Writes tar `name` when every member this run owns is in `records`, unless it exists,
    /// and removes its staged images (also those a killed run left behind).
    fn pack(&self, out: &Path, name: &str, records: &BTreeMap<usize, Record>) -> Result<()> {
        let Some(mine) = self.members.get(name) else {
            return Ok(());
        };
        if !mine.iter().all(|i| records.contains_key(i)) {
            return Ok(());
        }
        let path = out.join(name);
        let kept: Vec<&Record> = mine
            .iter()
            .map(|i| &records[i])
            .filter(|r| r.file_name.is_some())
            .collect();
        if !path.exists() {
            let mut files = Vec::with_capacity(3 * kept.len());
            for r in &kept {
                let staged = out.join(STAGING).join(format!("{}.png", r.id));
                let png = std::fs::read(&staged).map_err(|e| Error::io(&staged, e))?;
                files.extend(members_of(r, png)?);
            }
            write_atomic(&path, &tar(&files)?)?;
        }
        for r in &kept {
            let staged = out.join(STAGING).join(format!("{}.png", r.id));
            match std::fs::remove_file(&staged) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(Error::io(&staged, e));
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// The three members of a kept record: `KEY.cls`, `KEY.json`, `KEY.png` (name order).
fn members_of(r: &Record, png: Vec<u8>) -> Result<Vec<(String, Vec<u8>)>> {
    let label = r.label.as_deref().unwrap_or_default();
    let class = CLASSES
        .iter()
        .position(|c| *c == label)
        .ok_or_else(|| Error::request("label", format!("{label:?} is not a class")))?;
    let mut meta = r
        .metadata()
        .ok_or_else(|| Error::request("label", format!("item {} was not kept", r.id)))?;
    meta.file_name = format!("{}.png", r.id);
    let json = serde_json::to_vec(&meta).map_err(|e| Error::json(&r.id, e))?;
    Ok(vec![
        (format!("{}.cls", r.id), class.to_string().into_bytes()),
        (format!("{}.json", r.id), json),
        (format!("{}.png", r.id), png),
    ])
}

/// A ustar header block for a regular file.
fn header(name: &str, size: usize) -> Result<[u8; 512]> {
    if name.len() > 100 || name.is_empty() {
        return Err(Error::request(
            "webdataset",
            format!("tar member name {name:?} must be 1–100 bytes"),
        ));
    }
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name.as_bytes());
    let mut put = |at: usize, text: &str| h[at..at + text.len()].copy_from_slice(text.as_bytes());
    put(100, "0000644\0");
    put(108, "0000000\0");
    put(116, "0000000\0");
    put(124, &format!("{size:011o}\0"));
    put(136, "00000000000\0");
    put(148, "        ");
    put(156, "0");
    put(257, "ustar\0");
    put(263, "00");
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    Ok(h)
}

/// A tar archive of `files` (in the order given), ended by two zero blocks.
pub fn tar(files: &[(String, Vec<u8>)]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    for (name, data) in files {
        out.extend_from_slice(&header(name, data.len())?);
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.resize(out.len() + 1024, 0);
    Ok(out)
}

/// The regular files of a ustar archive (as [`tar`] writes them), in archive order; `name`
/// names the file in errors.
pub fn untar(bytes: &[u8], name: &str) -> Result<Vec<(String, Vec<u8>)>> {
    let bad = |at: usize, why: &str| Error::Image {
        file: name.to_string(),
        message: format!("tar block at byte {at}: {why}"),
    };
    let mut files = Vec::new();
    let mut at = 0;
    while at + 512 <= bytes.len() {
        let h = &bytes[at..at + 512];
        if h.iter().all(|&b| b == 0) {
            return Ok(files);
        }
        let stored: u32 = octal(&h[148..156]).ok_or_else(|| bad(at, "bad checksum field"))? as u32;
        let sum: u32 = h[..148]
            .iter()
            .chain(&h[156..])
            .map(|&b| u32::from(b))
            .sum::<u32>()
            + 8 * 32;
        if stored != sum {
            return Err(bad(at, "checksum mismatch"));
        }
        let size = octal(&h[124..136]).ok_or_else(|| bad(at, "bad size field"))?;
        let end = (at + 512)
            .checked_add(size)
            .filter(|&e| e <= bytes.len())
            .ok_or_else(|| bad(at, "truncated member"))?;
        let member =
            String::from_utf8_lossy(&h[..h[..100].iter().position(|&b| b == 0).unwrap_or(100)])
                .into_owned();
        if matches!(h[156], b'0' | 0) {
            files.push((member, bytes[at + 512..end].to_vec()));
        }
        at = (end.div_ceil(512)) * 512;
    }
    Err(bad(at, "archive ends without its end blocks"))
}

fn octal(field: &[u8]) -> Option<usize> {
    let text = std::str::from_utf8(field).ok()?;
    let digits = text.trim_matches(|c: char| c == '\0' || c == ' ');
    usize::from_str_radix(digits, 8).ok()
}

/// Joins the tars of the same name in `dirs` (shard folders of one plan) into `out`, members
/// in item order.
pub fn merge_tars(dirs: &[&Path], out: &Path) -> Result<()> {
    let mut joined: BTreeMap<String, Vec<(String, Vec<u8>)>> = BTreeMap::new();
    for dir in dirs {
        let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
        for entry in entries {
            let path = entry.map_err(|e| Error::io(dir, e))?.path();
            let Some(file) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            if !file.ends_with(".tar") || !path.is_file() {
                continue;
            }
            let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
            joined
                .entry(file.to_string())
                .or_default()
                .extend(untar(&bytes, &path.display().to_string())?);
        }
    }
    for (file, mut members) in joined {
        let key = |name: &str| -> (usize, String) {
            let (stem, _) = name.split_once('.').unwrap_or((name, ""));
            (stem.parse().unwrap_or(usize::MAX), name.to_string())
        };
        members.sort_by_key(|(n, _)| key(n));
        write_atomic(&out.join(&file), &tar(&members)?)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tar_headers_follow_ustar() {
        let files = vec![
            ("000001.cls".to_string(), b"3".to_vec()),
            ("000001.png".to_string(), vec![7u8; 600]),
        ];
        let bytes = tar(&files).unwrap();
        // Header, 1 data block; header, 2 data blocks; 2 end blocks.
        assert_eq!(bytes.len(), 512 * 7);
        let h = &bytes[..512];
        assert_eq!(&h[..10], b"000001.cls");
        assert_eq!(&h[124..136], b"00000000001\0");
        assert_eq!(&h[257..263], b"ustar\0");
        // The checksum: the header's byte sum with the field read as 8 spaces, octal.
        let sum: u32 = h[..148]
            .iter()
            .chain(&h[156..])
            .map(|&b| u32::from(b))
            .sum::<u32>()
            + 256;
        assert_eq!(&h[148..156], format!("{sum:06o}\0 ").as_bytes());
        assert_eq!(untar(&bytes, "t.tar").unwrap(), files);
        // Damage is a typed error, never a panic.
        let mut bad = bytes.clone();
        bad[5] ^= 1;
        assert!(
            untar(&bad, "t.tar")
                .unwrap_err()
                .to_string()
                .contains("checksum")
        );
        for cut in (0..bytes.len()).step_by(97) {
            let _ = untar(&bytes[..cut], "t.tar");
        }
        assert!(header(&"x".repeat(101), 0).is_err());
    }
}
