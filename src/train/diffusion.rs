//! Stage 2: the text encoder, the UNet and its AU branch, trained together on cached VAE
//! latents with the DDPM ε-prediction loss (Stable Diffusion's recipe, optionally Min-SNR-γ
//! weighted): caption dropout and AU dropout (zeros, the pipeline's unconditional AU input) for
//! classifier-free guidance.
//!
//! A model is described by its non-weight files ([`ModelFiles`]: configs, tokenizer,
//! scheduler), so the same code trains synfer-tiny from scratch and fine-tunes a loaded
//! diffusers folder; [`export_folder`] writes the result back in diffusers layout.

use std::collections::BTreeMap;
use std::path::Path;

use burn::module::Module;
use burn::tensor::{Device, Int, Tensor, TensorData};
use rand::Rng;
use rand_distr::{Distribution, StandardNormal};

use super::data::Dataset;
use super::export::KeyMap;
use super::lora;
use super::params;
use super::run::{LoopConfig, LossEntry, RunDir, train};
use super::schedule::{Batches, step_rng};
use super::tensors::{self, Precision};
use crate::au::FINEFACE;
use crate::au::encoder::{AuAdapterConfig, AuEncoder};
use crate::error::{Error, Result};
use crate::files::write_atomic;
use crate::pipeline::latents::HostTensor;
use crate::pipeline::load_tokenizer;
use crate::pipeline::source::{FileSource, MemorySource};
use crate::scheduler::schedule::{alphas_cumprod, scaled_linear_betas};
use crate::text_encoder::{ClipTextConfig, ClipTextModel};
use crate::tokenizer::ClipTokenizer;
use crate::unet::attention::AuContext;
use crate::unet::{UNet2DConditionModel, UNetConfig};
use crate::vae::{AutoencoderKL, VaeConfig};
use crate::weights::TensorStore;

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
        unet.attach_au_adapter(&root)?;
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
                unet.attach_au_adapter(&root)?;
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

/// VAE latents of every dataset image (and of its mirror image): mean and standard deviation
/// of the encoder's Gaussian, `[n, c, h, w]` flattened per image.
#[derive(Debug, Clone)]
pub struct LatentCache {
    /// Latent shape `[c, h, w]`.
    pub shape: [usize; 3],
    /// Means, `2n` images (image `i` at `2i`, its mirror at `2i + 1`).
    pub mean: Vec<f32>,
    /// Standard deviations, same layout.
    pub std: Vec<f32>,
}

impl LatentCache {
    /// Encodes `data` with `vae` in batches of `batch`.
    pub fn encode(data: &Dataset, vae: &AutoencoderKL, batch: usize, device: &Device) -> Self {
        let mut mean = Vec::new();
        let mut std = Vec::new();
        let mut shape = [0; 3];
        let idx: Vec<usize> = (0..data.len()).flat_map(|i| [i, i]).collect();
        let flips: Vec<bool> = (0..data.len()).flat_map(|_| [false, true]).collect();
        for (ids, flip) in idx.chunks(batch.max(1)).zip(flips.chunks(batch.max(1))) {
            let dist = vae.encode(data.images(ids, flip, device));
            let [_, c, h, w] = dist.mean.dims();
            shape = [c, h, w];
            let s = (dist.logvar * 0.5).exp();
            mean.extend(host(dist.mean));
            std.extend(host(s));
        }
        LatentCache { shape, mean, std }
    }

    /// `1 / σ` of latents sampled from the cache (SD's `scaling_factor`: unit-variance
    /// diffusion inputs): `σ² = Var(mean) + E[std²]`.
    pub fn scaling_factor(&self) -> f64 {
        let n = self.mean.len().max(1) as f64;
        let mu = self.mean.iter().map(|v| f64::from(*v)).sum::<f64>() / n;
        let var_mean = self
            .mean
            .iter()
            .map(|v| (f64::from(*v) - mu).powi(2))
            .sum::<f64>()
            / n;
        let noise = self.std.iter().map(|s| f64::from(*s).powi(2)).sum::<f64>() / n;
        1.0 / (var_mean + noise).sqrt().max(1e-6)
    }
}

fn host(t: Tensor<4>) -> Vec<f32> {
    t.into_data().try_into_vec_as::<f32>().unwrap_or_default()
}

/// Diffusion stage settings.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct DiffusionStage {
    /// Images per step.
    pub batch: usize,
    /// Seed of batches, timesteps and noise.
    pub seed: u64,
    /// Probability of replacing a caption with `""`.
    pub caption_dropout: f64,
    /// Probability of replacing an AU vector with zeros.
    pub au_dropout: f64,
    /// The VAE's `scaling_factor`.
    pub scaling_factor: f64,
    /// What is updated.
    pub trainable: Trainable,
    /// Min-SNR-γ loss weighting (Hang et al. 2023): each item's ε loss times
    /// `min(SNR(t), γ) / SNR(t)`; `None`: plain mean.
    #[serde(default)]
    pub min_snr_gamma: Option<f64>,
    /// Rank of the LoRA updates ([`Trainable::Lora`]).
    #[serde(default)]
    pub lora_rank: Option<usize>,
}

