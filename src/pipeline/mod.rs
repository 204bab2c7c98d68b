//! The generation pipeline, in diffusers' phases: load ([`builder`], [`load`]) → check the
//! request → encode the prompt (text) and the AUs ([`crate::au::conditioning`]) → prepare the
//! latents (seeded noise, or an image: layout initialisation and img2img, [`start`]) →
//! denoise with classifier-free and semantic guidance ([`generate`]) → decode → 8-bit RGB with
//! its record ([`output`]).
//!
//! ```no_run
//! # fn main() -> synfer::Result<()> {
//! use synfer::{GenerateRequest, Pipeline};
//! let pipe = Pipeline::builder("path/to/stable-diffusion-v1-5").build()?;
//! let out = pipe.generate(&GenerateRequest::new("a smiling woman"))?;
//! # Ok(()) }
//! ```

pub mod builder;
pub mod generate;
pub mod load;
pub mod memory;
pub mod output;
pub mod png_record;
pub mod request;
#[cfg(not(target_family = "wasm"))]
pub mod single_file;
pub mod source;
pub mod start;

use burn::tensor::{Device, Int, Tensor, TensorData};

use crate::au::AuAdapter;
use crate::au::conditioning::{self, AuRequest};
use crate::au::vector::AuVector;
use crate::error::{Error, Result};
use crate::guidance::semantic::SemanticGuider;
use crate::scheduler::SchedulerConfig;
use crate::text_encoder::ClipTextModel;
use crate::tokenizer::ClipTokenizer;
use crate::unet::UNet2DConditionModel;
use crate::unet::attention::AuContext;
use crate::vae::AutoencoderKL;

pub use builder::{ModelSource, PipelineBuilder};
pub use generate::GenerateOptions;
pub use output::{GenerateOutput, ImageRecord, StepEvent, Timings};
pub use request::{GenerateRequest, ImageStart, StartMode};
pub use source::FileStamp;

/// The pixel multiple a model with VAE factor `vae_scale_factor` needs (at least 8).
fn size_multiple(vae_scale_factor: usize) -> usize {
    vae_scale_factor.max(8)
}

/// Facts about a loaded model that callers need (sizes, channels, names).
#[derive(Debug, Clone, serde::Serialize)]
pub struct ModelInfo {
    /// Where the model came from.
    pub source: String,
    /// Latent channels of the UNet.
    pub latent_channels: usize,
    /// Pixels per latent cell.
    pub vae_scale_factor: usize,
    /// Default output size in pixels (UNet `sample_size` × VAE factor).
    pub default_size: usize,
    /// The scheduler class configured in the folder.
    pub scheduler_class: String,
    /// What sets the largest buffers of a generation.
    pub buffers: memory::BufferProfile,
    /// How the model is best used (`synfer.json` in the folder; empty without one).
    pub defaults: ModelDefaults,
    /// What the pipeline was built from: every model file read (relative path), `adapter` and
    /// `lora.K (scale S)`, each with its [`FileStamp`].
    #[serde(skip)]
    pub files: std::collections::BTreeMap<String, FileStamp>,
}

/// `synfer.json` in a model folder: how the model is best used, chosen by measurement when it
/// was trained.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelDefaults {
    /// Classifier-free guidance scale for requests that do not set one (the CLI's `generate`
    /// without `--guidance`, the page's first value).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guidance_scale: Option<f64>,
    /// Layout initialisation for expression requests that bring no start of their own (the
    /// CLI's `generate --expression`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layout: Option<LayoutDefault>,
}

/// A model's default layout initialisation.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayoutDefault {
    /// The layout source (`dcgan`, or a path relative to the model folder).
    pub source: String,
    /// Layout strength S.
    pub strength: f64,
}

/// A loaded Stable-Diffusion-class model, ready to generate. Build one with
/// [`Pipeline::builder`] (or [`Pipeline::load`], [`Pipeline::default_model`]).
#[derive(Debug)]
pub struct Pipeline {
    pub(crate) tokenizer: ClipTokenizer,
    pub(crate) text_encoder: ClipTextModel,
    pub(crate) unet: UNet2DConditionModel,
    pub(crate) vae: AutoencoderKL,
    pub(crate) scheduler: SchedulerConfig,
    pub(crate) au_adapter: Option<AuAdapter>,
    /// The guider requests with semantic guidance use unless [`GenerateOptions`] names one.
    pub(crate) guider: Option<SemanticGuider>,
    pub(crate) info: ModelInfo,
    pub(crate) device: Device,
    /// The device's largest buffer in bytes, when known (wgpu adapters): generations that
    /// would need a larger one are refused before they start (see [`memory`]).
    pub(crate) buffer_limit: Option<u64>,
}

