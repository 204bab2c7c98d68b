//! SynFER's semantic guidance: in late denoising steps, predict the clean image x̂0, score it
//! with an expression classifier, and move the conditional text embedding down the gradient of
//! `L = −log p(target | x̂0)`: `c ← c − λ · g / ‖g‖₂` (per image, or per token).
//!
//! The gradient flows through the UNet (with its AU branch), the VAE decoder, a differentiable
//! copy of the classifier's preprocessing (TensorFlow `cropAndResize` of the whole image, as
//! [`FaceAnalyzer::analyze_cropped`](crate::face::analyzer::FaceAnalyzer::analyze_cropped)
//! feeds the classifiers) and the classifier, so the pipeline must live on an autodiff device
//! (`device.autodiff()`), with its modules frozen (`no_grad`): only the embedding is a leaf.

use burn::module::Module;
use burn::tensor::activation::log_softmax;
use burn::tensor::{Device, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::face::analyzer::{FER_A_BYTES, FER_B_BYTES};
use crate::face::face_api::{self, FaceApiExpression};
use crate::face::mini_xception::{self, MiniXception};
use crate::face::{CLASSES, face_api::INPUT_SIZE as FACE_API_SIZE};
use crate::fer::FerClassifier;

/// The classifier that guides.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum GuideClassifier {
    /// FER A, face-api.js' `FaceExpressionNet` (112×112 RGB).
    #[default]
    #[serde(rename = "face-api")]
    FaceApi,
    /// FER B, mini-Xception (64×64 grey).
    #[serde(rename = "mini-xception")]
    MiniXception,
    /// A classifier trained with `synfer fer train`, loaded by
    /// [`SemanticGuide::with_trained`].
    #[serde(rename = "trained")]
    Trained,
}

impl GuideClassifier {
    /// The name used in requests and reports.
    pub fn name(self) -> &'static str {
        match self {
            GuideClassifier::FaceApi => "face-api",
            GuideClassifier::MiniXception => "mini-xception",
            GuideClassifier::Trained => "trained",
        }
    }

    /// The pretrained classifier that judges images guided by this one independently
    /// (face-api's are judged by mini-Xception; the others by face-api).
    pub fn other(self) -> Self {
        match self {
            GuideClassifier::FaceApi => GuideClassifier::MiniXception,
            GuideClassifier::MiniXception | GuideClassifier::Trained => GuideClassifier::FaceApi,
        }
    }
}

impl std::str::FromStr for GuideClassifier {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "face-api" | "fer-a" => Ok(GuideClassifier::FaceApi),
            "mini-xception" | "fer-b" => Ok(GuideClassifier::MiniXception),
            "trained" => Ok(GuideClassifier::Trained),
            _ => Err(Error::request(
                "semantic_guidance.classifier",
                format!("{s:?}: expected face-api, mini-xception or trained"),
            )),
        }
    }
}

/// Semantic-guidance settings of a request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SemanticGuidance {
    /// Step size λ of the normalised update (0: off, bit-identical to no guidance).
    #[serde(default = "default_scale")]
    pub scale: f64,
    /// The guided part of the schedule, as fractions of the steps `[from, to)` (default the
    /// last 60 %: `[0.4, 1.0]`).
    #[serde(default = "default_window")]
    pub window: [f64; 2],
    /// The guiding classifier.
    #[serde(default)]
    pub classifier: GuideClassifier,
    /// Normalise the gradient per token instead of per image.
    #[serde(default)]
    pub per_token: bool,
}

fn default_scale() -> f64 {
    0.1
}
fn default_window() -> [f64; 2] {
    [0.4, 1.0]
}

impl Default for SemanticGuidance {
    fn default() -> Self {
        SemanticGuidance {
            scale: default_scale(),
            window: default_window(),
            classifier: GuideClassifier::default(),
            per_token: false,
        }
    }
}

impl SemanticGuidance {
    /// Checks the values.
    pub fn validate(&self) -> Result<()> {
        if !self.scale.is_finite() || self.scale < 0.0 {
            return Err(Error::request(
                "semantic_guidance.scale",
                format!("{} must be a finite number ≥ 0", self.scale),
            ));
        }
        let [a, b] = self.window;
        if !(0.0..=1.0).contains(&a) || !(0.0..=1.0).contains(&b) || a >= b {
            return Err(Error::request(
                "semantic_guidance.window",
                format!("[{a}, {b}]: expected 0 ≤ from < to ≤ 1"),
            ));
        }
        Ok(())
    }

    /// Whether step `i` of `total` is guided.
    pub fn guides(&self, i: usize, total: usize) -> bool {
        let f = i as f64 / total.max(1) as f64;
        self.scale > 0.0 && f >= self.window[0] && f < self.window[1]
    }
}

/// The guiding classifiers, on the pipeline's autodiff device, frozen.
#[derive(Debug)]
pub struct SemanticGuide {
    /// FER A.
    pub fer_a: FaceApiExpression,
    /// FER B.
    pub fer_b: MiniXception,
    /// A classifier trained by `synfer fer train` ([`GuideClassifier::Trained`]).
    pub trained: Option<FerClassifier>,
}

impl SemanticGuide {
    /// The embedded classifiers on `device`.
    pub fn embedded(device: &Device) -> Result<Self> {
        Self::from_bytes(FER_A_BYTES, FER_B_BYTES, device)
    }

