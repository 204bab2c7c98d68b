//! The trained part of a pipeline ([`Denoiser`]: text encoder, UNet with its AU branch, AU
//! encoder) and what of it a stage updates ([`Trainable`]).

use burn::module::Module;
use burn::tensor::{Device, Int, Tensor};

use super::export::KeyMap;
use super::lora;
use super::model_files::ModelFiles;
use crate::au::FINEFACE;
use crate::au::adapter::attach_branches;
use crate::au::encoder::AuEncoder;
use crate::error::{Error, Result};
use crate::text_encoder::ClipTextModel;
use crate::unet::UNet2DConditionModel;
use crate::unet::attention::AuContext;
use crate::weights::TensorStore;

/// The trained part of a pipeline: text encoder, UNet (with the AU branch in every
/// cross-attention layer) and AU encoder.
#[derive(Module, Debug)]
pub struct Denoiser {
    /// CLIP text encoder.
    pub text_encoder: ClipTextModel,
    /// UNet with AU branches.
    pub unet: UNet2DConditionModel,
    /// AU encoder.
    pub au_encoder: AuEncoder,
}

/// Marker bases of the tracing stores (text encoder, UNet, AU adapter).
const TRACE_BASES: [usize; 3] = [0, 1 << 20, 2 << 20];

impl Denoiser {
    /// Builds from one store per component (`text_model.*`-less text encoder keys, UNet keys,
    /// adapter keys).
    pub fn build(files: &ModelFiles, stores: [&TensorStore; 3], device: &Device) -> Result<Self> {
        let [text, unet_store, adapter] = stores;
        let text_encoder = ClipTextModel::load(text, &files.text()?, device)?;
        let mut unet = UNet2DConditionModel::load(unet_store, &files.unet()?, device)?;
        let cfg = files.adapter()?;
        let root = adapter.root(device);
        attach_branches(&mut unet, &root)?;
        let au_encoder = AuEncoder::load(&root, &cfg, FINEFACE)?;
        Ok(Denoiser {
            text_encoder,
            unet,
            au_encoder,
        })
    }

    /// A freshly initialised model (PyTorch default initialisation from `seed`).
    pub fn init(files: &ModelFiles, seed: u64, device: &Device) -> Result<Self> {
        let stores = [0, 1, 2].map(|i| TensorStore::initialised("init", seed * 3 + i));
        Self::build(files, [&stores[0], &stores[1], &stores[2]], device)
    }

    /// Takes the text encoder and UNet of a loaded pipeline; its AU adapter, or a fresh one
    /// (from `seed`) attached to the UNet when it has none.
    pub fn from_pipeline(pipe: crate::Pipeline, files: &ModelFiles, seed: u64) -> Result<Self> {
        let device = pipe.device.clone();
        let mut unet = pipe.unet;
        let au_encoder = match pipe.au_adapter {
            Some(a) if a.set == FINEFACE => a.encoder,
            Some(a) => {
                return Err(Error::config(
                    a.source,
                    "au_set",
                    &a.config.au_set,
                    "training uses the dataset's FineFace AU vector",
                ));
            }
            None => {
                let store = TensorStore::initialised("init", seed);
                let root = store.root(&device);
                attach_branches(&mut unet, &root)?;
                AuEncoder::load(&root, &files.adapter()?, FINEFACE)?
            }
        };
        Ok(Denoiser {
            text_encoder: pipe.text_encoder,
            unet,
            au_encoder,
        })
    }

    /// Adds rank-`rank` LoRA updates to the UNet's attention projections ([`lora::attach`]).
    pub fn attach_lora(&mut self, rank: usize, seed: u64, device: &Device) {
        lora::attach(&mut self.unet, rank, seed, device);
    }

    /// The parameter path → (component, key) map for models described by `files`.
    pub fn key_map(files: &ModelFiles) -> Result<KeyMap> {
        let device = Device::flex();
        let stores = TRACE_BASES.map(|b| TensorStore::tracing("trace", b));
        let model = Self::build(files, [&stores[0], &stores[1], &stores[2]], &device)?;
        let traced: Vec<_> = TRACE_BASES
            .iter()
            .zip(&stores)
            .map(|(b, s)| (*b, s.traced()))
            .collect();
        KeyMap::trace(&model, &traced)
    }

    /// Predicted noise for latents `x` `[b, c, h, w]` at `timesteps` with token ids
    /// `[b, len]` and AU vectors `[b, 12]`.
    pub fn forward(
        &self,
        x: Tensor<4>,
        timesteps: &[f32],
        ids: Tensor<2, Int>,
        aus: Tensor<2>,
    ) -> Tensor<4> {
        let context = self.text_encoder.forward(ids);
        let au = AuContext {
            tokens: self.au_encoder.forward(aus),
            scale: 1.0,
        };
        self.unet.forward_au(x, timesteps, context, Some(&au))
    }
}

/// Which parameters a stage updates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "native", derive(clap::ValueEnum))]
pub enum Trainable {
    /// Everything (training from scratch, full fine-tuning).
    All,
    /// The AU adapter only (`au_encoder.*` and the UNet's `…attn2.au.*` branches).
    Adapter,
    /// LoRA updates of the UNet's attention projections plus the AU adapter.
    Lora,
}

impl Trainable {
    fn is_adapter(path: &str) -> bool {
        path.starts_with("au_encoder.") || path.contains(".au.")
    }

    /// Whether the parameter at `path` is updated.
    pub fn includes(self, path: &str) -> bool {
        match self {
            Trainable::All => true,
            Trainable::Adapter => Self::is_adapter(path),
            Trainable::Lora => Self::is_adapter(path) || path.contains(".lora."),
        }
    }
}
