//! The AU adapter (FineFace / IP-Adapter layout): its `au_adapter/config.json`, the weights
//! it arrives in (our `au_adapter/` folder or FineFace's released files), how it is attached to
//! a UNet (an AU branch in every cross-attention layer plus the encoder), and the calibration
//! of requests to the scale of its training labels.

use burn::tensor::Device;

use super::catalog::AuSet;
use super::config::AuAdapterConfig;
use super::encoder::AuEncoder;
use crate::error::{Error, Result};
use crate::nn::Linear;
use crate::unet::UNet2DConditionModel;
use crate::unet::attention::AuBranch;
use crate::weights::{TensorStore, Weights};

/// A loaded AU adapter: the encoder that turns AU vectors into tokens (the per-layer branches
/// live inside the UNet's cross-attention layers).
#[derive(Debug)]
pub struct AuAdapter {
    /// Its configuration.
    pub config: AuAdapterConfig,
    /// The AU set its input vector follows.
    pub set: AuSet,
    /// The encoder.
    pub encoder: AuEncoder,
    /// Where it came from.
    pub source: String,
}

/// AU adapter weights before loading: `au_encoder.*` plus `<attn2 path>.processor.au_to_{k,v}.weight`
/// for every cross-attention layer, in one store (our `au_adapter/` folder), or assembled from
/// FineFace's `au_encoder.ckpt` + `attn_processors.ckpt`.
#[derive(Debug)]
pub struct AdapterWeights {
    /// Configuration.
    pub config: AuAdapterConfig,
    /// All adapter tensors.
    pub store: TensorStore,
}

impl AuAdapter {
    /// Attaches the adapter's branches to `unet` and builds its encoder; every adapter key must
    /// be used and every cross-attention layer must receive a branch.
    pub fn attach(
        weights: AdapterWeights,
        unet: &mut UNet2DConditionModel,
        device: &Device,
    ) -> Result<Self> {
        let AdapterWeights { mut config, store } = weights;
        let file = store.name().to_string();
        let set = config.set(&file)?;
        let layers = unet.cross_attentions_mut();
        let Some(width) = layers.first().map(|(_, a)| a.context_dim()) else {
            return Err(Error::config(
                &file,
                "au_set",
                &config.au_set,
                "the UNet has no cross-attention layer",
            ));
        };
        let width = *config.cross_attention_dim.get_or_insert(width);
        if let Some((path, attn)) = layers.into_iter().find(|(_, a)| a.context_dim() != width) {
            return Err(Error::config(
                &file,
                "cross_attention_dim",
                width,
                format!(
                    "the UNet's {path} takes {}-wide context",
                    attn.context_dim()
                ),
            ));
        }
        config.validate(&file)?;
        let root = store.root(device);
        attach_branches(unet, &root)?;
        let encoder = AuEncoder::load(&root, &config, set)?;
        store.finish()?;
        Ok(AuAdapter {
            config,
            set,
            encoder,
            source: file,
        })
    }
}

/// Loads the AU branch of every cross-attention layer of `unet` from
/// `<attn2 path>.processor.au_to_{k,v}.weight` under `w` (FineFace's `attn_processors` layout;
/// no bias, `[inner, context]`).
pub fn attach_branches(unet: &mut UNet2DConditionModel, w: &Weights) -> Result<()> {
    for (path, attn) in unet.cross_attentions_mut() {
        let (c, inner) = (attn.context_dim(), attn.inner_dim());
        let p = w.pp(path).pp("processor");
        attn.au = Some(AuBranch {
            au_to_k: Linear::load(&p.pp("au_to_k"), c, inner, false)?,
            au_to_v: Linear::load(&p.pp("au_to_v"), c, inner, false)?,
        });
    }
    Ok(())
}

