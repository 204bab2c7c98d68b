//! Writing a trained model as a diffusers folder: the denoiser's and the VAE's weights under
//! their checkpoint keys ([`super::export::KeyMap`]), in f16, with LoRA updates merged.

use std::collections::BTreeMap;
use std::path::Path;

use burn::tensor::Device;

use super::denoiser::Denoiser;
use super::export::KeyMap;
use super::lora;
use super::model_files::ModelFiles;
use super::tensors::{self, Precision};
use crate::error::{Error, Result};
use crate::files::write_atomic;
use crate::pipeline::source::FileSource;
use crate::tensor::HostTensor;
use crate::vae::AutoencoderKL;
use crate::weights::TensorStore;

/// Writes a diffusers folder to `out`: `files`, the denoiser's weights (text encoder, UNet, AU
/// adapter) and the VAE's, all in f16. LoRA updates among the denoiser's parameters are merged
/// into the UNet and also written as `lora/pytorch_lora_weights.safetensors` (PEFT keys).
pub fn export_folder(
    out: &Path,
    files: &ModelFiles,
    denoiser: &BTreeMap<String, HostTensor>,
    vae: &BTreeMap<String, HostTensor>,
) -> Result<()> {
    let mut denoiser = denoiser.clone();
    let updates = lora::merge(&mut denoiser)?;
    for rel in files.files.paths() {
        let bytes = files.files.require(rel)?;
        let path = out.join(rel);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        write_atomic(&path, &bytes)?;
    }
    let map = Denoiser::key_map(files)?;
    let mut parts = map.export(&denoiser)?.into_iter();
    let mut next = || parts.next().unwrap_or_default();
    // Text keys are written with transformers' `text_model.` prefix (every version loads it).
    let text: BTreeMap<String, HostTensor> = next()
        .into_iter()
        .map(|(k, v)| (format!("text_model.{k}"), v))
        .collect();
    let (unet, adapter) = (next(), next());
    let vae = vae_key_map(files)?
        .export(vae)?
        .into_iter()
        .next()
        .unwrap_or_default();
    let unet_lora = lora::peft_tensors(&updates, &map, "unet")?;
    for (rel, tensors) in [
        ("lora/pytorch_lora_weights.safetensors", &unet_lora),
        ("text_encoder/model.safetensors", &text),
        ("unet/diffusion_pytorch_model.safetensors", &unet),
        ("au_adapter/diffusion_pytorch_model.safetensors", &adapter),
        ("vae/diffusion_pytorch_model.safetensors", &vae),
    ] {
        if tensors.is_empty() && rel.starts_with("lora/") {
            continue;
        }
        let path = out.join(rel);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        let meta = std::collections::HashMap::from([("format".to_string(), "pt".to_string())]);
        write_atomic(
            &path,
            &tensors::to_bytes(tensors, Precision::F16, Some(meta))?,
        )?;
    }
    Ok(())
}

/// Exports the diffusion run `run` (started from `base`; its `weights`) as a diffusers folder
/// in `out`. A from-scratch model's VAE config gets the scaling factor the run trained with.
#[cfg(not(target_family = "wasm"))]
pub fn export_run(
    run: &Path,
    base: &super::diffusion::Base,
    weights: super::diffusion::RunWeights,
    out: &Path,
) -> Result<()> {
    let device = Device::flex();
    let path = run.join("config.json");
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).map_err(|e| Error::io(&path, e))?)
            .map_err(|e| Error::json(path.display().to_string(), e))?;
    let stage: super::diffusion::DiffusionStage =
        serde_json::from_value(record["diffusion"].clone())
            .map_err(|e| Error::json(path.display().to_string(), e))?;
    let (mut files, vae, mut denoiser) = base.start(0, &device)?;
    if let super::diffusion::Base::VaeRun { .. } = base {
        let mut cfg: serde_json::Value = serde_json::from_str(super::vae::TINY_VAE_CONFIG)
            .map_err(|e| Error::json("synfer-tiny vae config", e))?;
        cfg["scaling_factor"] = serde_json::json!(stage.scaling_factor);
        files.files.insert(
            "vae/config.json",
            serde_json::to_string_pretty(&cfg)
                .unwrap_or_default()
                .into_bytes(),
        );
    }
    if let Some(rank) = stage.lora_rank {
        denoiser.attach_lora(rank, 0, &device);
    }
    let denoiser = super::diffusion::load_trained(denoiser, run, weights)?;
    export_folder(
        out,
        &files,
        &super::params::read(&denoiser),
        &super::params::read(&vae),
    )
}

/// The VAE's parameter path → key map for `files`' VAE config.
pub(crate) fn vae_key_map(files: &ModelFiles) -> Result<KeyMap> {
    let device = Device::flex();
    let mut store = TensorStore::tracing("trace", 0);
    let vae = AutoencoderKL::load(&mut store, &files.vae()?, &device)?;
    KeyMap::trace(&vae, &[(0, store.traced())])
}
