//! Datasets: synfer's own format ([`metadata`]) and the layouts published FER datasets come
//! in, listed as labelled items ([`list`]) and decoded to one square size in memory
//! ([`images`]).
//!
//! [`list`] recognises, for a path:
//! - **synfer** — a folder with `metadata.jsonl` (`synfer synth` output or a `synfer data build`
//!   folder): `file_name` + `label` (or `expression`), optional `split`;
//! - **FER2013** — `fer2013.csv` (or a folder holding it): `emotion` (0–6), `pixels` (48×48 grey,
//!   space-separated), `Usage` (`Training` → train, `PublicTest` → val, `PrivateTest` → test);
//! - **RAF-DB basic** — a folder with `list_patition_label.txt` (or `EmoLabel/…`): lines
//!   `train_00001.jpg 5`, images in `Image/aligned/train_00001_aligned.jpg` (or `aligned/`,
//!   `Image/original/`, the folder itself); split from the name prefix;
//! - **AffectNet** — a CSV with an `expression` column (or a folder with `training.csv` /
//!   `validation.csv`): the image path column is `subDirectory_filePath`, `pth`, `path`,
//!   `file_name` or `image`, relative to the CSV's folder or its `Manually_Annotated_Images/`;
//!   `face_x, face_y, face_width, face_height` crop the face when present;
//! - **ImageFolder** — `<class>/<image>` or `<split>/<class>/<image>` (torchvision).
//!
//! Class names and codes map to the canonical classes as [`crate::expression`] documents. Items
//! with no split are used whatever split is asked for.

pub mod csv;
pub mod folder;
#[cfg(not(target_family = "wasm"))]
pub mod images;
pub mod metadata;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::expression::{canonical_index, class_names};

#[cfg(not(target_family = "wasm"))]
pub use images::{LabelledImages, SplitChoice};

/// A published dataset layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Layout {
    /// `metadata.jsonl` (synfer).
    Synfer,
    /// FER2013 CSV.
    Fer2013,
    /// RAF-DB basic.
    RafDb,
    /// AffectNet CSV.
    AffectNet,
    /// torchvision ImageFolder.
    ImageFolder,
}

/// Where an item's pixels are.
#[derive(Debug, Clone, PartialEq)]
pub enum ItemSource {
    /// An image file, optionally cropped to `[x, y, w, h]` first.
    File {
        /// The file.
        path: PathBuf,
        /// Face box in pixels.
        crop: Option<[u32; 4]>,
    },
    /// Grey pixels held inline (FER2013), `side × side`.
    Grey {
        /// Side in pixels.
        side: usize,
        /// Row-major grey values.
        pixels: Vec<u8>,
    },
}

/// One labelled image of a listing.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    /// Its pixels.
    pub source: ItemSource,
    /// Canonical class index (0–7, see [`NAMES`](crate::expression::NAMES)).
    pub label: usize,
    /// Normalised split (`train`, `val`, `test`), if the layout has one.
    pub split: Option<String>,
    /// A name for reports (relative path or row).
    pub id: String,
    /// synfer pseudo-labels: the ensemble probability of the label (`confidence`) and whether
    /// every classifier's argmax is the label.
    pub pseudo: Option<PseudoLabel>,
    /// How sure the labeller was (`metadata.jsonl`'s `confidence`, real or synthetic); `None`
    /// for the published layouts, whose labels are human.
    pub label_confidence: Option<f32>,
}

/// How sure synfer's pseudo-label generator was of an item's label.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PseudoLabel {
    /// Ensemble probability of the label.
    pub confidence: f32,
    /// Every classifier (face-api, mini-Xception, voters) predicts the label.
    pub consensus: bool,
}

/// The items of one dataset path.
#[derive(Debug, Clone)]
pub struct Listing {
    /// The path given.
    pub root: PathBuf,
    /// Its layout.
    pub layout: Layout,
    /// Whether it is synfer's synthetic output (`synfer synth`).
    pub synthetic: bool,
    /// The items, in file order.
    pub items: Vec<Item>,
    /// Rows that are not expressions (AffectNet codes 8–10), by reason.
    pub skipped: BTreeMap<String, usize>,
}

impl Listing {
    /// Drops pseudo-labelled items whose confidence is below `min_confidence` or, with
    /// `consensus`, on which the classifiers disagree; items without pseudo-label information
    /// (real sets) stay. Counts the drops in `skipped`.
    pub fn filter_pseudo_labels(&mut self, min_confidence: f32, consensus: bool) {
        let before = self.items.len();
        let mut low = 0;
        self.items.retain(|item| match item.pseudo {
            Some(p) if p.confidence < min_confidence => {
                low += 1;
                false
            }
            Some(p) => p.consensus || !consensus,
            None => true,
        });
        let disagree = before - self.items.len() - low;
        for (reason, n) in [("low confidence", low), ("no consensus", disagree)] {
            if n > 0 {
                *self.skipped.entry(reason.to_string()).or_default() += n;
            }
        }
    }
}

