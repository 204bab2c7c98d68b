//! The training commands as jobs: from a dataset folder and a run folder to a finished (or
//! resumed) stage, with the run's `config.json` record. `synfer train vae` and
//! `synfer train diffusion` are one call each.

use std::path::{Path, PathBuf};

use burn::tensor::Device;
use serde::Serialize;

use super::data::Dataset;
use super::denoiser::Denoiser;
use super::diffusion::{Base, DiffusionStage, LatentCache, train_diffusion};
use super::params;
use super::run::{LoopConfig, LossEntry, RunDir};
use super::vae::{TINY_VAE_CONFIG, VaeStage, init_vae, train_vae};
use crate::error::{Error, Result};
use crate::files::write_atomic;
use crate::vae::VaeConfig;

/// What a job reports as it goes.
#[derive(Debug)]
pub enum Event<'a> {
    /// The VAE is encoding the dataset into the latent cache (first run only).
    Encoding {
        /// Images (their mirrors are encoded too).
        images: usize,
    },
    /// Training starts (or resumes).
    Start {
        /// Images in the dataset.
        images: usize,
        /// The step it resumes from.
        from_step: u64,
        /// Details for the log (latent shape, scaling factor).
        detail: String,
    },
    /// A step finished.
    Step(&'a LossEntry),
}

/// Writes the run's record (`config.json`).
fn write_record(run: &Path, record: &impl Serialize) -> Result<()> {
    let json = serde_json::to_vec_pretty(record).map_err(|e| Error::json("config.json", e))?;
    std::fs::create_dir_all(run).map_err(|e| Error::io(run, e))?;
    write_atomic(&run.join("config.json"), &json)
}

/// `synfer train vae`: the AutoencoderKL on a dataset folder.
#[derive(Debug, Clone, Serialize)]
pub struct VaeJob {
    /// Dataset folder (images + `metadata.jsonl`).
    pub data: PathBuf,
    /// Run folder.
    pub run: PathBuf,
    /// Stage settings.
    #[serde(rename = "vae")]
    pub stage: VaeStage,
    /// Loop settings.
    #[serde(rename = "loop")]
    pub cfg: LoopConfig,
}

impl VaeJob {
    /// Trains (or resumes) on `device` (made autodiff here).
    pub fn run(
        &self,
        device: &Device,
        device_name: &str,
        mut on_event: impl FnMut(Event),
    ) -> Result<()> {
        if self.stage.batch == 0 {
            return Err(Error::request("batch", "must be at least 1"));
        }
        self.cfg.validate()?;
        let train_device = device.clone().autodiff();
        let data = Dataset::load(&self.data)?;
        let run = RunDir::open(&self.run)?;
        let vae_cfg = VaeConfig::from_json(TINY_VAE_CONFIG.as_bytes(), "synfer-tiny vae config")?;
        let model = init_vae(&vae_cfg, self.stage.seed, &train_device)?;
        write_record(
            &self.run,
            &serde_json::json!({
                "stage": "vae", "data": self.data, "images": data.len(), "loop": self.cfg,
                "vae": self.stage,
                "model_config": serde_json::from_str::<serde_json::Value>(TINY_VAE_CONFIG).ok(),
                "device": device_name,
            }),
        )?;
        on_event(Event::Start {
            images: data.len(),
            from_step: run.saved_step()?.unwrap_or(0),
            detail: String::new(),
        });
        train_vae(
            &run,
            &data,
            model,
            &self.stage,
            &self.cfg,
            &train_device,
            |e| on_event(Event::Step(e)),
        )?;
        Ok(())
    }
}

/// `synfer train diffusion`: text encoder, UNet and AU adapter on cached VAE latents.
#[derive(Debug, Clone)]
pub struct DiffusionJob {
    /// Dataset folder.
    pub data: PathBuf,
    /// Run folder.
    pub run: PathBuf,
    /// What the model starts from.
    pub base: Base,
    /// Stage settings; the scaling factor is set here (the folder's, or measured on the
    /// latents of a from-scratch VAE).
    pub stage: DiffusionStage,
    /// Loop settings.
    pub cfg: LoopConfig,
}

impl DiffusionJob {
    /// Trains (or resumes) on `device` (made autodiff for the loop).
    pub fn run(
        &self,
        device: &Device,
        device_name: &str,
        mut on_event: impl FnMut(Event),
    ) -> Result<()> {
        if self.stage.lora_rank == Some(0) || self.stage.batch == 0 {
            return Err(Error::request("batch/lora_rank", "must be at least 1"));
        }
        for (name, p) in [
            ("caption_dropout", self.stage.caption_dropout),
            ("au_dropout", self.stage.au_dropout),
        ] {
            if !(0.0..=1.0).contains(&p) {
                return Err(Error::request(name, format!("{p} is not a probability")));
            }
        }
        self.cfg.validate()?;
        let data = Dataset::load(&self.data)?;
        let run = RunDir::open(&self.run)?;
        let (files, vae, denoiser) = self.base.start(self.stage.seed, device)?;
        let cache = LatentCache::load_or_encode(
            &self.run.join("latents.safetensors"),
            &data,
            &vae,
            device,
            || on_event(Event::Encoding { images: data.len() }),
        )?;
        let mut stage = self.stage.clone();
        stage.scaling_factor = match &self.base {
            Base::Folder(_) => files.vae()?.scaling_factor,
            Base::VaeRun { .. } => cache.scaling_factor(),
        };
        let (vae_run, base) = match &self.base {
            Base::VaeRun { run, .. } => (Some(run), None),
            Base::Folder(dir) => (None, Some(dir)),
        };
        write_record(
            &self.run,
            &serde_json::json!({
                "stage": "diffusion", "data": self.data, "images": data.len(), "loop": self.cfg,
                "diffusion": stage, "vae_run": vae_run, "base": base, "device": device_name,
            }),
        )?;
        let train_device = device.clone().autodiff();
        let mut denoiser = params::write(
            Denoiser::init(&files, 0, &train_device)?,
            &params::read(&denoiser),
            "starting weights",
        )?;
        if let Some(rank) = stage.lora_rank {
            denoiser.attach_lora(rank, stage.seed, &train_device);
        }
        let tokenizer = files.tokenizer()?;
        on_event(Event::Start {
            images: data.len(),
            from_step: run.saved_step()?.unwrap_or(0),
            detail: format!(
                "latents {:?}, scaling factor {:.4}",
                cache.shape, stage.scaling_factor
            ),
        });
        train_diffusion(
            &run,
            &data,
            &cache,
            &tokenizer,
            denoiser,
            &stage,
            &self.cfg,
            &train_device,
            |e| on_event(Event::Step(e)),
        )?;
        Ok(())
    }
}
