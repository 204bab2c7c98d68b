//! Labelled face images from the layouts FER datasets are published in, decoded to one square
//! size in memory.
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
//! Class names and codes map to the canonical classes as [`super::classes`] documents. Items
//! with no split are used whatever split is asked for.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::classes::{AFFECTNET, FER2013, RAF_DB, canonical_index, class_names};
use crate::error::{Error, Result};
use crate::files::IMAGE_EXTENSIONS;

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
    /// Canonical class index (0–7, see [`super::classes::CANONICAL`]).
    pub label: usize,
    /// Normalised split (`train`, `val`, `test`), if the layout has one.
    pub split: Option<String>,
    /// A name for reports (relative path or row).
    pub id: String,
    /// synfer pseudo-labels: the ensemble probability of the label (`confidence`) and whether
    /// every classifier's argmax is the label.
    pub pseudo: Option<PseudoLabel>,
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

/// The pseudo-label information of a synfer metadata line, when it has `confidence` and
/// per-classifier `probs`.
fn pseudo_label(v: &serde_json::Value, label: &str) -> Option<PseudoLabel> {
    let confidence = v.get("confidence")?.as_f64()? as f32;
    let probs = v.get("probs")?.as_object()?;
    let consensus = probs
        .iter()
        .filter(|(name, _)| name.as_str() != "ensemble")
        .all(|(_, p)| {
            p.as_object()
                .and_then(|m| {
                    m.iter()
                        .filter_map(|(c, x)| Some((c, x.as_f64()?)))
                        .max_by(|a, b| a.1.total_cmp(&b.1))
                })
                .is_some_and(|(c, _)| c == label)
        });
    Some(PseudoLabel {
        confidence,
        consensus,
    })
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
        return list_csv(path);
    }
    if !path.is_dir() {
        return Err(Error::dataset(
            path.display(),
            "path",
            "no such file or folder",
        ));
    }
    if path.join("metadata.jsonl").is_file() {
        return list_synfer(path);
    }
    for list in [
        "list_patition_label.txt",
        "EmoLabel/list_patition_label.txt",
    ] {
        if path.join(list).is_file() {
            return list_raf(path, &path.join(list));
        }
    }
    for csv in ["fer2013.csv", "fer2013/fer2013.csv"] {
        if path.join(csv).is_file() {
            let mut listing = list_csv(&path.join(csv))?;
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
            let part = list_csv(&csv)?;
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
    list_image_folder(path)
}

fn read_text(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| Error::io(path, e))
}

fn class_of(name: &str, file: &Path, at: impl FnOnce() -> String) -> Result<usize> {
    canonical_index(name).ok_or_else(|| {
        Error::dataset(
            file.display(),
            at(),
            format!(
                "unknown class {name:?} (expected one of {} or an alias, see synfer::fer::classes)",
                class_names(true).join(", ")
            ),
        )
    })
}

fn list_synfer(dir: &Path) -> Result<Listing> {
    let file = dir.join("metadata.jsonl");
    let text = read_text(&file)?;
    let mut items = Vec::new();
    let mut synthetic = dir.join("manifest.jsonl").is_file();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let at = || format!("line {}", i + 1);
        let v: serde_json::Value = serde_json::from_str(line)
            .map_err(|e| Error::dataset(file.display(), at(), e.to_string()))?;
        let field = |k: &str| v.get(k).and_then(|x| x.as_str());
        let name = field("file_name")
            .ok_or_else(|| Error::dataset(file.display(), at(), "no `file_name` string"))?;
        let label = field("label")
            .or_else(|| field("expression"))
            .ok_or_else(|| Error::dataset(file.display(), at(), "no `label` or `expression`"))?;
        synthetic |= v.get("requested").is_some();
        items.push(Item {
            source: ItemSource::File {
                path: dir.join(name),
                crop: None,
            },
            label: class_of(label, &file, at)?,
            split: field("split").and_then(normalise_split),
            id: name.to_string(),
            pseudo: pseudo_label(&v, label),
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

fn list_raf(root: &Path, list: &Path) -> Result<Listing> {
    let text = read_text(list)?;
    let candidates: [(&str, bool); 4] = [
        ("Image/aligned", true),
        ("aligned", true),
        ("Image/original", false),
        ("", false),
    ];
    let (dir, aligned) = candidates
        .iter()
        .map(|(d, a)| (root.join(d), *a))
        .find(|(d, _)| d.is_dir())
        .expect("the root itself is a folder");
    let mut items = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let mut parts = line.split_whitespace();
        let (Some(name), Some(code)) = (parts.next(), parts.next()) else {
            if line.trim().is_empty() {
                continue;
            }
            return Err(Error::dataset(
                list.display(),
                format!("line {}", i + 1),
                format!("{line:?}: expected `<image> <label 1–7>`"),
            ));
        };
        let label = code
            .parse::<usize>()
            .ok()
            .filter(|c| (1..=7).contains(c))
            .ok_or_else(|| {
                Error::dataset(
                    list.display(),
                    format!("line {}", i + 1),
                    format!("label {code:?} is not 1–7"),
                )
            })?;
        let file = if aligned {
            let stem = name.rsplit_once('.').map_or(name, |(s, _)| s);
            format!("{stem}_aligned.jpg")
        } else {
            name.to_string()
        };
        let split = name.split('_').next().and_then(normalise_split);
        items.push(Item {
            source: ItemSource::File {
                path: dir.join(&file),
                crop: None,
            },
            label: RAF_DB[label - 1],
            split,
            id: name.to_string(),
            pseudo: None,
        });
    }
    Ok(Listing {
        root: root.to_path_buf(),
        layout: Layout::RafDb,
        synthetic: false,
        items,
        skipped: BTreeMap::new(),
    })
}

/// Splits one CSV line into fields (double quotes group commas; `""` is a quote).
fn csv_fields(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            ('"', _) => quoted = !quoted,
            (',', false) => out.push(std::mem::take(&mut field)),
            _ => field.push(c),
        }
    }
    out.push(field);
    out
}