impl Pipeline {
    /// Model facts: source, sizes, scheduler class, buffer profile.
    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The model's scheduler configuration (after the pipeline's fix-ups).
    pub fn scheduler_config(&self) -> &SchedulerConfig {
        &self.scheduler
    }

    /// The AU adapter, when the model has one.
    pub fn au_adapter(&self) -> Option<&AuAdapter> {
        self.au_adapter.as_ref()
    }

    /// The CLIP tokenizer.
    pub fn tokenizer(&self) -> &ClipTokenizer {
        &self.tokenizer
    }

    /// The text encoder.
    pub fn text_encoder(&self) -> &ClipTextModel {
        &self.text_encoder
    }

    /// The denoiser.
    pub fn unet(&self) -> &UNet2DConditionModel {
        &self.unet
    }

    /// The autoencoder.
    pub fn vae(&self) -> &AutoencoderKL {
        &self.vae
    }

    /// Loads the embedded semantic-guidance classifiers (FER A and FER B) as the pipeline's
    /// guider, unless it has one.
    pub fn enable_semantic_guidance(&mut self) -> Result<()> {
        if self.guider.is_none() {
            self.guider = Some(SemanticGuider::embedded(&self.device)?);
        }
        Ok(())
    }

    /// Sets the pipeline's guider (e.g. one with a trained classifier,
    /// [`SemanticGuider::with_trained`]).
    pub fn set_semantic_guider(&mut self, guider: SemanticGuider) {
        self.guider = Some(guider);
    }

    /// Adds a classifier trained by `synfer fer train` (its `fer.json` and `model.safetensors`
    /// bytes) to the guider (loading the embedded ones first if needed); requests select it
    /// with `classifier: "trained"`.
    pub fn enable_trained_guidance(&mut self, config: &[u8], weights: &[u8]) -> Result<()> {
        self.enable_semantic_guidance()?;
        if let Some(guide) = self.guider.take() {
            self.guider = Some(guide.with_trained(config, weights, &self.device)?);
        }
        Ok(())
    }

    /// Tokenizes and encodes prompts → `[n, 77, d]`; returns truncation warnings too.
    pub fn encode_prompt(
        &self,
        prompts: &[&str],
        clip_skip: usize,
    ) -> Result<(Tensor<3>, Vec<String>)> {
        let layers = self.text_encoder.layers.len();
        // diffusers indexes hidden_states[-(clip_skip + 1)] of layers + 1 states.
        if clip_skip > layers {
            return Err(Error::request(
                "clip_skip",
                format!("{clip_skip} is more than this text encoder's {layers} layers"),
            ));
        }
        let mut ids = Vec::new();
        let mut warnings = Vec::new();
        for p in prompts {
            let t = self.tokenizer.encode(p)?;
            if let Some(rest) = &t.truncated {
                // The start of what was dropped, not all of it (a prompt may be very long).
                let words: Vec<&str> = rest.split_whitespace().collect();
                let shown = words[..words.len().min(8)].join(" ");
                let more = if words.len() > 8 { " …" } else { "" };
                warnings.push(format!(
                    "prompt truncated to {} tokens; {} dropped words begin {shown:?}{more}",
                    self.tokenizer.max_length(),
                    words.len()
                ));
            }
            ids.extend(t.ids.iter().map(|&i| i as i64));
        }
        let len = self.tokenizer.max_length();
        let ids =
            Tensor::<2, Int>::from_data(TensorData::new(ids, [prompts.len(), len]), &self.device);
        Ok((self.text_encoder.forward_skip(ids, clip_skip), warnings))
    }

    /// Output size in pixels for a request.
    pub fn output_size(&self, req: &GenerateRequest) -> (usize, usize) {
        let d = self.info.default_size;
        (req.width.unwrap_or(d), req.height.unwrap_or(d))
    }

    /// Pixel multiple that width and height must respect.
    pub fn size_multiple(&self) -> usize {
        size_multiple(self.info.vae_scale_factor)
    }

    /// The AU vector of a request (expression prototype, then explicit units) and the tokens
    /// for `n` images of it (`[zeros × n; aus × n]` with `cfg`: the unconditional branch gets
    /// all-zero AUs).
    pub fn au_conditioning(
        &self,
        req: &GenerateRequest,
        n: usize,
        cfg: bool,
    ) -> Result<(Option<AuVector>, Option<AuContext>)> {
        let one = AuRequest {
            images: n,
            ..req.au_request()
        };
        let (mut aus, ctx) = conditioning::condition(
            self.au_adapter.as_ref(),
            std::slice::from_ref(&one),
            cfg,
            &self.device,
        )?;
        Ok((aus.pop().flatten(), ctx))
    }
}
