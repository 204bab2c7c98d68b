//! Loading a diffusers-layout Stable Diffusion folder: `model_index.json` and the component
//! folders, with weights from (possibly sharded or fp16-variant) safetensors files, LoRAs
//! merged and an AU adapter attached. Strict: any missing, unused or mis-shaped weight fails.

use burn::tensor::Device;
use serde_json::Value;

use super::source::FileSource;
use super::{ModelDefaults, ModelInfo, Pipeline, memory};
use crate::au::{AdapterWeights, AuAdapter, AuAdapterConfig};
use crate::error::{Error, Result};
use crate::scheduler::{SchedulerConfig, SchedulerKind};
use crate::text_encoder::{ClipTextConfig, ClipTextModel};
use crate::tokenizer::{ClipTokenizer, TokenizerSettings};
use crate::unet::{UNet2DConditionModel, UNetConfig};
use crate::vae::{AutoencoderKL, VaeConfig};
use crate::weights::TensorStore;
use crate::weights::lora::LoraWeights;

/// The component classes we can run, per `model_index.json` entry.
const EXPECTED: &[(&str, &[&str])] = &[
    ("text_encoder", &["CLIPTextModel"]),
    ("tokenizer", &["CLIPTokenizer", "CLIPTokenizerFast"]),
    ("unet", &["UNet2DConditionModel"]),
    ("vae", &["AutoencoderKL"]),
    (
        "scheduler",
        &[
            "DDIMScheduler",
            "DPMSolverMultistepScheduler",
            "EulerDiscreteScheduler",
            "PNDMScheduler",
            "LMSDiscreteScheduler",
            "EulerAncestralDiscreteScheduler",
            "DDPMScheduler",
            "UniPCMultistepScheduler",
            "HeunDiscreteScheduler",
            "KDPM2DiscreteScheduler",
            "DEISMultistepScheduler",
            "LCMScheduler",
        ],
    ),
];

/// Checks `model_index.json`: every component we need is present with a class we support.
/// Optional components (`safety_checker`, `feature_extractor`, `image_encoder`) are not run.
pub(crate) fn check_model_index(src: &dyn FileSource) -> Result<Value> {
    let file = "model_index.json";
    let bytes = src.require(file)?;
    let index: Value = serde_json::from_slice(&bytes).map_err(|e| Error::json(file, e))?;
    for (component, classes) in EXPECTED {
        let entry = index.get(*component).ok_or_else(|| {
            Error::config(file, *component, "missing", "this component is required")
        })?;
        let class = entry
            .as_array()
            .and_then(|a| a.get(1))
            .and_then(Value::as_str)
            .ok_or_else(|| {
                Error::config(file, *component, entry, "expected [library, class_name]")
            })?;
        if !classes.contains(&class) {
            return Err(Error::config(
                file,
                *component,
                entry,
                format!("unsupported class; supported: {}", classes.join(", ")),
            ));
        }
    }
    Ok(index)
}

/// Loads the weights of `component` (e.g. `unet`) whose file stem is `stem`
/// (`diffusion_pytorch_model` or `model`): a single file, a sharded index, or an fp16 variant.
pub(crate) fn load_store(src: &dyn FileSource, component: &str, stem: &str) -> Result<TensorStore> {
    let single = format!("{component}/{stem}.safetensors");
    if let Some(store) = src.tensors(&single)? {
        return Ok(store);
    }
    let index_name = format!("{component}/{stem}.safetensors.index.json");
    if let Some(bytes) = src.read(&index_name)? {
        let index: Value =
            serde_json::from_slice(&bytes).map_err(|e| Error::json(&index_name, e))?;
        let map = index
            .get("weight_map")
            .and_then(Value::as_object)
            .ok_or_else(|| {
                Error::config(&index_name, "weight_map", "missing", "expected an object")
            })?;
        let mut shards: Vec<&str> = map.values().filter_map(Value::as_str).collect();
        shards.sort_unstable();
        shards.dedup();
        let mut store: Option<TensorStore> = None;
        for shard in shards {
            let shard = src.require_tensors(&format!("{component}/{shard}"))?;
            match store.as_mut() {
                Some(s) => s.extend(shard)?,
                None => store = Some(shard),
            }
        }
        return store
            .map(|mut s| {
                s.rename(&index_name);
                s
            })
            .ok_or_else(|| Error::config(&index_name, "weight_map", "{}", "no shards listed"));
    }
    let variant = format!("{component}/{stem}.fp16.safetensors");
    if let Some(store) = src.tensors(&variant)? {
        return Ok(store);
    }
    let pickle = format!("{component}/{stem}.bin");
    if src.read(&pickle)?.is_some() {
        return Err(Error::SafeTensors {
            file: pickle,
            message: "PyTorch pickle weights are not loaded; convert the folder to safetensors \
                      (diffusers: pipe.save_pretrained(dir, safe_serialization=True))"
                .into(),
        });
    }
    Err(Error::Io {
        path: format!("{}/{single}", src.describe()).into(),
        source: std::io::Error::new(std::io::ErrorKind::NotFound, "weights file not found"),
    })
}