/// One data line of a CSV file: its fields and where it is (for errors).
struct CsvRow<'a> {
    file: &'a Path,
    line: usize,
    fields: Vec<String>,
}

impl CsvRow<'_> {
    /// `line N` (1-based, the header is line 1).
    fn at(&self) -> String {
        format!("line {}", self.line + 1)
    }

    /// Field `c`, trimmed.
    fn get(&self, c: usize) -> Result<&str> {
        self.fields
            .get(c)
            .map(|s| s.trim())
            .ok_or_else(|| self.error("too few fields".into()))
    }

    fn error(&self, message: String) -> Error {
        Error::dataset(self.file.display(), self.at(), message)
    }
}

fn list_csv(file: &Path) -> Result<Listing> {
    let text = read_text(file)?;
    let mut lines = text.lines().enumerate();
    let header = lines
        .next()
        .map(|(_, h)| csv_fields(h.trim_start_matches('\u{feff}')))
        .unwrap_or_default();
    let column = |names: &[&str]| {
        header
            .iter()
            .position(|h| names.iter().any(|n| h.trim().eq_ignore_ascii_case(n)))
    };
    let missing = |what: &str| {
        Error::dataset(
            file.display(),
            "header",
            format!("no {what} column (header: {})", header.join(",")),
        )
    };
    let rows = lines
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(line, l)| CsvRow {
            file,
            line,
            fields: csv_fields(l),
        });
    let dir = file.parent().unwrap_or(Path::new("."));
    let mut items = Vec::new();
    let mut skipped = BTreeMap::new();
    if let (Some(emotion), Some(pixels)) = (column(&["emotion"]), column(&["pixels"])) {
        let usage = column(&["usage"]);
        for row in rows {
            let code = row.get(emotion)?;
            let label = code
                .parse::<usize>()
                .ok()
                .filter(|c| *c < 7)
                .ok_or_else(|| row.error(format!("emotion {code:?} is not 0–6")))?;
            let values = row
                .get(pixels)?
                .split_whitespace()
                .map(|v| v.parse::<u8>())
                .collect::<std::result::Result<Vec<u8>, _>>()
                .map_err(|e| row.error(format!("pixels: {e}")))?;
            let side = (values.len() as f64).sqrt() as usize;
            if side == 0 || side * side != values.len() {
                return Err(row.error(format!("{} pixels are not a square image", values.len())));
            }
            let split = usage
                .and_then(|c| row.get(c).ok())
                .and_then(normalise_split);
            items.push(Item {
                source: ItemSource::Grey {
                    side,
                    pixels: values,
                },
                label: FER2013[label],
                split,
                id: format!("row{}", row.line),
                pseudo: None,
            });
        }
        return Ok(Listing {
            root: file.to_path_buf(),
            layout: Layout::Fer2013,
            synthetic: false,
            items,
            skipped,
        });
    }
    let expression = column(&["expression"]).ok_or_else(|| missing("`expression` or `emotion`"))?;
    let path_col = column(&["subDirectory_filePath", "pth", "path", "file_name", "image"])
        .ok_or_else(|| {
            missing("image path (subDirectory_filePath, pth, path, file_name, image)")
        })?;
    let boxes = [
        column(&["face_x"]),
        column(&["face_y"]),
        column(&["face_width"]),
        column(&["face_height"]),
    ];
    let image_root = [
        "Manually_Annotated_Images",
        "../Manually_Annotated_Images",
        "",
    ]
    .iter()
    .map(|d| dir.join(d))
    .find(|d| d.is_dir())
    .unwrap_or_else(|| dir.to_path_buf());
    let stem = file.file_stem().and_then(|s| s.to_str()).unwrap_or("");
    let split = normalise_split(stem);
    for row in rows {
        let value = row.get(expression)?;
        let label = match value.parse::<usize>() {
            Ok(code) if code < AFFECTNET.len() => AFFECTNET[code],
            Ok(code @ 8..=10) => {
                let reason = ["none", "uncertain", "non-face"][code - 8];
                *skipped.entry(reason.to_string()).or_default() += 1;
                continue;
            }
            Ok(code) => return Err(row.error(format!("expression {code} is not 0–10"))),
            Err(_) => class_of(value, file, || row.at())?,
        };
        let crop = match boxes {
            [Some(x), Some(y), Some(w), Some(h)] => {
                let n = |c: usize| -> Result<u32> {
                    let s = row.get(c)?;
                    s.parse::<f64>()
                        .ok()
                        .filter(|v| v.is_finite() && *v >= 0.0)
                        .map(|v| v as u32)
                        .ok_or_else(|| row.error(format!("face box value {s:?}")))
                };
                Some([n(x)?, n(y)?, n(w)?, n(h)?]).filter(|b| b[2] > 0 && b[3] > 0)
            }
            _ => None,
        };
        let rel = row.get(path_col)?;
        items.push(Item {
            source: ItemSource::File {
                path: image_root.join(rel),
                crop,
            },
            label,
            split: split.clone(),
            id: rel.to_string(),
            pseudo: None,
        });
    }
    Ok(Listing {
        root: file.to_path_buf(),
        layout: Layout::AffectNet,
        synthetic: false,
        items,
        skipped,
    })
}

fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            !p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with('.'))
        })
        .collect();
    out.sort();
    Ok(out)
}

fn name_of(p: &Path) -> String {
    p.file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("")
        .to_string()
}

fn list_image_folder(root: &Path) -> Result<Listing> {
    let dirs: Vec<PathBuf> = sorted_entries(root)?
        .into_iter()
        .filter(|p| p.is_dir())
        .collect();
    if dirs.is_empty() {
        return Err(Error::dataset(
            root.display(),
            "layout",
            "not a dataset: no metadata.jsonl, list_patition_label.txt, fer2013.csv, \
             training.csv/validation.csv or class sub-folders",
        ));
    }
    let by_split = dirs.iter().all(|d| normalise_split(&name_of(d)).is_some());
    let groups: Vec<(Option<String>, PathBuf)> = if by_split {
        dirs.iter()
            .map(|d| (normalise_split(&name_of(d)), d.clone()))
            .collect()
    } else {
        vec![(None, root.to_path_buf())]
    };
    let mut items = Vec::new();
    for (split, dir) in groups {
        for class_dir in sorted_entries(&dir)?.into_iter().filter(|p| p.is_dir()) {
            let name = name_of(&class_dir);
            let label = class_of(&name, &dir, || format!("sub-folder {name:?}"))?;
            for file in sorted_entries(&class_dir)? {
                let ext = file
                    .extension()
                    .and_then(|e| e.to_str())
                    .map(|e| e.to_ascii_lowercase());
                if !ext.is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.as_str())) {
                    continue;
                }
                let id = file
                    .strip_prefix(root)
                    .unwrap_or(&file)
                    .display()
                    .to_string();
                items.push(Item {
                    source: ItemSource::File {
                        path: file,
                        crop: None,
                    },
                    label,
                    split: split.clone(),
                    id,
                    pseudo: None,
                });
            }
        }
    }
    Ok(Listing {
        root: root.to_path_buf(),
        layout: Layout::ImageFolder,
        synthetic: false,
        items,
        skipped: BTreeMap::new(),
    })
}

/// Decoded images of one or more listings, all `side × side` RGB.
#[derive(Debug, Clone, Default)]
pub struct LabelledImages {
    /// Image side.
    pub side: usize,
    /// RGB bytes, `side²·3` per image.
    pub pixels: Vec<u8>,
    /// Class index into `classes`.
    pub labels: Vec<usize>,
    /// Whether each image is synthetic (from a `synfer synth` folder).
    pub synthetic: Vec<bool>,
    /// Item names.
    pub ids: Vec<String>,
    /// Class names (7 or 8).
    pub classes: Vec<String>,
    /// Items left out, by reason (other split, contempt in a 7-class set, non-expressions).
    pub skipped: BTreeMap<String, usize>,
}

/// Which split to take from layouts that have one (`None`: all of them).
pub type SplitChoice<'a> = Option<&'a str>;

