//! Latent-consistency sampling (Luo et al. 2023), as diffusers' `LCMScheduler`: each step maps
//! the sample to the consistency function's `x̂0` (`c_skip · x + c_out · x̂0` with the boundary
//! scalings at `timestep_scaling · t`) and, except at the last step, noises it again to the
//! next timestep with fresh noise.
//!
//! Timesteps come from the distillation schedule (`original_inference_steps` evenly spaced
//! training steps, `k·i − 1`), from which `num_inference_steps` are taken at evenly spaced
//! indices; `timestep_spacing` and `steps_offset` are not used, as in diffusers.

use burn::tensor::Tensor;

use super::StepOutput;
use super::config::{SchedulerConfig, SchedulerError};
use super::params::*;
use super::schedule;
use super::threshold::clip_or_threshold;

/// LCM state: float32 `alphas_cumprod` and integer timesteps.
#[derive(Debug, Clone)]
pub(crate) struct Lcm {
    params: LcmParams,
    alphas_cumprod: Vec<f32>,
    final_alpha_cumprod: f32,
    /// Integer timesteps, descending.
    pub timesteps: Vec<i64>,
}

/// LCM's `set_timesteps` (strength 1): `n` timesteps of the `original_steps`-step
/// distillation schedule of `num_train` training steps.
pub(crate) fn lcm_timesteps(
    num_train: usize,
    original_steps: usize,
    n: usize,
) -> Result<Vec<i64>, SchedulerError> {
    if original_steps == 0 || original_steps > num_train {
        return Err(SchedulerError::InvalidValue {
            key: "original_inference_steps",
            value: original_steps.to_string(),
            reason: format!("must be 1..={num_train} (num_train_timesteps)"),
        });
    }
    if n > original_steps {
        return Err(SchedulerError::InvalidStepCount {
            steps: n,
            reason: format!("LCM takes at most original_inference_steps = {original_steps} steps"),
        });
    }
    let k = (num_train / original_steps) as i64;
    let origin: Vec<i64> = (1..=original_steps as i64)
        .rev()
        .map(|i| i * k - 1)
        .collect();
    // np.floor(np.linspace(0, len, n, endpoint=False)).
    let step = origin.len() as f64 / n as f64;
    Ok((0..n)
        .map(|i| origin[(i as f64 * step).floor() as usize])
        .collect())
}

impl Lcm {
    pub fn new(params: LcmParams, n: usize) -> Result<Self, SchedulerError> {
        let timesteps = lcm_timesteps(params.beta.num_train_timesteps, params.original_steps, n)?;
        let alphas_cumprod = schedule::alphas_cumprod(&params.beta.betas());
        let final_alpha_cumprod =
            schedule::final_alpha_cumprod(&alphas_cumprod, params.set_alpha_to_one);
        Ok(Self {
            params,
            alphas_cumprod,
            final_alpha_cumprod,
            timesteps,
        })
    }

    pub fn alphas_cumprod(&self) -> &[f32] {
        &self.alphas_cumprod
    }

    /// `(c_skip, c_out)` at timestep `t` (float32, σ_data = 0.5).
    fn boundary_scalings(&self, t: i64) -> (f32, f32) {
        let scaled = t as f32 * self.params.timestep_scaling as f32;
        let s2 = scaled * scaled + 0.25;
        (0.25 / s2, scaled / s2.sqrt())
    }

