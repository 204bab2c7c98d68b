//! Stage 2: the text encoder, the UNet and its AU branch, trained together on cached VAE
//! latents with the DDPM ε-prediction loss (Stable Diffusion's recipe, optionally Min-SNR-γ
//! weighted): caption dropout and AU dropout (zeros, the pipeline's unconditional AU input) for
//! classifier-free guidance.
//!
//! A model is described by its non-weight files ([`ModelFiles`](super::model_files::ModelFiles): configs, tokenizer,
//! scheduler), so the same code trains synfer-tiny from scratch and fine-tunes a loaded
//! diffusers folder; [`export_folder`](super::folder::export_folder) writes the result back in diffusers layout.
use std::collections::BTreeMap;
use std::path::Path;

use burn::module::Module;
use burn::tensor::{Device, Int, Tensor, TensorData};
use rand::Rng;
use rand_distr::{Distribution, StandardNormal};

use super::batches::Batches;
use super::data::Dataset;
use super::denoiser::{Denoiser, Trainable};
use super::params;
use super::run::{LoopConfig, LossEntry, RunDir, train};
use super::tensors::{self, Precision};
use crate::au::FINEFACE;
use crate::error::{Error, Result};
use crate::rng::step_rng;
use crate::scheduler::schedule::{alphas_cumprod, scaled_linear_betas};
use crate::tensor::HostTensor;
use crate::tokenizer::ClipTokenizer;
use crate::vae::AutoencoderKL;

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

impl LatentCache {
    /// The cache stored at `path` (`mean`, `std` tensors), or `data` encoded with `vae` and
    /// stored there; `on_encode` is told when encoding starts.
    pub fn load_or_encode(
        path: &Path,
        data: &Dataset,
        vae: &AutoencoderKL,
        device: &Device,
        on_encode: impl FnOnce(),
    ) -> Result<Self> {
        if path.exists() {
            let t = tensors::load(path)?;
            let get = |k: &str| {
                t.get(k).cloned().ok_or_else(|| Error::MissingKey {
                    file: path.display().to_string(),
                    key: k.into(),
                })
            };
            let (mean, std) = (get("mean")?, get("std")?);
            let shape = [mean.shape[1], mean.shape[2], mean.shape[3]];
            return Ok(LatentCache {
                shape,
                mean: mean.data,
                std: std.data,
            });
        }
        on_encode();
        let cache = LatentCache::encode(data, vae, 32, device);
        let shape = vec![
            2 * data.len(),
            cache.shape[0],
            cache.shape[1],
            cache.shape[2],
        ];
        let host = |data: &Vec<f32>| HostTensor {
            shape: shape.clone(),
            data: data.clone(),
        };
        let map = BTreeMap::from([
            ("mean".to_string(), host(&cache.mean)),
            ("std".to_string(), host(&cache.std)),
        ]);
        tensors::save(path, &map, Precision::F32)?;
        Ok(cache)
    }
}

/// Where a diffusion run starts from.
#[derive(Debug, Clone)]
pub enum Base {
    /// synfer-tiny from scratch on a finished `train vae` run (its `weights`), with CLIP BPE
    /// tokenizer files from `tokenizer`.
    VaeRun {
        /// The VAE run folder.
        run: std::path::PathBuf,
        /// Which of its weights.
        weights: RunWeights,
        /// Folder with `vocab.json` and `merges.txt`.
        tokenizer: std::path::PathBuf,
    },
    /// A diffusers folder to fine-tune (a fresh FineFace-layout adapter when it has none).
    Folder(std::path::PathBuf),
}

#[cfg(not(target_family = "wasm"))]
impl Base {
    /// The model files, VAE and denoiser (initialised from `seed` where fresh) to start from.
    pub fn start(
        &self,
        seed: u64,
        device: &Device,
    ) -> Result<(super::model_files::ModelFiles, AutoencoderKL, Denoiser)> {
        use super::model_files::ModelFiles;
        use super::vae::{TINY_VAE_CONFIG, init_vae};
        use crate::vae::VaeConfig;
        match self {
            Base::Folder(dir) => {
                let pipe = crate::Pipeline::load(dir, device)?;
                let files =
                    ModelFiles::from_folder(&crate::pipeline::source::DirSource::new(dir)?)?;
                let vae = pipe.vae.clone();
                let denoiser = Denoiser::from_pipeline(pipe, &files, seed)?;
                Ok((files, vae, denoiser))
            }
            Base::VaeRun {
                run,
                weights,
                tokenizer,
            } => {
                let vae_cfg =
                    VaeConfig::from_json(TINY_VAE_CONFIG.as_bytes(), "synfer-tiny vae config")?;
                let vae = load_trained(init_vae(&vae_cfg, 0, device)?, run, *weights)?;
                let files = ModelFiles::tiny(tokenizer, TINY_VAE_CONFIG)?;
                let denoiser = Denoiser::init(&files, seed, device)?;
                Ok((files, vae, denoiser))
            }
        }
    }
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
#[cfg_attr(feature = "native", derive(clap::ValueEnum))]
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
