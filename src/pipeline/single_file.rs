//! Single-file checkpoints in the original Stable Diffusion layout (`--model FILE.safetensors` or
//! `.ckpt`), opened as a model folder in memory: the weights split and renamed by
//! [`crate::weights::ldm`], the configuration inferred from the weights' shapes as diffusers'
//! `from_single_file` does for SD 1.x / 2.x, or taken from a diffusers folder (`--config DIR`,
//! diffusers' `from_single_file(config=…)`) for other shapes.
//!
//! Inferred: the UNet's channels, blocks, layers, cross-attention width and projection kind,
//! with SD 1.x's 8 heads or SD 2.x's 64-wide heads; the VAE's channels and levels (scaling
//! factor 0.18215); the text encoder's sizes (CLIP ViT-L's `quick_gelu`, OpenCLIP's `gelu`);
//! the scheduler of the family (SD 1.5's PNDM, SD 2.x's DDIM) with the prediction type from
//! `prediction_type` (the caller's), else the file's `modelspec.prediction_type` metadata, else
//! ε. The tokenizer is the folder's with `--config`, else CLIP's BPE (`assets/clip`; padding
//! with `!` for SD 2.x). `.ckpt` files go through the safe pickle reader (nothing executed).

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use super::source::{DirSource, FileSource, MemorySource};
use crate::error::{Error, Result};
use crate::weights::TensorStore;
use crate::weights::ldm::{self, Family, LdmComponents};

/// How a single file is read.
#[derive(Debug, Clone, Default)]
pub struct SingleFileOptions {
    /// A diffusers folder whose configs (and tokenizer) describe the file.
    pub config: Option<PathBuf>,
    /// Use the EMA copy of the UNet (`model_ema.*`).
    pub ema: bool,
    /// `epsilon`, `v_prediction` (or `v`), `sample`: overrides the file's metadata.
    pub prediction_type: Option<String>,
}

/// Whether `path` names a single-file checkpoint (a file, not a folder).
pub fn is_single_file(path: &Path) -> bool {
    path.is_file()
}

/// The files of a diffusers folder (configs, tokenizer) copied from `--config`; the scheduler
/// config is read apart, as the prediction type may change it.
const CONFIG_FILES: [&str; 9] = [
    "model_index.json",
    "unet/config.json",
    "vae/config.json",
    "text_encoder/config.json",
    "tokenizer/vocab.json",
    "tokenizer/merges.txt",
    "tokenizer/tokenizer_config.json",
    "tokenizer/special_tokens_map.json",
    "tokenizer/tokenizer.json",
];

/// The checkpoint `name` (its extension decides the reader) from its bytes.
fn reads(name: &str, bytes: Vec<u8>) -> Result<TensorStore> {
    let name = name.to_string();
    match Path::new(&name).extension().and_then(|e| e.to_str()) {
        Some("safetensors") => TensorStore::from_bytes(name, bytes),
        Some("ckpt" | "pt" | "pth") => {
            TensorStore::from_torch_bytes_under(name, bytes, "state_dict")
        }
        _ => Err(Error::request(
            "model",
            format!("{name}: a single-file model must end in .safetensors or .ckpt"),
        )),
    }
}

fn prediction_name(value: &str, file: &str) -> Result<&'static str> {
    match value {
        "epsilon" | "eps" => Ok("epsilon"),
        "v" | "v_prediction" | "v-prediction" => Ok("v_prediction"),
        "sample" => Ok("sample"),
        other => Err(Error::config(
            file,
            "prediction_type",
            other,
            "expected epsilon, v_prediction or sample",
        )),
    }
}

/// Opens the checkpoint at `path` as a model folder in memory.
pub fn open(path: &Path, options: &SingleFileOptions) -> Result<MemorySource> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    open_bytes(&path.display().to_string(), bytes, options)
}

