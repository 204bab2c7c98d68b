//! Stage 1: the AutoencoderKL (f = 4) on the dataset's images: L1 + L2 reconstruction of a
//! sampled latent plus a small KL term, random mirroring.

use burn::tensor::{Device, Tensor, TensorData};
use rand_distr::{Distribution, StandardNormal};

use super::batches::Batches;
use super::data::Dataset;
use super::ema::Ema;
use super::run::{LoopConfig, LossEntry, RunDir, train};
use crate::error::{Error, Result};
use crate::rng::step_rng;
use crate::vae::{AutoencoderKL, VaeConfig};
use crate::weights::TensorStore;

/// synfer-tiny's VAE: 3 levels (f = 4), 32/64/64 channels, 4 latent channels, 64×64 images.
pub const TINY_VAE_CONFIG: &str = r#"{
  "_class_name": "AutoencoderKL",
  "in_channels": 3,
  "out_channels": 3,
  "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D"],
  "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"],
  "block_out_channels": [32, 64, 64],
  "layers_per_block": 1,
  "act_fn": "silu",
  "latent_channels": 4,
  "norm_num_groups": 16,
  "sample_size": 64,
  "scaling_factor": 1.0
}"#;

/// VAE stage settings.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct VaeStage {
    /// Images per step.
    pub batch: usize,
    /// Weight of the KL term (relative to the per-pixel reconstruction loss).
    pub kl_weight: f64,
    /// Seed of batches and noise.
    pub seed: u64,
}

/// A freshly initialised VAE for `cfg`.
pub fn init_vae(cfg: &VaeConfig, seed: u64, device: &Device) -> Result<AutoencoderKL> {
    let mut store = TensorStore::initialised("init", seed);
    AutoencoderKL::load(&mut store, cfg, device)
}

/// Trains (or resumes) the VAE stage in `run`.
pub fn train_vae(
    run: &RunDir,
    data: &Dataset,
    model: AutoencoderKL,
    stage: &VaeStage,
    cfg: &LoopConfig,
    device: &Device,
    on_step: impl FnMut(&LossEntry),
) -> Result<(AutoencoderKL, Ema)> {
    if data.is_empty() {
        return Err(Error::request("data", "the dataset is empty"));
    }
    let mut batches = Batches::new(data.len(), stage.seed);
    let loss_of = |vae: &AutoencoderKL, step: u64| -> Result<Tensor<1>> {
        let idx = batches.batch(step, stage.batch);
        let mut rng = step_rng(stage.seed, step, 1);
        let flip: Vec<bool> = idx
            .iter()
            .map(|_| rand::Rng::random_bool(&mut rng, 0.5))
            .collect();
        let x = data.images(&idx, &flip, device);
        let dist = vae.encode(x.clone());
        let dims = dist.mean.dims();
        let n: usize = dims.iter().product();
        let eps: Vec<f32> = (0..n)
            .map(|_| {
                let v: f64 = StandardNormal.sample(&mut rng);
                v as f32
            })
            .collect();
        let eps = Tensor::<4>::from_data(TensorData::new(eps, dims), device);
        let z = dist.mean.clone() + (dist.logvar.clone() * 0.5).exp() * eps;
        let recon = vae.decode(z);
        let diff = recon - x;
        let rec = diff.clone().abs().mean() + diff.powi_scalar(2).mean();
        let kl =
            (dist.mean.powi_scalar(2) + dist.logvar.clone().exp() - dist.logvar - 1.0).mean() * 0.5;
        Ok(rec + kl * stage.kl_weight)
    };
    train(run, model, device, cfg, loss_of, on_step)
}