    /// The classifiers from their safetensors files (`assets/face/` layouts) held in memory.
    pub fn from_bytes(fer_a: &[u8], fer_b: &[u8], device: &Device) -> Result<Self> {
        Ok(SemanticGuide {
            fer_a: FaceApiExpression::from_bytes("fer_a_face_api", fer_a, device)?.no_grad(),
            fer_b: MiniXception::from_bytes("fer_b_mini_xception", fer_b, device)?.no_grad(),
            trained: None,
        })
    }

    /// Adds a trained classifier (`fer.json` and `model.safetensors` bytes, as written by
    /// `synfer fer train`) for [`GuideClassifier::Trained`].
    pub fn with_trained(mut self, config: &[u8], weights: &[u8], device: &Device) -> Result<Self> {
        self.trained = Some(
            FerClassifier::from_bytes("trained classifier", config, weights, device)?.no_grad(),
        );
        Ok(self)
    }

    /// `Σᵢ −log p(targetᵢ | imageᵢ)` for RGB images `[n, 3, h, w]` in `[0, 1]`, differentiable.
    pub fn loss(
        &self,
        classifier: GuideClassifier,
        images: Tensor<4>,
        targets: &[usize],
    ) -> Result<Tensor<1>> {
        let logits = self.logits(classifier, images)?;
        let [n, k] = logits.dims();
        let device = logits.device();
        let mut onehot = vec![0f32; n * k];
        for (i, &t) in targets.iter().enumerate() {
            onehot[i * k + t] = 1.0;
        }
        let onehot = Tensor::<2>::from_data(TensorData::new(onehot, [n, k]), &device);
        Ok((log_softmax(logits, 1) * onehot).sum().neg())
    }

    /// Class logits in canonical order ([`CLASSES`]) for RGB images `[n, 3, h, w]` in `[0, 1]`.
    pub fn logits(&self, classifier: GuideClassifier, images: Tensor<4>) -> Result<Tensor<2>> {
        let nhwc = images.permute([0, 2, 3, 1]);
        match classifier {
            GuideClassifier::FaceApi => {
                let x = face_api::preprocess(resize_whole(nhwc, FACE_API_SIZE))?;
                Ok(self.fer_a.logits(x))
            }
            GuideClassifier::MiniXception => {
                let x = mini_xception::preprocess(resize_whole(nhwc, mini_xception::INPUT_SIZE))?;
                Ok(self.fer_b.canonical_logits(x))
            }
            GuideClassifier::Trained => {
                let model = self.trained.as_ref().ok_or_else(|| {
                    Error::request(
                        "semantic_guidance.classifier",
                        "\"trained\" needs a trained classifier (--sg-model, SemanticGuide::with_trained)",
                    )
                })?;
                Ok(model.canonical_logits(nhwc))
            }
        }
    }
}

/// The canonical index of an expression name.
pub fn class_index(name: &str) -> Option<usize> {
    CLASSES.iter().position(|c| *c == name)
}

/// TensorFlow `cropAndResize` of each whole image (`[n, h, w, 3]`) to `side × side`
/// (bilinear, corners aligned: source `o · (len − 1) / (side − 1)`), as two matrix products so
/// that it differentiates like any matmul.
pub fn resize_whole(images: Tensor<4>, side: usize) -> Tensor<4> {
    let [n, h, w, c] = images.dims();
    if h == side && w == side {
        return images;
    }
    let device = images.device();
    let weights = |len: usize| -> Tensor<2> {
        let mut m = vec![0f32; side * len];
        for o in 0..side {
            let v = if side > 1 {
                o as f64 * (len - 1) as f64 / (side - 1) as f64
            } else {
                0.5 * (len - 1) as f64
            };
            let lo = v.floor() as usize;
            let hi = v.ceil() as usize;
            let f = (v - lo as f64) as f32;
            m[o * len + lo] += 1.0 - f;
            m[o * len + hi.min(len - 1)] += f;
        }
        Tensor::from_data(TensorData::new(m, [side, len]), &device)
    };
    let (ry, rx) = (weights(h), weights(w));
    // Rows: [side, h] × [n, h, w·c] → [n, side, w·c].
    let rows = ry
        .unsqueeze::<3>()
        .expand([n, side, h])
        .matmul(images.reshape([n, h, w * c]));
    // Columns: [n·side, w, c] with [side, w] on the left.
    let cols = rx
        .unsqueeze::<3>()
        .expand([n * side, side, w])
        .matmul(rows.reshape([n * side, w, c]));
    cols.reshape([n, side, side, c])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::face::analyzer::{RgbView, crop_and_resize};

    #[test]
    fn resize_matches_the_analyzers_crop_and_resize() {
        let device = Device::flex();
        let (w, h) = (5usize, 4usize);
        let pixels: Vec<u8> = (0..w * h * 3).map(|i| (i * 37 % 251) as u8).collect();
        let want = crop_and_resize(
            RgbView::new(w, h, &pixels).unwrap(),
            [0.0, 0.0, w as f64, h as f64],
            7,
        );
        let x = Tensor::<4>::from_data(
            TensorData::new(pixels.iter().map(|v| f32::from(*v)).collect(), [1, h, w, 3]),
            &device,
        );
        let got: Vec<f32> = resize_whole(x, 7).into_data().try_into_vec_as().unwrap();
        assert_eq!(got.len(), want.len());
        for (a, b) in got.iter().zip(&want) {
            assert!((a - b).abs() < 1e-3, "{a} vs {b}");
        }
    }
}
