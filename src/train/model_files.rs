//! A model described by its non-weight files ([`ModelFiles`]: configs, tokenizer, scheduler),
//! so the same code trains synfer-tiny from scratch and fine-tunes a loaded diffusers folder;
//! synfer-tiny's own configurations.

use std::path::Path;

use crate::au::FINEFACE;
use crate::au::config::AuAdapterConfig;
use crate::error::{Error, Result};
use crate::pipeline::load::load_tokenizer;
use crate::pipeline::source::{FileSource, MemorySource};
use crate::text_encoder::ClipTextConfig;
use crate::tokenizer::ClipTokenizer;
use crate::unet::UNetConfig;
use crate::vae::VaeConfig;

/// synfer-tiny's text encoder: a 2-layer, 128-wide CLIP text transformer over CLIP's BPE
/// vocabulary, 32 positions (captions are short).
pub const TINY_TEXT_CONFIG: &str = r#"{
  "architectures": ["CLIPTextModel"],
  "model_type": "clip_text_model",
  "vocab_size": 49408,
  "hidden_size": 128,
  "intermediate_size": 512,
  "num_hidden_layers": 2,
  "num_attention_heads": 4,
  "max_position_embeddings": 32,
  "hidden_act": "quick_gelu",
  "layer_norm_eps": 1e-05,
  "projection_dim": 128,
  "bos_token_id": 49406,
  "eos_token_id": 49407,
  "pad_token_id": 49407,
  "attention_dropout": 0.0,
  "initializer_factor": 1.0,
  "initializer_range": 0.02,
  "dtype": "float16"
}"#;

/// synfer-tiny's UNet: 16×16×4 latents, 64/128/128 channels, cross-attention at 8×8 and 4×4.
pub const TINY_UNET_CONFIG: &str = r#"{
  "_class_name": "UNet2DConditionModel",
  "sample_size": 16,
  "in_channels": 4,
  "out_channels": 4,
  "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
  "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
  "mid_block_type": "UNetMidBlock2DCrossAttn",
  "block_out_channels": [64, 128, 128],
  "layers_per_block": 1,
  "attention_head_dim": 8,
  "cross_attention_dim": 128,
  "norm_num_groups": 16,
  "norm_eps": 1e-05,
  "act_fn": "silu",
  "flip_sin_to_cos": true,
  "freq_shift": 0,
  "downsample_padding": 1,
  "use_linear_projection": false
}"#;

/// synfer-tiny's AU adapter: FineFace's encoder (12 AUs, hidden 64, raw AUs, one token).
pub const TINY_ADAPTER_CONFIG: &str = r#"{
  "au_set": "fineface",
  "hidden_dim": 64,
  "include_raw": true,
  "num_tokens": 1,
  "cross_attention_dim": 128,
  "default_au_scale": 1.0
}"#;

/// Stable Diffusion's training schedule, sampled with DDIM.
pub const TINY_SCHEDULER_CONFIG: &str = r#"{
  "_class_name": "DDIMScheduler",
  "num_train_timesteps": 1000,
  "beta_start": 0.00085,
  "beta_end": 0.012,
  "beta_schedule": "scaled_linear",
  "prediction_type": "epsilon",
  "clip_sample": false,
  "set_alpha_to_one": false,
  "steps_offset": 1,
  "timestep_spacing": "leading",
  "trained_betas": null
}"#;

const MODEL_INDEX: &str = r#"{
  "_class_name": "StableDiffusionPipeline",
  "feature_extractor": [null, null],
  "safety_checker": [null, null],
  "requires_safety_checker": false,
  "scheduler": ["diffusers", "DDIMScheduler"],
  "text_encoder": ["transformers", "CLIPTextModel"],
  "tokenizer": ["transformers", "CLIPTokenizer"],
  "unet": ["diffusers", "UNet2DConditionModel"],
  "vae": ["diffusers", "AutoencoderKL"]
}"#;

/// Non-weight files a diffusers folder carries, copied from a base folder on fine-tuning.
pub const CONFIG_FILES: [&str; 11] = [
    "model_index.json",
    "scheduler/scheduler_config.json",
    "text_encoder/config.json",
    "tokenizer/vocab.json",
    "tokenizer/merges.txt",
    "tokenizer/special_tokens_map.json",
    "tokenizer/tokenizer_config.json",
    "tokenizer/tokenizer.json",
    "unet/config.json",
    "vae/config.json",
    "au_adapter/config.json",
];