impl LabelledImages {
    /// Decodes the items of `listings` in `split` (items without a split always count) at
    /// `side × side` (centre square crop, then a triangle-filter resize).
    pub fn decode(
        listings: &[Listing],
        split: SplitChoice,
        side: usize,
        contempt: bool,
    ) -> Result<Self> {
        let classes = class_names(contempt);
        let mut out = LabelledImages {
            side,
            classes,
            ..Default::default()
        };
        let mut chosen: Vec<(&Item, bool)> = Vec::new();
        for l in listings {
            for (k, v) in &l.skipped {
                *out.skipped.entry(k.clone()).or_default() += v;
            }
            for item in &l.items {
                if let (Some(want), Some(have)) = (split, item.split.as_deref())
                    && want != have
                {
                    *out.skipped.entry(format!("split {have}")).or_default() += 1;
                    continue;
                }
                if item.label >= out.classes.len() {
                    *out.skipped.entry("contempt".into()).or_default() += 1;
                    continue;
                }
                chosen.push((item, l.synthetic));
            }
        }
        let per = side * side * 3;
        out.pixels = vec![0u8; chosen.len() * per];
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .clamp(1, 8);
        let chunk = chosen.len().div_ceil(threads).max(1);
        let results: Vec<Result<()>> = std::thread::scope(|s| {
            let handles: Vec<_> = out
                .pixels
                .chunks_mut(chunk * per)
                .zip(chosen.chunks(chunk))
                .map(|(dst, items)| {
                    s.spawn(move || {
                        for ((item, _), d) in items.iter().zip(dst.chunks_exact_mut(per)) {
                            d.copy_from_slice(&decode_item(item, side)?);
                        }
                        Ok(())
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(Error::Device("decoder thread panicked".into())))
                })
                .collect()
        });
        results.into_iter().collect::<Result<Vec<()>>>()?;
        for (item, synthetic) in chosen {
            out.labels.push(item.label);
            out.synthetic.push(synthetic);
            out.ids.push(item.id.clone());
        }
        Ok(out)
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The RGB bytes of image `i`.
    pub fn image(&self, i: usize) -> &[u8] {
        let per = self.side * self.side * 3;
        &self.pixels[i * per..(i + 1) * per]
    }

    /// Images per class.
    pub fn class_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.classes.len()];
        for &l in &self.labels {
            counts[l] += 1;
        }
        counts
    }
}

/// Decodes one item to `side × side` RGB bytes.
pub fn decode_item(item: &Item, side: usize) -> Result<Vec<u8>> {
    let rgb = match &item.source {
        ItemSource::Grey { side: s, pixels } => {
            let grey = image::GrayImage::from_raw(*s as u32, *s as u32, pixels.clone())
                .ok_or_else(|| Error::dataset(&item.id, "pixels", "wrong pixel count"))?;
            image::DynamicImage::ImageLuma8(grey).to_rgb8()
        }
        ItemSource::File { path, crop } => {
            let img = image::open(path)
                .map_err(|e| Error::Image {
                    file: path.display().to_string(),
                    message: e.to_string(),
                })?
                .to_rgb8();
            match crop {
                Some([x, y, w, h]) => {
                    let (iw, ih) = img.dimensions();
                    let x = (*x).min(iw.saturating_sub(1));
                    let y = (*y).min(ih.saturating_sub(1));
                    let w = (*w).min(iw - x).max(1);
                    let h = (*h).min(ih - y).max(1);
                    image::imageops::crop_imm(&img, x, y, w, h).to_image()
                }
                None => img,
            }
        }
    };
    Ok(square_resize(&rgb, side))
}

/// Centre square crop, then a triangle-filter resize to `side × side`.
pub fn square_resize(img: &image::RgbImage, side: usize) -> Vec<u8> {
    let (w, h) = img.dimensions();
    let s = w.min(h).max(1);
    let square = image::imageops::crop_imm(img, (w - s) / 2, (h - s) / 2, s, s).to_image();
    if s as usize == side {
        return square.into_raw();
    }
    image::imageops::resize(
        &square,
        side as u32,
        side as u32,
        image::imageops::FilterType::Triangle,
    )
    .into_raw()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_respect_quotes() {
        assert_eq!(
            csv_fields(r#"a,"b,c",d"e""#),
            vec!["a".to_string(), "b,c".into(), "de".into()]
        );
        assert_eq!(
            csv_fields(r#""x""y",z"#),
            vec![r#"x"y"#.to_string(), "z".into()]
        );
    }

    #[test]
    fn split_names_normalise() {
        assert_eq!(normalise_split("Training").as_deref(), Some("train"));
        assert_eq!(normalise_split("PublicTest").as_deref(), Some("val"));
        assert_eq!(normalise_split("PrivateTest").as_deref(), Some("test"));
        assert_eq!(normalise_split("other"), None);
    }
}
