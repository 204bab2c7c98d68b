//! SynFER's semantic guidance: in late denoising steps, predict the clean image x̂0, score it
//! with an expression classifier, and move the conditional text embedding down the gradient of
//! `L = −log p(target | x̂0)`: `c ← c − λ · g / ‖g‖₂` (per image, or per token).
//!
//! The gradient flows through the UNet (with its AU branch), the VAE decoder, a differentiable
//! copy of the classifier's preprocessing (TensorFlow `cropAndResize` of the whole image, as
//! [`FaceAnalyzer::analyze_cropped`](crate::face::analyzer::FaceAnalyzer::analyze_cropped)
//! feeds the classifiers) and the classifier, so the pipeline must live on an autodiff device
//! (`device.autodiff()`), with its modules frozen (`no_grad`): only the embedding is a leaf.
//!
//! The algorithm is here ([`SemanticGuider::update`], [`SemanticGuider::gradient`]); the
//! generation loop supplies the differentiable map from a text context to the decoded `x̂0`
//! of the current step (UNet, classifier-free combination, the scheduler's
//! `pred_original_sample`, VAE decoder).

use burn::module::Module;
use burn::tensor::activation::log_softmax;
use burn::tensor::{Device, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::expression::Expression;
use crate::face::analyzer::{FER_A_BYTES, FER_B_BYTES};
use crate::face::face_api::INPUT_SIZE as FACE_API_SIZE;
use crate::face::face_api::{self, FaceApiExpression};
use crate::face::mini_xception::{self, MiniXception};
use crate::fer::FerClassifier;
use crate::image::resize_whole;

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
    /// [`SemanticGuider::with_trained`].
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

    /// Settings from command-line flags: strength `scale`, window `FROM:TO`, classifier name
    /// (default `trained` when a trained classifier is given, else face-api), per-token
    /// normalisation; validated.
    pub fn from_flags(
        scale: f64,
        window: Option<&str>,
        classifier: Option<&str>,
        per_token: bool,
        trained: bool,
    ) -> Result<Self> {
        let mut sg = SemanticGuidance {
            scale,
            per_token,
            ..SemanticGuidance::default()
        };
        if let Some(w) = window {
            let parsed = w
                .split_once(':')
                .and_then(|(a, b)| Some([a.trim().parse().ok()?, b.trim().parse().ok()?]));
            sg.window = parsed.ok_or_else(|| {
                Error::request(
                    "sg-window",
                    format!("{w:?}: expected FROM:TO, e.g. 0.4:1.0"),
                )
            })?;
        }
        if trained {
            sg.classifier = GuideClassifier::Trained;
        }
        if let Some(c) = classifier {
            sg.classifier = c.parse()?;
        }
        sg.validate()?;
        Ok(sg)
    }

    /// Whether step `i` of `total` is guided.
    pub fn guides(&self, i: usize, total: usize) -> bool {
        let f = i as f64 / total.max(1) as f64;
        self.scale > 0.0 && f >= self.window[0] && f < self.window[1]
    }
}

/// The semantic-guidance flags of the command line.
#[derive(Debug, Clone, Default)]
#[cfg_attr(feature = "native", derive(clap::Args))]
pub struct SemanticFlags {
    /// Semantic guidance strength λ toward `--expression` (SynFER; 0.1 is the paper's scale).
    #[cfg_attr(feature = "native", arg(long))]
    pub semantic_guidance: Option<f64>,
    /// Guided part of the schedule as fractions `FROM:TO` (default 0.4:1.0, the last 60 %).
    #[cfg_attr(feature = "native", arg(long, requires = "semantic_guidance"))]
    pub sg_window: Option<String>,
    /// Classifier whose gradient guides: face-api (default), mini-xception, or trained (a
    /// classifier trained with `synfer fer train`, the default when one is given).
    #[cfg_attr(feature = "native", arg(long, requires = "semantic_guidance"))]
    pub sg_classifier: Option<String>,
    /// Normalise the guidance gradient per token instead of per image.
    #[cfg_attr(feature = "native", arg(long, requires = "semantic_guidance"))]
    pub sg_per_token: bool,
}

impl SemanticFlags {
    /// The settings these flags ask for (`None`: no guidance); `trained`: a trained classifier
    /// is given.
    pub fn settings(&self, trained: bool) -> Result<Option<SemanticGuidance>> {
        self.semantic_guidance
            .map(|scale| {
                SemanticGuidance::from_flags(
                    scale,
                    self.sg_window.as_deref(),
                    self.sg_classifier.as_deref(),
                    self.sg_per_token,
                    trained,
                )
            })
            .transpose()
    }
}