/// Reads an AU adapter from disk: an `au_adapter` folder (`config.json` +
/// `diffusion_pytorch_model.safetensors`), or FineFace's released files — `attn_processors.ckpt`,
/// `au_encoder.ckpt` and optionally `pytorch_lora_weights.safetensors` (merged at scale 1) —
/// given as their folder or as a list of files.
#[cfg(not(target_family = "wasm"))]
pub fn read_adapter(
    paths: &[std::path::PathBuf],
) -> Result<(AdapterWeights, Vec<crate::weights::lora::LoraWeights>)> {
    let mut files: Vec<std::path::PathBuf> = Vec::new();
    for p in paths {
        if p.is_dir() {
            let names = [ADAPTER_CONFIG, ADAPTER_WEIGHTS].into_iter().chain([
                FINEFACE_PROCESSORS,
                FINEFACE_ENCODER,
                FINEFACE_LORA,
            ]);
            files.extend(names.map(|n| p.join(n)).filter(|f| f.is_file()));
        } else {
            files.push(p.clone());
        }
    }
    let read = files
        .iter()
        .map(|p| {
            Ok((
                p.display().to_string(),
                std::fs::read(p).map_err(|e| Error::io(p, e))?,
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    let described = paths
        .first()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    adapter_from_files(&read, &described)
}

/// An AU adapter from its files' bytes, each named by its path (the file name decides its
/// role): our format (`config.json` + `diffusion_pytorch_model.safetensors`), or FineFace's
/// (`attn_processors.ckpt`, `au_encoder.ckpt`, optionally `pytorch_lora_weights.safetensors`,
/// returned as a LoRA at scale 1). `described` names the adapter in errors.
pub fn adapter_from_files(
    files: &[(String, Vec<u8>)],
    described: &str,
) -> Result<(AdapterWeights, Vec<crate::weights::lora::LoraWeights>)> {
    let named = |name: &str| {
        files
            .iter()
            .find(|(path, _)| path.rsplit('/').next() == Some(name))
    };
    let missing = |name: &str| {
        Error::io(
            described,
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("AU adapter: {name} not found"),
            ),
        )
    };
    if let Some((config_path, config)) = named(ADAPTER_CONFIG) {
        let (weights_path, weights) =
            named(ADAPTER_WEIGHTS).ok_or_else(|| missing(ADAPTER_WEIGHTS))?;
        let config = AuAdapterConfig::from_json(config, config_path)?;
        let store = TensorStore::from_bytes(weights_path.clone(), weights.clone())?;
        return Ok((AdapterWeights { config, store }, Vec::new()));
    }
    let (processors_path, processors) =
        named(FINEFACE_PROCESSORS).ok_or_else(|| missing(FINEFACE_PROCESSORS))?;
    let (encoder_path, encoder) =
        named(FINEFACE_ENCODER).ok_or_else(|| missing(FINEFACE_ENCODER))?;
    let mut store = TensorStore::from_torch_bytes(processors_path.clone(), processors.clone())?;
    store.extend(TensorStore::from_torch_bytes(
        encoder_path.clone(),
        encoder.clone(),
    )?)?;
    let mut loras = Vec::new();
    for (path, bytes) in files.iter().filter(|(p, _)| p.ends_with(".safetensors")) {
        loras.push(crate::weights::lora::LoraWeights {
            store: TensorStore::from_bytes(path.clone(), bytes.clone())?,
            scale: 1.0,
        });
    }
    // FineFace uses hidden 64; take the width from the file so smaller variants load too.
    let mut config = AuAdapterConfig::fineface();
    if let Some(&[hidden, _]) = store.shape("au_encoder.weight") {
        config.hidden_dim = hidden;
    }
    Ok((AdapterWeights { config, store }, loras))
}

/// Our adapter format's files (an `au_adapter/` folder).
pub const ADAPTER_CONFIG: &str = "config.json";
/// Our adapter format's weights.
pub const ADAPTER_WEIGHTS: &str = "diffusion_pytorch_model.safetensors";
/// FineFace's released file names.
pub const FINEFACE_PROCESSORS: &str = "attn_processors.ckpt";
/// FineFace's AU encoder file.
pub const FINEFACE_ENCODER: &str = "au_encoder.ckpt";
/// FineFace's UNet LoRA.
pub const FINEFACE_LORA: &str = "pytorch_lora_weights.safetensors";
