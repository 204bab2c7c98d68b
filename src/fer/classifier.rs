//! A trained expression classifier as it is stored and used: `fer.json` (architecture, input
//! size and channels, class names) plus `model.safetensors` (f32, keys = field paths under
//! `net.`).
//!
//! Input handling is one function for training, evaluation, prediction and guidance
//! ([`FerClassifier::normalise`]): RGB in `[0, 1]`, grey (Rec. 601 luma) when the model has one
//! channel, then `(x − ½) / ½`. Whole images are resized bilinearly to the input side exactly as
//! [`FaceAnalyzer::analyze_cropped`](crate::face::analyzer::FaceAnalyzer::analyze_cropped)
//! feeds its classifiers (TensorFlow `cropAndResize`).

use burn::module::Module;
use burn::tensor::activation::softmax;
use burn::tensor::{Device, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use super::net::{Arch, FerNet};
use crate::error::{Error, Result};
use crate::expression::canonical_index;
use crate::image::{RgbView, crop_and_resize, resize_whole};
use crate::weights::TensorStore;

/// Smallest supported input side.
pub const MIN_INPUT: usize = 16;

/// Rec. 601 luma weights.
const LUMA: [f32; 3] = [0.299, 0.587, 0.114];

/// `fer.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FerConfig {
    /// Architecture.
    pub arch: Arch,
    /// Input side in pixels.
    pub input_size: usize,
    /// 3 (RGB) or 1 (grey).
    pub channels: usize,
    /// Base width.
    pub width: usize,
    /// Output class names, canonical (see [`crate::expression`]).
    pub classes: Vec<String>,
    /// Standardise each image (per channel: subtract its mean, divide by its standard
    /// deviation) instead of mapping `[0, 1]` to `[−1, 1]`: removes global brightness and
    /// contrast, which differ between synthetic and real faces.
    #[serde(default)]
    pub standardize: bool,
}

impl Default for FerConfig {
    /// mini-Xception at its original width, 64 px RGB, the seven canonical classes.
    fn default() -> Self {
        FerConfig {
            arch: Arch::MiniXception,
            input_size: 64,
            channels: 3,
            width: Arch::MiniXception.default_width(),
            classes: crate::expression::class_names(false),
            standardize: false,
        }
    }
}

impl FerConfig {
    /// Checks every field (`file` names the source in errors).
    pub fn validate(&self, file: &str) -> Result<()> {
        if self.input_size < MIN_INPUT || self.input_size > 512 {
            return Err(Error::config(
                file,
                "input_size",
                self.input_size,
                format!("expected {MIN_INPUT}–512"),
            ));
        }
        if self.channels != 1 && self.channels != 3 {
            return Err(Error::config(
                file,
                "channels",
                self.channels,
                "expected 1 or 3",
            ));
        }
        if self.width == 0 || self.width > 256 {
            return Err(Error::config(file, "width", self.width, "expected 1–256"));
        }
        if self.classes.len() < 2 {
            return Err(Error::config(
                file,
                "classes",
                self.classes.len(),
                "expected at least 2 classes",
            ));
        }
        for c in &self.classes {
            if canonical_index(c).is_none() {
                return Err(Error::config(
                    file,
                    "classes",
                    c,
                    "not a canonical expression class",
                ));
            }
        }
        Ok(())
    }
}

/// A classifier: its configuration and network.
#[derive(Module, Debug)]
pub struct FerClassifier {
    /// The network.
    pub net: FerNet,
    /// Input side.
    pub input_size: usize,
    /// Input channels.
    pub channels: usize,
    /// Per-image standardisation ([`FerConfig::standardize`]).
    pub standardize: bool,
    /// Canonical index of each output.
    pub canonical: Vec<usize>,
}

impl FerClassifier {
    /// A freshly initialised classifier (PyTorch's default initialisation from `seed`).
    pub fn init(config: &FerConfig, seed: u64, device: &Device) -> Result<Self> {
        config.validate("config")?;
        let store = TensorStore::initialised("init", seed);
        Self::build(config, &store, device)
    }

    /// Loads from `fer.json` and `model.safetensors` bytes (strict: every key used, every
    /// shape checked); `name` is used in errors.
    pub fn from_bytes(name: &str, config: &[u8], weights: &[u8], device: &Device) -> Result<Self> {
        let file = format!("{name}/fer.json");
        let config: FerConfig =
            serde_json::from_slice(config).map_err(|e| Error::json(file.clone(), e))?;
        config.validate(&file)?;
        let store = TensorStore::from_bytes(format!("{name}/model.safetensors"), weights.to_vec())?;
        let model = Self::build(&config, &store, device)?;
        store.finish()?;
        Ok(model)
    }

    /// The `fer.json` and `model.safetensors` bytes of a model folder.
    #[cfg(not(target_family = "wasm"))]
    pub fn read_dir(dir: &std::path::Path) -> Result<(Vec<u8>, Vec<u8>)> {
        let read = |f: &str| {
            let p = dir.join(f);
            std::fs::read(&p).map_err(|e| Error::io(&p, e))
        };
        Ok((read("fer.json")?, read("model.safetensors")?))
    }

    /// Loads a model folder (`fer.json` + `model.safetensors`).
    #[cfg(not(target_family = "wasm"))]
    pub fn load_dir(dir: &std::path::Path, device: &Device) -> Result<Self> {
        let (config, weights) = Self::read_dir(dir)?;
        Self::from_bytes(&dir.display().to_string(), &config, &weights, device)
    }

