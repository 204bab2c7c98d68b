//! The judge's view of one aligned crop: does it show a face, and what do the classifiers
//! read in it. `synfer eval`, `synfer data audit` and rectification all measure images this
//! way, so their numbers are comparable.

use crate::error::Result;
use crate::face::analyzer::{FaceAnalyzer, FaceReport};
use crate::image::RgbView;

/// [`face_score`] above which an image counts as showing a face. On 64×64 crops the
/// dataset builder aligned (real and GAN faces) BlazeFace scores 0.50–0.94 (median 0.86, 20
/// images); on untrained-model noise 0.20–0.47.
pub const FACE_THRESHOLD: f32 = 0.5;

/// How face-like an aligned `side`² crop is: BlazeFace's best detection score with the crop
/// centred on a mid-grey canvas twice its size (the detector expects context around a face),
/// 0 when nothing is detected.
pub fn face_score(analyzer: &FaceAnalyzer, side: usize, rgb: &[u8]) -> Result<f32> {
    let big = 2 * side;
    let mut canvas = vec![128u8; big * big * 3];
    let off = side / 2;
    for y in 0..side {
        let dst = ((y + off) * big + off) * 3;
        canvas[dst..dst + side * 3].copy_from_slice(&rgb[y * side * 3..(y + 1) * side * 3]);
    }
    let faces = analyzer.analyze(RgbView::new(big, big, &canvas)?)?;
    Ok(faces
        .iter()
        .filter_map(|f| f.detector_score)
        .fold(0.0, f32::max))
}

/// How `synfer eval` sees one aligned `side`² crop: its [`face_score`] and the full analysis,
/// whose mini-Xception label is the judge's verdict (also used by `synfer data audit`).
pub fn judge(analyzer: &FaceAnalyzer, side: usize, rgb: &[u8]) -> Result<(f32, FaceReport)> {
    let score = face_score(analyzer, side, rgb)?;
    let report = analyzer.analyze_cropped(RgbView::new(side, side, rgb)?)?;
    Ok((score, report))
}