/// The guider: the guiding classifiers (on the pipeline's autodiff device, frozen) and the
/// algorithm that moves the text embedding with them. Generation calls it in the guided
/// window ([`SemanticGuidance::guides`]) through [`SemanticGuider::update`].
#[derive(Debug)]
pub struct SemanticGuider {
    /// FER A.
    pub fer_a: FaceApiExpression,
    /// FER B.
    pub fer_b: MiniXception,
    /// A classifier trained by `synfer fer train` ([`GuideClassifier::Trained`]).
    pub trained: Option<FerClassifier>,
}

impl SemanticGuider {
    /// The embedded classifiers on `device`.
    pub fn embedded(device: &Device) -> Result<Self> {
        Self::from_bytes(FER_A_BYTES, FER_B_BYTES, device)
    }

    /// The classifiers from their safetensors files (`assets/face/` layouts) held in memory.
    pub fn from_bytes(fer_a: &[u8], fer_b: &[u8], device: &Device) -> Result<Self> {
        Ok(SemanticGuider {
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

    /// The target class of every image of a batch: `(expression, images)` per request. Every
    /// request needs one of the seven classes the classifiers know.
    pub fn targets(
        requests: impl IntoIterator<Item = (Option<Expression>, usize)>,
    ) -> Result<Vec<usize>> {
        let mut targets = Vec::new();
        for (expression, images) in requests {
            let class = expression
                .map(Expression::index)
                .filter(|&i| i < 7)
                .ok_or_else(|| {
                    Error::request(
                        "semantic_guidance",
                        format!(
                            "{:?} is not one of the classifiers' 7 classes",
                            expression.map_or("", Expression::name)
                        ),
                    )
                })?;
            targets.extend(std::iter::repeat_n(class, images));
        }
        Ok(targets)
    }

    /// One update of the conditional half of `context` (`[uncond; cond]` with `n` images each
    /// under classifier-free guidance, else `cond`): `c ← c − λ · g / ‖g‖` (per image, or per
    /// token with `per_token`), `g` from [`SemanticGuider::gradient`].
    pub fn update(
        &self,
        settings: &SemanticGuidance,
        targets: &[usize],
        context: Tensor<3>,
        n: usize,
        predict: impl FnOnce(Tensor<3>) -> Tensor<4>,
    ) -> Result<Tensor<3>> {
        let [b, len, d] = context.dims();
        let (uncond, cond) = if b == 2 * n {
            (
                Some(context.clone().slice([0..n, 0..len, 0..d])),
                context.slice([n..b, 0..len, 0..d]),
            )
        } else {
            (None, context)
        };
        let (_, g) = self.gradient(
            settings.classifier,
            targets,
            cond.clone(),
            uncond.clone(),
            predict,
        )?;
        let norm = if settings.per_token {
            g.clone().powi_scalar(2).sum_dim(2).sqrt()
        } else {
            g.clone()
                .powi_scalar(2)
                .reshape([n, len * d])
                .sum_dim(1)
                .sqrt()
                .reshape([n, 1, 1])
        };
        let cond = cond - g / (norm + 1e-12) * settings.scale;
        Ok(match uncond {
            Some(u) => Tensor::cat(vec![u, cond], 0),
            None => cond,
        })
    }

    /// The loss `Σᵢ −log p(targetᵢ | x̂0ᵢ)` (a 1-element tensor) and its gradient with respect
    /// to the conditional embedding `cond` `[n, len, d]`. `predict` maps the text context
    /// (`[uncond; cond]` when `uncond` is given, else `cond`; the conditional half is the
    /// autodiff leaf) to the decoded `x̂0` images `[n, 3, h, w]` in `[0, 1]`.
    pub fn gradient(
        &self,
        classifier: GuideClassifier,
        targets: &[usize],
        cond: Tensor<3>,
        uncond: Option<Tensor<3>>,
        predict: impl FnOnce(Tensor<3>) -> Tensor<4>,
    ) -> Result<(Tensor<1>, Tensor<3>)> {
        let leaf = cond.detach().autodiff().require_grad();
        let context = match uncond {
            Some(u) => Tensor::cat(vec![u.detach().autodiff(), leaf.clone()], 0),
            None => leaf.clone(),
        };
        let loss = self.loss(classifier, predict(context), targets)?;
        // Returned as a tensor: a synchronous read-back is impossible on WebGPU in the browser.
        let value = loss.clone().detach();
        let grads = loss.backward();
        let g = leaf.grad(&grads).ok_or_else(|| {
            Error::Device("semantic guidance: no gradient reached the text embedding".into())
        })?;
        Ok((value, g))
    }

    /// Class logits in canonical order ([`CLASSES`](crate::expression::CLASSES)) for RGB images `[n, 3, h, w]` in `[0, 1]`.
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
                        "\"trained\" needs a trained classifier (--sg-model, SemanticGuider::with_trained)",
                    )
                })?;
                Ok(model.canonical_logits(nhwc))
            }
        }
    }
}
