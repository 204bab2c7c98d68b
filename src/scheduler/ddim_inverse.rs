//! DDIM run backwards, as diffusers' `DDIMInverseScheduler` (eta = 0): from a clean latent up
//! the noise levels, so that denoising the result with DDIM gives the latent back (SynFER's
//! layout initialisation inverts a real face part of the way).

use burn::tensor::Tensor;

use super::config::SchedulerError;
use super::ddim::{DdimParams, ddim_update};
use super::params::TimestepSpacing;
use super::schedule::{self, np_arange, np_round};

/// The inverse scheduler with its timesteps set: ascending integer timesteps.
#[derive(Debug, Clone)]
pub(crate) struct DdimInverse {
    params: DdimParams,
    alphas_cumprod: Vec<f32>,
    /// ᾱ of the level before the first timestep: 1 with `set_alpha_to_one`, else `ᾱ₀`.
    initial_alpha_cumprod: f32,
    /// Integer timesteps, ascending.
    pub timesteps: Vec<i64>,
    num_inference_steps: usize,
}

impl DdimInverse {
    /// `n` steps; `leading` or `trailing` spacing (any other is taken as `leading`).
    pub fn new(mut params: DdimParams, n: usize) -> Result<Self, SchedulerError> {
        let num_train = params.beta.num_train_timesteps;
        if n > num_train {
            return Err(SchedulerError::InvalidStepCount {
                steps: n,
                reason: format!("DDIM allows at most num_train_timesteps = {num_train} steps"),
            });
        }
        if params.spacing == TimestepSpacing::Linspace {
            params.spacing = TimestepSpacing::Leading;
        }
        // diffusers' inverse scheduler clips (`clip_sample`) but has no thresholding.
        params.thresholding = None;
        let timesteps: Vec<i64> = match params.spacing {
            TimestepSpacing::Trailing => {
                let ratio = num_train as f64 / n as f64;
                let mut t: Vec<i64> = np_arange(num_train as f64, 0.0, -ratio)
                    .into_iter()
                    .map(|t| np_round(t) as i64 - 1)
                    .collect();
                t.reverse();
                t
            }
            _ => {
                let ratio = (num_train / n) as i64;
                (0..n as i64)
                    .map(|i| i * ratio + params.steps_offset)
                    .collect()
            }
        };
        super::ddim::check_offset_timesteps(&timesteps, num_train, n, params.steps_offset)?;
        let alphas_cumprod = schedule::alphas_cumprod(&params.beta.betas());
        let initial_alpha_cumprod =
            schedule::final_alpha_cumprod(&alphas_cumprod, params.set_alpha_to_one);
        Ok(DdimInverse {
            params,
            alphas_cumprod,
            initial_alpha_cumprod,
            timesteps,
            num_inference_steps: n,
        })
    }

    pub fn alphas_cumprod(&self) -> &[f32] {
        &self.alphas_cumprod
    }

    /// Step `step_index`: from `sample` at the level one step below `timesteps[step_index]`
    /// (the model's output taken at `timesteps[step_index]`) up to that timestep's level.
    pub fn step(&self, model_output: Tensor<4>, step_index: usize, sample: Tensor<4>) -> Tensor<4> {
        let num_train = self.params.beta.num_train_timesteps;
        let target = self.timesteps[step_index];
        let source =
            (target - (num_train / self.num_inference_steps) as i64).min(num_train as i64 - 1);
        let alpha_source = if source >= 0 {
            self.alphas_cumprod[source as usize]
        } else {
            self.initial_alpha_cumprod
        };
        let alpha_target = self.alphas_cumprod[target as usize];
        ddim_update(
            &self.params,
            model_output,
            sample,
            alpha_source,
            alpha_target,
        )
        .prev_sample
    }
}