/// [`open`] for a checkpoint held in memory; `name` (a file name: its extension says
/// `.safetensors` or `.ckpt`) names it in errors.
pub fn open_bytes(name: &str, bytes: Vec<u8>, options: &SingleFileOptions) -> Result<MemorySource> {
    let name = name.to_string();
    let store = reads(&name, bytes)?;
    let config = options.config.as_deref().map(DirSource::new).transpose()?;
    let text_layers = match &config {
        Some(dir) => {
            let bytes = dir.require("text_encoder/config.json")?;
            let v: Value = serde_json::from_slice(&bytes)
                .map_err(|e| Error::json("text_encoder/config.json", e))?;
            v.get("num_hidden_layers")
                .and_then(Value::as_u64)
                .map(|n| n as usize)
        }
        None => None,
    };
    let parts = ldm::split(&store, options.ema, text_layers, &name)?;
    let prediction = match (
        &options.prediction_type,
        store.metadata().get("modelspec.prediction_type"),
    ) {
        (Some(p), _) => Some(prediction_name(p, "--prediction-type")?),
        (None, Some(p)) => Some(prediction_name(
            p,
            &format!("{name} (modelspec.prediction_type)"),
        )?),
        (None, None) => None,
    };
    drop(store);
    let mut src = MemorySource::new(name.clone());
    src.insert(
        "unet/diffusion_pytorch_model.safetensors",
        ldm::to_safetensors(&parts.unet)?,
    );
    src.insert(
        "vae/diffusion_pytorch_model.safetensors",
        ldm::to_safetensors(&parts.vae)?,
    );
    src.insert(
        "text_encoder/model.safetensors",
        ldm::to_safetensors(&parts.text_encoder)?,
    );
    let mut scheduler: Value = match &config {
        Some(dir) => {
            for rel in CONFIG_FILES {
                if let Some(bytes) = dir.read(rel)? {
                    src.insert(rel, bytes);
                }
            }
            // Python's json writes bare `-Infinity` (e.g. `lambda_min_clipped`): quoted, as the
            // scheduler config reader accepts it.
            let bytes = dir.require("scheduler/scheduler_config.json")?;
            let text = String::from_utf8_lossy(&bytes);
            serde_json::from_str(&crate::scheduler::quote_non_finite_tokens(&text))
                .map_err(|e| Error::json("scheduler/scheduler_config.json", e))?
        }
        None => {
            for (rel, value) in inferred_configs(&parts, &name)? {
                src.insert(rel, serde_json::to_vec_pretty(&value).expect("JSON values"));
            }
            for (rel, bytes) in tokenizer_files(parts.family) {
                src.insert(rel, bytes);
            }
            family_scheduler(parts.family)
        }
    };
    if let Some(p) = prediction {
        scheduler["prediction_type"] = json!(p);
    }
    src.insert(
        "scheduler/scheduler_config.json",
        serde_json::to_vec_pretty(&scheduler).expect("JSON values"),
    );
    Ok(src)
}

/// The scheduler diffusers gives each family: SD 1.5's PNDM (PLMS), SD 2.x's DDIM.
fn family_scheduler(family: Family) -> Value {
    let common = json!({
        "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
        "num_train_timesteps": 1000, "set_alpha_to_one": false, "steps_offset": 1,
        "clip_sample": false, "prediction_type": "epsilon",
    });
    let mut v = common;
    match family {
        Family::Sd1 => {
            v["_class_name"] = json!("PNDMScheduler");
            v["skip_prk_steps"] = json!(true);
        }
        Family::Sd2 => v["_class_name"] = json!("DDIMScheduler"),
    }
    v
}

/// CLIP's BPE with the family's special tokens (SD 2.x pads with `!`).
pub(crate) fn tokenizer_files(family: Family) -> Vec<(&'static str, Vec<u8>)> {
    let pad = match family {
        Family::Sd1 => "<|endoftext|>",
        Family::Sd2 => "!",
    };
    let config = json!({
        "tokenizer_class": "CLIPTokenizer", "model_max_length": 77,
        "bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>", "pad_token": pad,
    });
    vec![
        (
            "tokenizer/vocab.json",
            include_bytes!("../../assets/clip/vocab.json").to_vec(),
        ),
        (
            "tokenizer/merges.txt",
            include_bytes!("../../assets/clip/merges.txt").to_vec(),
        ),
        (
            "tokenizer/tokenizer_config.json",
            serde_json::to_vec_pretty(&config).expect("JSON values"),
        ),
    ]
}

/// The dims of `key` in `store`, or an error naming it.
fn dims<'a>(store: &'a TensorStore, key: &str, file: &str) -> Result<&'a [usize]> {
    store.shape(key).ok_or_else(|| Error::MissingKey {
        file: file.to_string(),
        key: key.to_string(),
    })
}

fn count(store: &TensorStore, prefix: &str) -> usize {
    store
        .keys()
        .filter_map(|k| k.strip_prefix(prefix))
        .filter_map(|r| r.split('.').next()?.parse::<usize>().ok())
        .collect::<std::collections::BTreeSet<_>>()
        .len()
}