/// A model's non-weight files (configs, tokenizer, scheduler) by relative path.
#[derive(Debug, Clone)]
pub struct ModelFiles {
    /// The files.
    pub files: MemorySource,
}

impl ModelFiles {
    /// synfer-tiny's files: the configs above plus CLIP's BPE tokenizer files from `tokenizer`
    /// (with `model_max_length` set to the text encoder's 32 positions), and `vae_config`.
    pub fn tiny(tokenizer: &Path, vae_config: &str) -> Result<Self> {
        let mut files = MemorySource::new("synfer-tiny");
        for name in ["vocab.json", "merges.txt", "special_tokens_map.json"] {
            let path = tokenizer.join(name);
            let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
            files.insert(&format!("tokenizer/{name}"), bytes);
        }
        let tok_cfg = serde_json::json!({
            "tokenizer_class": "CLIPTokenizer",
            "model_max_length": 32,
            "do_lower_case": true,
            "bos_token": "<|startoftext|>",
            "eos_token": "<|endoftext|>",
            "unk_token": "<|endoftext|>",
            "pad_token": "<|endoftext|>",
            "add_prefix_space": false,
            "errors": "replace"
        });
        for (rel, text) in [
            ("model_index.json", MODEL_INDEX.to_string()),
            (
                "scheduler/scheduler_config.json",
                TINY_SCHEDULER_CONFIG.into(),
            ),
            ("text_encoder/config.json", TINY_TEXT_CONFIG.into()),
            ("unet/config.json", TINY_UNET_CONFIG.into()),
            ("vae/config.json", vae_config.into()),
            ("au_adapter/config.json", TINY_ADAPTER_CONFIG.into()),
            ("tokenizer/tokenizer_config.json", pretty(&tok_cfg)),
        ] {
            files.insert(rel, text.into_bytes());
        }
        Ok(ModelFiles { files })
    }

    /// The non-weight files of a diffusers folder (those of [`CONFIG_FILES`] it has); an AU
    /// adapter config is added (FineFace layout, [`TINY_ADAPTER_CONFIG`] widths follow the
    /// UNet) when the folder has none.
    pub fn from_folder(src: &dyn FileSource) -> Result<Self> {
        let mut files = MemorySource::new(src.describe());
        for rel in CONFIG_FILES {
            if let Some(bytes) = src.read(rel)? {
                files.insert(rel, bytes);
            }
        }
        if files.read("au_adapter/config.json")?.is_none() {
            let cfg = AuAdapterConfig::fineface();
            files.insert(
                "au_adapter/config.json",
                pretty(&serde_json::to_value(&cfg).unwrap_or_default()).into_bytes(),
            );
        }
        Ok(ModelFiles { files })
    }

    fn parse<T>(&self, rel: &str, f: impl Fn(&[u8], &str) -> Result<T>) -> Result<T> {
        f(&self.files.require(rel)?, rel)
    }

    /// The text encoder config.
    pub fn text(&self) -> Result<ClipTextConfig> {
        self.parse("text_encoder/config.json", ClipTextConfig::from_json)
    }

    /// The UNet config.
    pub fn unet(&self) -> Result<UNetConfig> {
        self.parse("unet/config.json", UNetConfig::from_json)
    }

    /// The AU adapter config (must use FineFace's 12 AUs, the dataset's AU vector).
    pub fn adapter(&self) -> Result<AuAdapterConfig> {
        let rel = "au_adapter/config.json";
        let cfg = self.parse(rel, AuAdapterConfig::from_json)?;
        if cfg.set(rel)? != FINEFACE {
            return Err(Error::config(
                rel,
                "au_set",
                &cfg.au_set,
                "training uses the dataset's FineFace AU vector; set \"fineface\"",
            ));
        }
        Ok(cfg)
    }

    /// The VAE config.
    pub fn vae(&self) -> Result<VaeConfig> {
        self.parse("vae/config.json", VaeConfig::from_json)
    }

    /// The tokenizer, capped to the text encoder's positions.
    pub fn tokenizer(&self) -> Result<ClipTokenizer> {
        let mut tok = load_tokenizer(&self.files)?;
        let positions = self.text()?.max_position_embeddings;
        tok.set_max_length(tok.max_length().min(positions));
        Ok(tok)
    }
}

fn pretty(v: &serde_json::Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default()
}
