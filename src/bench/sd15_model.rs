//! A Stable-Diffusion-1.5-shaped diffusers folder with random weights in fp16 (UNet 860 M,
//! CLIP-L text encoder, the SD VAE: 2.1 GB), written without Python or a model hub: the size
//! of the models people bring, for loading, memory and parity tests (`synfer bench
//! --write-model`, the page test).
//!
//! The tensor names and shapes are the ones our loaders ask for (read with a tracing store),
//! so the folder loads exactly; values follow PyTorch's default initialisation scaled by ½
//! (matrices), norms 1 and biases 0, so that activations stay finite in fp16 and images are
//! not flat.

use std::io::Write;
use std::path::Path;

use burn::tensor::Device;
use serde_json::json;

use crate::error::{Error, Result};
use crate::pipeline::single_file::tokenizer_files;
use crate::text_encoder::{ClipTextConfig, ClipTextModel};
use crate::unet::{UNet2DConditionModel, UNetConfig};
use crate::vae::{AutoencoderKL, VaeConfig};
use crate::weights::TensorStore;
use crate::weights::ldm::Family;

/// What [`write()`] wrote.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Written {
    /// Parameters per component.
    pub parameters: Vec<(String, u64)>,
    /// Bytes of every file together.
    pub bytes: u64,
}

/// The folder's config files (SD 1.5's, as diffusers writes them; DDIM as its scheduler).
fn configs() -> [(&'static str, serde_json::Value); 5] {
    [
        (
            "model_index.json",
            json!({
                "_class_name": "StableDiffusionPipeline", "_diffusers_version": "0.42.1",
                "scheduler": ["diffusers", "DDIMScheduler"],
                "text_encoder": ["transformers", "CLIPTextModel"],
                "tokenizer": ["transformers", "CLIPTokenizer"],
                "unet": ["diffusers", "UNet2DConditionModel"],
                "vae": ["diffusers", "AutoencoderKL"],
                "safety_checker": [null, null], "feature_extractor": [null, null],
                "requires_safety_checker": false
            }),
        ),
        (
            "scheduler/scheduler_config.json",
            json!({
                "_class_name": "DDIMScheduler", "beta_start": 0.00085, "beta_end": 0.012,
                "beta_schedule": "scaled_linear", "clip_sample": false,
                "num_train_timesteps": 1000, "prediction_type": "epsilon",
                "set_alpha_to_one": false, "steps_offset": 1, "timestep_spacing": "leading"
            }),
        ),
        (
            "text_encoder/config.json",
            json!({
                "architectures": ["CLIPTextModel"], "model_type": "clip_text_model",
                "hidden_act": "quick_gelu", "hidden_size": 768, "intermediate_size": 3072,
                "num_attention_heads": 12, "num_hidden_layers": 12,
                "max_position_embeddings": 77, "vocab_size": 49408, "layer_norm_eps": 1e-5,
                "projection_dim": 768, "bos_token_id": 49406, "eos_token_id": 49407,
                "pad_token_id": 1
            }),
        ),
        (
            "unet/config.json",
            json!({
                "_class_name": "UNet2DConditionModel", "act_fn": "silu",
                "attention_head_dim": 8, "block_out_channels": [320, 640, 1280, 1280],
                "cross_attention_dim": 768,
                "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D",
                                     "CrossAttnDownBlock2D", "DownBlock2D"],
                "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D",
                                   "CrossAttnUpBlock2D"],
                "flip_sin_to_cos": true, "freq_shift": 0, "in_channels": 4,
                "layers_per_block": 2, "norm_eps": 1e-5, "norm_num_groups": 32,
                "out_channels": 4, "sample_size": 64
            }),
        ),
        (
            "vae/config.json",
            json!({
                "_class_name": "AutoencoderKL", "act_fn": "silu",
                "block_out_channels": [128, 256, 512, 512],
                "down_block_types": vec!["DownEncoderBlock2D"; 4],
                "up_block_types": vec!["UpDecoderBlock2D"; 4],
                "in_channels": 3, "out_channels": 3, "latent_channels": 4,
                "layers_per_block": 2, "norm_num_groups": 32, "sample_size": 512,
                "scaling_factor": 0.18215
            }),
        ),
    ]
}

/// The JSON of config file `rel` (e.g. `unet/config.json`, SD 1.5's UNet: 860 M parameters).
pub(crate) fn config(rel: &str) -> Vec<u8> {
    let configs = configs();
    let (_, v) = configs
        .iter()
        .find(|(r, _)| *r == rel)
        .expect("a listed config file");
    serde_json::to_vec(v).expect("JSON values")
}