/// Loads every component of `src` on `device`, with `loras` merged and `adapter` attached (the
/// folder's own `au_adapter/` when `adapter` is `None`).
pub(crate) fn load(
    src: &dyn FileSource,
    device: &Device,
    adapter: Option<AdapterWeights>,
    loras: &[LoraWeights],
) -> Result<Pipeline> {
    check_model_index(src)?;
    let mut tokenizer = load_tokenizer(src)?;

    let te_cfg = ClipTextConfig::from_json(
        &src.require("text_encoder/config.json")?,
        "text_encoder/config.json",
    )?;
    let mut te_store = load_store(src, "text_encoder", "model")?;
    for lora in loras {
        te_store.merge_lora(&lora.store, "text_encoder", lora.scale)?;
    }
    let text_encoder = ClipTextModel::load(&te_store, &te_cfg, device)?;
    drop(te_store);
    tokenizer.set_max_length(tokenizer.max_length().min(text_encoder.max_positions()));

    let unet_file = "unet/config.json";
    let unet_cfg = UNetConfig::from_json(&src.require(unet_file)?, unet_file)?;
    let mut unet_store = load_store(src, "unet", "diffusion_pytorch_model")?;
    for lora in loras {
        unet_store.merge_lora(&lora.store, "unet", lora.scale)?;
        lora.store.finish()?;
    }
    let mut unet = UNet2DConditionModel::load(&unet_store, &unet_cfg, device)?;
    drop(unet_store);
    let adapter = match adapter {
        Some(a) => Some(a),
        None => match src.read("au_adapter/config.json")? {
            Some(bytes) => Some(AdapterWeights {
                config: AuAdapterConfig::from_json(&bytes, "au_adapter/config.json")?,
                store: load_store(src, "au_adapter", "diffusion_pytorch_model")?,
            }),
            None => None,
        },
    };
    let au_adapter = adapter
        .map(|a| AuAdapter::attach(a, &mut unet, device))
        .transpose()?;

    let vae_file = "vae/config.json";
    let vae_cfg = VaeConfig::from_json(&src.require(vae_file)?, vae_file)?;
    let mut vae_store = load_store(src, "vae", "diffusion_pytorch_model")?;
    let vae = AutoencoderKL::load(&mut vae_store, &vae_cfg, device)?;
    drop(vae_store);

    let sched_file = "scheduler/scheduler_config.json";
    let sched_err = |source| Error::Scheduler {
        file: sched_file.into(),
        source,
    };
    let sched_text = String::from_utf8(src.require(sched_file)?).map_err(|_| Error::Json {
        file: sched_file.into(),
        message: "not UTF-8".into(),
    })?;
    let mut scheduler = SchedulerConfig::from_json_str(&sched_text).map_err(sched_err)?;
    sd_pipeline_scheduler_fixups(&mut scheduler);
    // Validate now rather than at the first request. A class we cannot build (e.g.
    // LMSDiscreteScheduler) is checked through DDIM, the kind its shared keys carry over to;
    // requests must then name a scheduler.
    let probe = match scheduler.kind() {
        Ok(_) => scheduler.clone(),
        Err(_) => scheduler.clone().with_kind(SchedulerKind::Ddim),
    };
    probe.build(10).map_err(sched_err)?;

    let context_dims = unet_cfg.down_plans(unet_file)?;
    if let Some(p) = context_dims
        .iter()
        .find(|p| p.context_dim != te_cfg.hidden_size)
    {
        return Err(Error::config(
            unet_file,
            "cross_attention_dim",
            p.context_dim,
            format!("text_encoder hidden_size is {}", te_cfg.hidden_size),
        ));
    }
    if unet_cfg.in_channels != vae_cfg.latent_channels {
        return Err(Error::config(
            unet_file,
            "in_channels",
            unet_cfg.in_channels,
            format!("vae latent_channels is {}", vae_cfg.latent_channels),
        ));
    }
    let vae_scale_factor = vae_cfg.scale_factor();
    // The default output side obeys the limits a request's width has.
    let sample_size = unet_cfg.sample_side(unet_file)?;
    if sample_size > super::request::MAX_SIDE / vae_scale_factor
        || !(sample_size * vae_scale_factor).is_multiple_of(super::size_multiple(vae_scale_factor))
    {
        return Err(Error::config(
            unet_file,
            "sample_size",
            sample_size,
            format!(
                "× VAE factor {vae_scale_factor} must be a multiple of 8 up to {} pixels",
                super::request::MAX_SIDE
            ),
        ));
    }
    let defaults_file = "synfer.json";
    let defaults: ModelDefaults = match src.read(defaults_file)? {
        Some(bytes) => serde_json::from_slice(&bytes).map_err(|e| Error::json(defaults_file, e))?,
        None => ModelDefaults::default(),
    };
    if let Some(g) = defaults.guidance_scale
        && !(g.is_finite() && g >= 0.0)
    {
        return Err(Error::config(
            defaults_file,
            "guidance_scale",
            g,
            "must be a finite number ≥ 0",
        ));
    }
    if let Some(l) = &defaults.layout
        && !(0.0..=1.0).contains(&l.strength)
    {
        return Err(Error::config(
            defaults_file,
            "layout.strength",
            l.strength,
            "must be in [0, 1]",
        ));
    }
    Ok(Pipeline {
        tokenizer,
        text_encoder,
        unet,
        vae,
        au_adapter,
        guider: None,
        info: ModelInfo {
            source: src.describe(),
            latent_channels: unet_cfg.in_channels,
            vae_scale_factor,
            default_size: sample_size * vae_scale_factor,
            scheduler_class: scheduler.class_name.clone(),
            buffers: memory::BufferProfile {
                unet_levels: unet_cfg
                    .block_out_channels
                    .iter()
                    .zip(unet_cfg.down_plans(unet_file)?)
                    .map(|(&c, plan)| (c, if plan.cross_attn { plan.heads } else { 0 }))
                    .collect(),
                vae_channels: vae_cfg.block_out_channels.clone(),
                vae_factor: vae_scale_factor,
                decode_budget: memory::DECODE_BUDGET,
            },
            defaults,
            files: Default::default(),
        },
        scheduler,
        device: device.clone(),
        buffer_limit: None,
    })
}

