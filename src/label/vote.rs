//! The mirror vote: how the training data is labelled. face-api.js (FER A) reads the image and
//! its mirror image and their probabilities are averaged; the AU estimator's readings of both
//! views are averaged too. mini-Xception is kept out of it, so that it stays an independent
//! judge of what a model trained on these labels generates.

use crate::au::{AuVector, FINEFACE};
use crate::error::Result;
use crate::expression::{Expression, Probs, argmax, average};
use crate::face::analyzer::{FaceAnalyzer, FaceReport};
use crate::image::{RgbView, mirror};

/// What [`mirror_vote`] measured on one image.
#[derive(Debug, Clone)]
pub struct Label {
    /// Vote of face-api.js over the image and its mirror (canonical class order).
    pub probs: Probs,
    /// Argmax of `probs`.
    pub expression: Expression,
    /// Mean AU estimate over both views.
    pub aus: AuVector,
    /// The analysis of the image itself (landmarks, both classifiers).
    pub report: FaceReport,
}

/// Labels an aligned face crop (`side`² RGB): face-api's probabilities averaged over the image
/// and its mirror image, AUs averaged over both views. The training data's labeller, also used
/// to measure AUs of generated images in `synfer eval`.
pub fn mirror_vote(analyzer: &FaceAnalyzer, side: usize, rgb: &[u8]) -> Result<Label> {
    let view = RgbView::new(side, side, rgb)?;
    let report = analyzer.analyze_cropped(view)?;
    let flipped = mirror(side, side, rgb);
    let other = analyzer.analyze_cropped(RgbView::new(side, side, &flipped)?)?;
    let probs = average(&[
        report.expression.face_api.probs,
        other.expression.face_api.probs,
    ]);
    let expression = Expression::from_index(argmax(&probs)).unwrap_or(Expression::Neutral);
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