    fn build(config: &FerConfig, store: &TensorStore, device: &Device) -> Result<Self> {
        let canonical = config
            .classes
            .iter()
            .map(|c| canonical_index(c).expect("validated"))
            .collect();
        Ok(FerClassifier {
            net: FerNet::load(
                &store.root(device).pp("net"),
                config.arch,
                config.channels,
                config.width,
                config.classes.len(),
            )?,
            input_size: config.input_size,
            channels: config.channels,
            standardize: config.standardize,
            canonical,
        })
    }

    /// Number of output classes.
    pub fn num_classes(&self) -> usize {
        self.canonical.len()
    }

    /// Model input from RGB `[n, s, s, 3]` in `[0, 1]` at the input side: grey if the model
    /// has one channel, then `(x − ½) / ½` or, with `standardize`, `(x − μ) / (σ + 1e-3)` per
    /// image and channel; NCHW. Differentiable.
    pub fn normalise(&self, nhwc: Tensor<4>) -> Tensor<4> {
        let x = if self.channels == 1 {
            let device = nhwc.device();
            let w = Tensor::<1>::from_data(TensorData::new(LUMA.to_vec(), [3]), &device)
                .reshape([1, 1, 1, 3]);
            (nhwc * w).sum_dim(3)
        } else {
            nhwc
        };
        let x = x.permute([0, 3, 1, 2]);
        if !self.standardize {
            return (x - 0.5) * 2.0;
        }
        let [n, c, h, w] = x.dims();
        let flat = x.reshape([n, c, h * w]);
        let mean = flat.clone().mean_dim(2);
        let centred = flat - mean;
        let std = centred.clone().square().mean_dim(2).sqrt();
        (centred / (std + 1e-3)).reshape([n, c, h, w])
    }

    /// Logits `[n, classes]` of RGB images `[n, h, w, 3]` in `[0, 1]` (any square side: resized
    /// whole to the input side). Differentiable.
    pub fn logits_rgb(&self, nhwc: Tensor<4>) -> Tensor<2> {
        let x = resize_whole(nhwc, self.input_size);
        self.net.forward(self.normalise(x))
    }

    /// Logits of the canonical 7 classes ([`CLASSES`](crate::expression::CLASSES)) for RGB images
    /// `[n, h, w, 3]` in `[0, 1]`: classes the model lacks get −1e4, extra ones (contempt) are
    /// left out. Differentiable (for semantic guidance).
    pub fn canonical_logits(&self, nhwc: Tensor<4>) -> Tensor<2> {
        let logits = self.logits_rgb(nhwc);
        let [n, k] = logits.dims();
        let device = logits.device();
        // A [k, 7] selection matrix plus a bias that pushes absent classes to −1e4.
        let mut select = vec![0f32; k * 7];
        let mut absent = vec![-1e4f32; 7];
        for (i, &c) in self.canonical.iter().enumerate() {
            if c < 7 {
                select[i * 7 + c] = 1.0;
                absent[c] = 0.0;
            }
        }
        let select = Tensor::<2>::from_data(TensorData::new(select, [k, 7]), &device);
        let absent = Tensor::<2>::from_data(TensorData::new(absent, [1, 7]), &device);
        logits.matmul(select) + absent.expand([n, 7])
    }

    /// Class probabilities of whole RGB images (each resized to the input side as the
    /// analyzer does), in the model's class order.
    pub fn classify(&self, images: &[RgbView], device: &Device) -> Result<Vec<Vec<f32>>> {
        let crops: Vec<(RgbView, [f64; 4])> = images
            .iter()
            .map(|img| (*img, [0.0, 0.0, img.width as f64, img.height as f64]))
            .collect();
        self.classify_crops(&crops, device)
    }

    /// Class probabilities of boxes `[x1, y1, x2, y2]` (pixels) of RGB images, each cut and
    /// resized to the input side with TensorFlow `cropAndResize` (as the analyzer feeds its
    /// classifiers), in the model's class order.
    pub fn classify_crops(
        &self,
        crops: &[(RgbView, [f64; 4])],
        device: &Device,
    ) -> Result<Vec<Vec<f32>>> {
        if crops.is_empty() {
            return Ok(Vec::new());
        }
        let s = self.input_size;
        let mut values = Vec::with_capacity(crops.len() * s * s * 3);
        for (img, crop) in crops {
            img.validate()?;
            values.extend(
                crop_and_resize(*img, *crop, s)
                    .into_iter()
                    .map(|v| v / 255.0),
            );
        }
        let x = Tensor::<4>::from_data(TensorData::new(values, [crops.len(), s, s, 3]), device);
        let probs = softmax(self.net.forward(self.normalise(x)), 1);
        let k = self.num_classes();
        let flat: Vec<f32> = probs
            .into_data()
            .try_into_vec_as::<f32>()
            .map_err(|e| Error::Device(format!("reading classifier outputs back: {e:?}")))?;
        crate::tensor::check_finite(&flat, k, "the FER classifier's probabilities")?;
        Ok(flat.chunks_exact(k).map(<[f32]>::to_vec).collect())
    }

    /// Probabilities over the canonical 7 classes from the model's own: contempt (if any) is
    /// dropped and the rest renormalised; classes the model lacks get 0.
    pub fn to_canonical7(&self, probs: &[f32]) -> [f32; 7] {
        let mut out = [0f32; 7];
        for (&c, &p) in self.canonical.iter().zip(probs) {
            if c < 7 {
                out[c] += p;
            }
        }
        let total: f32 = out.iter().sum();
        if total > 0.0 {
            out.iter_mut().for_each(|v| *v /= total);
        }
        out
    }
}