/// `model_index.json` and the UNet, VAE and text-encoder configs, from the weights' shapes.
fn inferred_configs(parts: &LdmComponents, file: &str) -> Result<Vec<(&'static str, Value)>> {
    let (u, v, t) = (&parts.unet, &parts.vae, &parts.text_encoder);
    let sd2 = parts.family == Family::Sd2;
    // UNet.
    let levels = count(u, "down_blocks.");
    let mut channels = Vec::new();
    let mut down_types = Vec::new();
    for b in 0..levels {
        channels.push(dims(u, &format!("down_blocks.{b}.resnets.0.conv1.weight"), file)?[0]);
        let attn = u.contains(&format!("down_blocks.{b}.attentions.0.proj_in.weight"));
        down_types.push(if attn {
            "CrossAttnDownBlock2D"
        } else {
            "DownBlock2D"
        });
    }
    let up_types: Vec<&str> = (0..levels)
        .map(|b| {
            if u.contains(&format!("up_blocks.{b}.attentions.0.proj_in.weight")) {
                "CrossAttnUpBlock2D"
            } else {
                "UpBlock2D"
            }
        })
        .collect();
    let layers = count(u, "down_blocks.0.resnets.");
    let conv_in = dims(u, "conv_in.weight", file)?;
    let conv_out = dims(u, "conv_out.weight", file)?;
    let attn_level = (0..levels)
        .find(|b| down_types[*b] == "CrossAttnDownBlock2D")
        .unwrap_or(0);
    let to_k =
        format!("down_blocks.{attn_level}.attentions.0.transformer_blocks.0.attn2.to_k.weight");
    let cross = dims(u, &to_k, file)?[1];
    let proj_in = format!("down_blocks.{attn_level}.attentions.0.proj_in.weight");
    let linear = dims(u, &proj_in, file)?.len() == 2;
    let heads: Value = if sd2 {
        json!(channels.iter().map(|c| c / 64).collect::<Vec<_>>())
    } else {
        json!(8)
    };
    let unet = json!({
        "_class_name": "UNet2DConditionModel",
        "sample_size": 64, "in_channels": conv_in[1], "out_channels": conv_out[0],
        "down_block_types": down_types, "up_block_types": up_types,
        "block_out_channels": channels, "layers_per_block": layers,
        "cross_attention_dim": cross, "attention_head_dim": heads,
        "use_linear_projection": linear, "norm_num_groups": 32,
        "flip_sin_to_cos": true, "freq_shift": 0,
    });
    // VAE.
    let vae_levels = count(v, "encoder.down_blocks.");
    let vae_channels: Vec<usize> = (0..vae_levels)
        .map(|b| {
            dims(
                v,
                &format!("encoder.down_blocks.{b}.resnets.0.conv2.weight"),
                file,
            )
            .map(|d| d[0])
        })
        .collect::<Result<_>>()?;
    let quant = dims(v, "quant_conv.weight", file)?[0];
    let vae = json!({
        "_class_name": "AutoencoderKL",
        "in_channels": dims(v, "encoder.conv_in.weight", file)?[1],
        "out_channels": dims(v, "decoder.conv_out.weight", file)?[0],
        "down_block_types": vec!["DownEncoderBlock2D"; vae_levels],
        "up_block_types": vec!["UpDecoderBlock2D"; vae_levels],
        "block_out_channels": vae_channels,
        "layers_per_block": count(v, "encoder.down_blocks.0.resnets."),
        "latent_channels": quant / 2, "norm_num_groups": 32, "sample_size": 512,
        "scaling_factor": 0.18215,
    });
    // Text encoder.
    let token = dims(t, "text_model.embeddings.token_embedding.weight", file)?;
    let (vocab, hidden) = (token[0], token[1]);
    let text = json!({
        "architectures": ["CLIPTextModel"],
        "vocab_size": vocab, "hidden_size": hidden,
        "intermediate_size": dims(t, "text_model.encoder.layers.0.mlp.fc1.weight", file)?[0],
        "num_hidden_layers": count(t, "text_model.encoder.layers."),
        "num_attention_heads": hidden / 64,
        "max_position_embeddings": dims(t, "text_model.embeddings.position_embedding.weight", file)?[0],
        "hidden_act": if sd2 { "gelu" } else { "quick_gelu" },
        "layer_norm_eps": 1e-5,
    });
    let index = json!({
        "_class_name": "StableDiffusionPipeline",
        "scheduler": ["diffusers", if sd2 { "DDIMScheduler" } else { "PNDMScheduler" }],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    });
    Ok(vec![
        ("model_index.json", index),
        ("unet/config.json", unet),
        ("vae/config.json", vae),
        ("text_encoder/config.json", text),
    ])
}