/// Loads a tokenizer from the `tokenizer/` folder of `src`.
pub fn load_tokenizer(src: &dyn FileSource) -> Result<ClipTokenizer> {
    let settings = TokenizerSettings::from_json(
        src.read("tokenizer/tokenizer_config.json")?.as_deref(),
        src.read("tokenizer/special_tokens_map.json")?.as_deref(),
    )?;
    match src.read("tokenizer/tokenizer.json")? {
        Some(json) => ClipTokenizer::from_tokenizer_json(&json, &settings),
        None => ClipTokenizer::from_vocab_merges(
            &src.require("tokenizer/vocab.json")?,
            &src.require("tokenizer/merges.txt")?,
            &settings,
        ),
    }
}

/// The corrections `StableDiffusionPipeline.__init__` applies to a folder's scheduler config
/// (for outdated configs): `steps_offset` becomes 1 for every class that has the key, and
/// `clip_sample` becomes false where it is on (DDIM/DDPM default it to true). Overrides made
/// with `with_kind` inherit the corrected values, as diffusers' `from_config` does.
pub(crate) fn sd_pipeline_scheduler_fixups(scheduler: &mut SchedulerConfig) {
    if scheduler.steps_offset.is_some() || scheduler.class_name != "LMSDiscreteScheduler" {
        scheduler.steps_offset = Some(1);
    }
    let clip_default = matches!(
        scheduler.class_name.as_str(),
        "DDIMScheduler" | "DDPMScheduler"
    );
    if scheduler.clip_sample.unwrap_or(clip_default) {
        scheduler.clip_sample = Some(false);
    }
}