/// Writes the folder into `dir` (created; existing files are replaced) from `seed`.
pub fn write(dir: &Path, seed: u64) -> Result<Written> {
    let put = |rel: &str, bytes: &[u8]| {
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        }
        std::fs::write(&path, bytes).map_err(|e| Error::io(&path, e))
    };
    let configs = configs();
    for (rel, value) in &configs {
        put(rel, &serde_json::to_vec_pretty(value).expect("JSON values"))?;
    }
    for (rel, bytes) in tokenizer_files(Family::Sd1) {
        put(rel, &bytes)?;
    }
    let device = Device::flex();
    // The keys and shapes each loader asks for, in order.
    let trace = |name: &str, load: &dyn Fn(&mut TensorStore) -> Result<()>| {
        let mut store = TensorStore::tracing(name, 0);
        load(&mut store)?;
        Ok::<_, Error>(store.traced())
    };
    let te_cfg = ClipTextConfig::from_json(&config("text_encoder/config.json"), "text_encoder")?;
    let unet_cfg = UNetConfig::from_json(&config("unet/config.json"), "unet")?;
    let vae_cfg = VaeConfig::from_json(&config("vae/config.json"), "vae")?;
    let parts = [
        (
            "text_encoder/model.safetensors",
            trace("text_encoder", &|s| {
                ClipTextModel::load(s, &te_cfg, &device).map(drop)
            })?,
        ),
        (
            "unet/diffusion_pytorch_model.safetensors",
            trace("unet", &|s| {
                UNet2DConditionModel::load(s, &unet_cfg, &device).map(drop)
            })?,
        ),
        (
            "vae/diffusion_pytorch_model.safetensors",
            trace("vae", &|s| {
                AutoencoderKL::load(s, &vae_cfg, &device).map(drop)
            })?,
        ),
    ];
    let mut written = Written {
        parameters: Vec::new(),
        bytes: 0,
    };
    let values = TensorStore::initialised("random", seed);
    for (rel, mut keys) in parts {
        keys.sort();
        let path = dir.join(rel);
        write_f16(&path, &keys, |key, shape| {
            let mut v = values.read_f32(key, shape)?;
            if shape.len() >= 2 {
                v.iter_mut().for_each(|x| *x *= 0.5);
            }
            Ok(v)
        })?;
        let n: u64 = keys
            .iter()
            .map(|(_, s)| s.iter().product::<usize>() as u64)
            .sum();
        let component = rel.split('/').next().unwrap_or(rel);
        written.parameters.push((component.to_string(), n));
    }
    written.bytes = walk_bytes(dir)?;
    Ok(written)
}

/// Writes a safetensors file of f16 tensors `keys` (sorted), each from `values`, one tensor at
/// a time.
fn write_f16(
    path: &Path,
    keys: &[(String, Vec<usize>)],
    values: impl Fn(&str, &[usize]) -> Result<Vec<f32>>,
) -> Result<()> {
    let mut header = serde_json::Map::new();
    let mut offset = 0usize;
    for (key, shape) in keys {
        let bytes = shape.iter().product::<usize>() * 2;
        header.insert(
            key.clone(),
            json!({"dtype": "F16", "shape": shape, "data_offsets": [offset, offset + bytes]}),
        );
        offset += bytes;
    }
    let mut header = serde_json::to_vec(&header).expect("JSON values");
    // Pad with spaces so the data starts 8-aligned, as safetensors writers do.
    header.resize(header.len().next_multiple_of(8), b' ');
    let io = |e| Error::io(path, e);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    }
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).map_err(io)?);
    out.write_all(&(header.len() as u64).to_le_bytes())
        .map_err(io)?;
    out.write_all(&header).map_err(io)?;
    for (key, shape) in keys {
        let data: Vec<u8> = values(key, shape)?
            .into_iter()
            .flat_map(|v| half::f16::from_f32(v).to_le_bytes())
            .collect();
        out.write_all(&data).map_err(io)?;
    }
    out.flush().map_err(io)?;
    Ok(())
}

/// Bytes of every file under `dir`.
fn walk_bytes(dir: &Path) -> Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let meta = entry.metadata().map_err(|e| Error::io(entry.path(), e))?;
        total += if meta.is_dir() {
            walk_bytes(&entry.path())?
        } else {
            meta.len()
        };
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every config parses with our loaders and has SD 1.5's sizes.
    #[test]
    fn the_configs_are_sd15s() {
        let unet = UNetConfig::from_json(&config("unet/config.json"), "unet").unwrap();
        assert_eq!(unet.block_out_channels, [320, 640, 1280, 1280]);
        let te = ClipTextConfig::from_json(&config("text_encoder/config.json"), "te").unwrap();
        assert_eq!(te.hidden_size, 768);
        let vae = VaeConfig::from_json(&config("vae/config.json"), "vae").unwrap();
        assert_eq!(vae.scale_factor(), 8);
    }
}