/// Trains (or resumes) the diffusion stage in `run`.
#[allow(clippy::too_many_arguments)]
pub fn train_diffusion(
    run: &RunDir,
    data: &Dataset,
    cache: &LatentCache,
    tokenizer: &ClipTokenizer,
    model: Denoiser,
    stage: &DiffusionStage,
    cfg: &LoopConfig,
    device: &Device,
    on_step: impl FnMut(&LossEntry),
) -> Result<(Denoiser, super::ema::Ema)> {
    if data.is_empty() || cache.mean.len() != 2 * data.len() * cache.shape.iter().product::<usize>()
    {
        return Err(Error::request(
            "data",
            "the latent cache does not match the dataset",
        ));
    }
    let model = params::freeze(model, |p| stage.trainable.includes(p));
    let len = tokenizer.max_length();
    let mut captions = Vec::with_capacity(data.len() * len);
    for r in &data.records {
        captions.extend(tokenizer.encode(&r.caption)?.ids.iter().map(|&i| i as i64));
    }
    let empty: Vec<i64> = tokenizer
        .encode("")?
        .ids
        .iter()
        .map(|&i| i as i64)
        .collect();
    let acp = alphas_cumprod(&scaled_linear_betas(0.00085, 0.012, 1000));
    let per: usize = cache.shape.iter().product();
    let n_aus = FINEFACE.codes.len();
    let mut batches = Batches::new(data.len(), stage.seed);
    let loss_of = |m: &Denoiser, step: u64| -> Result<Tensor<1>> {
        let idx = batches.batch(step, stage.batch);
        let b = idx.len();
        let mut rng = step_rng(stage.seed, step, 2);
        let mut z = Vec::with_capacity(b * per);
        let mut noise = Vec::with_capacity(b * per);
        let (mut a, mut s) = (Vec::with_capacity(b * per), Vec::with_capacity(b * per));
        let mut ts = Vec::with_capacity(b);
        let mut weights = Vec::with_capacity(b);
        let mut ids = Vec::with_capacity(b * len);
        let mut aus = Vec::with_capacity(b * n_aus);
        for &i in &idx {
            let j = 2 * i + usize::from(rng.random_bool(0.5));
            let t = rng.random_range(0..acp.len());
            let (sa, sb) = (acp[t].sqrt(), (1.0 - acp[t]).sqrt());
            for k in j * per..(j + 1) * per {
                let e: f32 = StandardNormal.sample(&mut rng);
                let latent = (cache.mean[k] + cache.std[k] * e) * stage.scaling_factor as f32;
                let n: f32 = StandardNormal.sample(&mut rng);
                z.push(latent);
                noise.push(n);
                a.push(sa);
                s.push(sb);
            }
            ts.push(t as f32);
            let snr = f64::from(acp[t] / (1.0 - acp[t]));
            weights.push(match stage.min_snr_gamma {
                Some(g) => (snr.min(g) / snr) as f32,
                None => 1.0,
            });
            if rng.random_bool(stage.caption_dropout) {
                ids.extend_from_slice(&empty);
            } else {
                ids.extend_from_slice(&captions[i * len..(i + 1) * len]);
            }
            if rng.random_bool(stage.au_dropout) {
                aus.extend(std::iter::repeat_n(0.0, n_aus));
            } else {
                aus.extend_from_slice(&data.aus[i * n_aus..(i + 1) * n_aus]);
            }
        }
        let [c, h, w] = cache.shape;
        let shape = [b, c, h, w];
        let t4 = |v: Vec<f32>| Tensor::<4>::from_data(TensorData::new(v, shape), device);
        let noise = t4(noise);
        let x = t4(z) * t4(a) + noise.clone() * t4(s);
        let ids = Tensor::<2, Int>::from_data(TensorData::new(ids, [b, len]), device);
        let aus = Tensor::<2>::from_data(TensorData::new(aus, [b, n_aus]), device);
        let pred = m.forward(x, &ts, ids, aus);
        let per_item = (pred - noise)
            .powi_scalar(2)
            .reshape([b, c * h * w])
            .mean_dim(1);
        let weights = Tensor::<2>::from_data(TensorData::new(weights, [b, 1]), device);
        Ok((per_item * weights).mean())
    };
    train(run, model, device, cfg, loss_of, on_step)
}

/// Which weights of a run to take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunWeights {
    /// The EMA average (the raw parameters when the run kept none).
    Ema,
    /// The raw parameters of the last checkpoint.
    Raw,
}

/// Loads a run's trained weights into `module`.
pub fn load_trained<M: Module>(module: M, run: &Path, which: RunWeights) -> Result<M> {
    let dir = run.join("checkpoint");
    let ema = dir.join("ema.safetensors");
    if which == RunWeights::Ema {
        let values = tensors::load(&ema)?;
        if !values.is_empty() {
            return params::write(module, &values, &ema.display().to_string());
        }
    }
    let file = dir.join("params.safetensors");
    params::write(module, &tensors::load(&file)?, &file.display().to_string())
}

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

/// The VAE's parameter path → key map for `files`' VAE config.
pub fn vae_key_map(files: &ModelFiles) -> Result<KeyMap> {
    let device = Device::flex();
    let mut store = TensorStore::tracing("trace", 0);
    let vae = AutoencoderKL::load(&mut store, &files.vae()?, &device)?;
    KeyMap::trace(&vae, &[(0, store.traced())])
}
