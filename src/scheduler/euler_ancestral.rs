//! Euler ancestral sampling (Karras et al. 2022; k-diffusion's `sample_euler_ancestral`), as
//! diffusers' `EulerAncestralDiscreteScheduler`: an Euler step down to `σ_down`, then fresh
//! noise of scale `σ_up`, with `σ_down² + σ_up² = σ_next²`.
//!
//! The schedule is `EulerDiscreteScheduler`'s with its defaults (linear interpolation of the
//! training sigmas at the timesteps, final sigma 0); the keys it honours are the beta schedule,
//! `prediction_type` (ε or v), `timestep_spacing`, `steps_offset` and `rescale_betas_zero_snr`.

use burn::tensor::Tensor;

use super::StepOutput;
use super::config::{SchedulerConfig, SchedulerError};
use super::euler::{Euler, EulerParams};
use super::params::*;

/// Euler-ancestral state: Euler's schedule.
#[derive(Debug, Clone)]
pub(crate) struct EulerAncestral {
    pub euler: Euler,
}

impl EulerAncestral {
    pub fn new(c: &SchedulerConfig, n: usize) -> Result<Self, SchedulerError> {
        let prediction = prediction(c, &[])?;
        if prediction == PredictionType::Sample {
            // diffusers raises NotImplementedError at the first step.
            return Err(SchedulerError::Unsupported {
                key: "prediction_type",
                value: "\"sample\"".into(),
                reason: "EulerAncestralDiscreteScheduler supports epsilon and v_prediction".into(),
            });
        }
        let params = EulerParams {
            beta: BetaParams::resolve(c)?,
            prediction,
            interpolation: Interpolation::Linear,
            sigma_spacing: SigmaSpacing::Timesteps,
            sigma_min: None,
            sigma_max: None,
            spacing: spacing(c, TimestepSpacing::Linspace)?,
            continuous_timesteps: false,
            steps_offset: c.steps_offset.unwrap_or(0),
            final_sigmas: FinalSigmas::Zero,
        };
        Ok(Self {
            euler: Euler::new(params, n)?,
        })
    }

    /// One step; `noise` is this step's standard-normal noise (the sample's shape).
    pub fn step(
        &self,
        model_output: Tensor<4>,
        step_index: usize,
        sample: Tensor<4>,
        noise: Tensor<4>,
    ) -> StepOutput {
        let sigmas = &self.euler.sigmas;
        let sigma = sigmas[step_index];
        let pred_original_sample = self
            .euler
            .pred_original(model_output, sigma, sample.clone());
        // float32, as diffusers' 0-d tensors.
        let sigma_to = sigmas[step_index + 1];
        let sigma_up =
            (sigma_to * sigma_to * (sigma * sigma - sigma_to * sigma_to) / (sigma * sigma)).sqrt();
        let sigma_down = (sigma_to * sigma_to - sigma_up * sigma_up).max(0.0).sqrt();
        let derivative =
            (sample.clone() - pred_original_sample.clone()).div_scalar(f64::from(sigma));
        let dt = sigma_down - sigma;
        let prev_sample =
            sample + derivative.mul_scalar(f64::from(dt)) + noise.mul_scalar(f64::from(sigma_up));
        StepOutput {
            prev_sample,
            pred_original_sample,
        }
    }
}