    /// One step; `noise` is this step's standard-normal noise (unused at the last step).
    pub fn step(
        &self,
        model_output: Tensor<4>,
        step_index: usize,
        sample: Tensor<4>,
        noise: Option<Tensor<4>>,
    ) -> StepOutput {
        let t = self.timesteps[step_index];
        let prev_t = self.timesteps.get(step_index + 1).copied().unwrap_or(t);
        let alpha_t = self.alphas_cumprod[t as usize];
        let alpha_prev = if prev_t >= 0 {
            self.alphas_cumprod[prev_t as usize]
        } else {
            self.final_alpha_cumprod
        };
        let (c_skip, c_out) = self.boundary_scalings(t);
        let (sa, sb) = (f64::from(alpha_t.sqrt()), f64::from((1.0 - alpha_t).sqrt()));
        let x0 = match self.params.prediction {
            PredictionType::Epsilon => {
                (sample.clone() - model_output.mul_scalar(sb)).div_scalar(sa)
            }
            PredictionType::Sample => model_output,
            PredictionType::VPrediction => {
                sample.clone().mul_scalar(sa) - model_output.mul_scalar(sb)
            }
        };
        let x0 = clip_or_threshold(x0, self.params.thresholding, self.params.clip_sample_range);
        let denoised = x0.mul_scalar(f64::from(c_out)) + sample.mul_scalar(f64::from(c_skip));
        let prev_sample = match noise {
            Some(noise) if step_index + 1 != self.timesteps.len() => {
                denoised.clone().mul_scalar(f64::from(alpha_prev.sqrt()))
                    + noise.mul_scalar(f64::from((1.0 - alpha_prev).sqrt()))
            }
            _ => denoised.clone(),
        };
        StepOutput {
            prev_sample,
            pred_original_sample: denoised,
        }
    }

    pub fn add_noise(&self, original: Tensor<4>, noise: Tensor<4>, step_index: usize) -> Tensor<4> {
        let alpha = self.alphas_cumprod[self.timesteps[step_index] as usize];
        original.mul_scalar(f64::from(alpha.sqrt()))
            + noise.mul_scalar(f64::from((1.0 - alpha).sqrt()))
    }
}

/// Resolved `LCMScheduler` parameters.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct LcmParams {
    pub beta: BetaParams,
    pub prediction: PredictionType,
    pub original_steps: usize,
    /// `Some(range)` when `clip_sample` is on (off by default).
    pub clip_sample_range: Option<f64>,
    pub set_alpha_to_one: bool,
    pub thresholding: Option<Thresholding>,
    pub timestep_scaling: f64,
}

impl LcmParams {
    pub fn resolve(c: &SchedulerConfig) -> Result<Self, SchedulerError> {
        // LCMScheduler's own beta defaults (Stable Diffusion's schedule).
        let mut with_defaults = c.clone();
        with_defaults.beta_start.get_or_insert(0.00085);
        with_defaults.beta_end.get_or_insert(0.012);
        with_defaults
            .beta_schedule
            .get_or_insert_with(|| "scaled_linear".into());
        let clip_sample_range = clip_sample_range(c, false)?;
        let timestep_scaling = c.timestep_scaling.unwrap_or(10.0);
        if !timestep_scaling.is_finite() || timestep_scaling < 0.0 {
            return Err(SchedulerError::InvalidValue {
                key: "timestep_scaling",
                value: timestep_scaling.to_string(),
                reason: "must be a finite number ≥ 0".into(),
            });
        }
        Ok(Self {
            beta: BetaParams::resolve(&with_defaults)?,
            prediction: prediction(c, &[])?,
            original_steps: c.original_inference_steps.unwrap_or(50),
            clip_sample_range,
            set_alpha_to_one: c.set_alpha_to_one.unwrap_or(true),
            thresholding: thresholding(c)?,
            timestep_scaling,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timesteps_match_diffusers() {
        // LCMScheduler().set_timesteps(n) in diffusers 0.42.1.
        assert_eq!(
            lcm_timesteps(1000, 50, 4).unwrap(),
            vec![999, 759, 499, 259]
        );
        assert_eq!(lcm_timesteps(1000, 50, 1).unwrap(), vec![999]);
        assert_eq!(
            lcm_timesteps(1000, 50, 8).unwrap(),
            vec![999, 879, 759, 639, 499, 379, 259, 139]
        );
        assert!(lcm_timesteps(1000, 50, 51).is_err());
        assert!(lcm_timesteps(1000, 2000, 4).is_err());
    }
}