/// Normalises a split name (`Training`, `PublicTest`, `valid`, …) to `train`, `val` or `test`.
pub fn normalise_split(name: &str) -> Option<String> {
    let s = match name.trim().to_ascii_lowercase().as_str() {
        "train" | "training" => "train",
        "val" | "valid" | "validation" | "publictest" | "dev" => "val",
        "test" | "testing" | "privatetest" => "test",
        _ => return None,
    };
    Some(s.to_string())
}

/// Lists the labelled items of `path`, recognising its layout (see the module docs).
pub fn list(path: &Path) -> Result<Listing> {
    if path.is_file() {
        return csv::list_csv(path);
    }
    if !path.is_dir() {
        return Err(Error::dataset(
            path.display(),
            "path",
            "no such file or folder",
        ));
    }
    if path.join(metadata::FILE).is_file() {
        return list_synfer(path);
    }
    for list in [
        "list_patition_label.txt",
        "EmoLabel/list_patition_label.txt",
    ] {
        if path.join(list).is_file() {
            return folder::list_raf(path, &path.join(list));
        }
    }
    for csv in ["fer2013.csv", "fer2013/fer2013.csv"] {
        if path.join(csv).is_file() {
            let mut listing = csv::list_csv(&path.join(csv))?;
            listing.root = path.to_path_buf();
            return Ok(listing);
        }
    }
    let affectnet: Vec<PathBuf> = ["training.csv", "validation.csv"]
        .iter()
        .map(|f| path.join(f))
        .filter(|p| p.is_file())
        .collect();
    if !affectnet.is_empty() {
        let mut merged: Option<Listing> = None;
        for csv in affectnet {
            let part = csv::list_csv(&csv)?;
            match merged.as_mut() {
                None => merged = Some(part),
                Some(m) => {
                    m.items.extend(part.items);
                    for (k, v) in part.skipped {
                        *m.skipped.entry(k).or_default() += v;
                    }
                }
            }
        }
        let mut listing = merged.expect("at least one CSV");
        listing.root = path.to_path_buf();
        return Ok(listing);
    }
    folder::list_image_folder(path)
}

/// The whole file as text (errors name it).
pub(crate) fn read_text(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| Error::io(path, e))
}

/// The canonical class of a name or alias; an unknown one is an error naming the file and
/// place.
pub(crate) fn class_of(name: &str, file: &Path, at: impl FnOnce() -> String) -> Result<usize> {
    canonical_index(name).ok_or_else(|| {
        Error::dataset(
            file.display(),
            at(),
            format!(
                "unknown class {name:?} (expected one of {} or an alias, see synfer::expression)",
                class_names(true).join(", ")
            ),
        )
    })
}

/// Lists a folder in synfer's own format ([`metadata`]).
fn list_synfer(dir: &Path) -> Result<Listing> {
    let file = dir.join(metadata::FILE);
    let records = metadata::parse(&read_text(&file)?, &file.display().to_string())?;
    let mut synthetic = dir.join("manifest.jsonl").is_file();
    let mut items = Vec::with_capacity(records.len());
    for (i, r) in records.iter().enumerate() {
        synthetic |= r.requested.is_some();
        items.push(Item {
            source: ItemSource::File {
                path: dir.join(&r.file_name),
                crop: None,
            },
            label: class_of(&r.label, &file, || format!("record {}", i + 1))?,
            split: r.split.as_deref().and_then(normalise_split),
            id: r.file_name.clone(),
            pseudo: pseudo_label(r),
            label_confidence: Some(r.label_probability()),
        });
    }
    Ok(Listing {
        root: dir.to_path_buf(),
        layout: Layout::Synfer,
        synthetic,
        items,
        skipped: BTreeMap::new(),
    })
}

/// The pseudo-label information of a synthetic image's record (`requested`, `confidence` and
/// per-classifier `probs`): its confidence, and whether every classifier (not the ensemble)
/// predicts its label.
fn pseudo_label(r: &metadata::Record) -> Option<PseudoLabel> {
    r.requested.as_ref()?;
    let confidence = r.confidence?;
    let consensus = r
        .probs
        .iter()
        .filter(|(name, _)| name.as_str() != "ensemble")
        .all(|(_, p)| {
            p.iter()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .is_some_and(|(c, _)| *c == r.label)
        });
    Some(PseudoLabel {
        confidence,
        consensus,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_names_normalise() {
        assert_eq!(normalise_split("Training").as_deref(), Some("train"));
        assert_eq!(normalise_split("PublicTest").as_deref(), Some("val"));
        assert_eq!(normalise_split("PrivateTest").as_deref(), Some("test"));
        assert_eq!(normalise_split("other"), None);
    }
}
