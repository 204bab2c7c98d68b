//! Euler method (Karras et al. 2022, algorithm 2 without churn), as diffusers'
//! `EulerDiscreteScheduler`.
//!
//! Sigmas and timesteps are float32 like diffusers' tensors; step coefficients are computed in
//! `f32` from them, as diffusers' float32 0-d tensor arithmetic does.

use burn::tensor::Tensor;

use super::StepOutput;
use super::config::{SchedulerConfig, SchedulerError};
use super::params::*;
use super::schedule::{
    self, beta_sigmas, exponential_sigmas, interp_on_index_grid, karras_sigmas, np_arange,
    np_linspace, np_round, sigma_to_t, torch_linspace_f32,
};

/// Euler state.
#[derive(Debug, Clone)]
pub(crate) struct Euler {
    pub params: EulerParams,
    alphas_cumprod: Vec<f32>,
    /// Float32 timesteps (fractional for `linspace` spacing and Karras sigmas).
    pub timesteps: Vec<f32>,
    /// Float32 sigmas; at least one more than the timesteps.
    pub sigmas: Vec<f32>,
    pub init_noise_sigma: f32,
}

/// The `(timesteps, sigmas)` schedule of diffusers' `set_timesteps`.
pub(crate) fn euler_schedule(
    p: &EulerParams,
    alphas_cumprod: &[f32],
    n: usize,
) -> (Vec<f32>, Vec<f32>) {
    let num_train = p.beta.num_train_timesteps;
    let timesteps: Vec<f32> = match p.spacing {
        TimestepSpacing::Linspace => np_linspace(0.0, (num_train - 1) as f64, n)
            .into_iter()
            .rev()
            .map(|t| t as f32)
            .collect(),
        TimestepSpacing::Leading => {
            let ratio = num_train / n;
            (0..n)
                .rev()
                .map(|i| (i * ratio) as f32 + p.steps_offset as f32)
                .collect()
        }
        TimestepSpacing::Trailing => {
            let ratio = num_train as f64 / n as f64;
            np_arange(num_train as f64, 0.0, -ratio)
                .into_iter()
                .map(|t| np_round(t) as f32 - 1.0)
                .collect()
        }
    };

    let train_sigmas = schedule::sigmas_from_alphas_cumprod(alphas_cumprod);
    let log_sigmas = schedule::log_f32(&train_sigmas);
    let sigmas: Vec<f64> = match p.interpolation {
        Interpolation::Linear => {
            let t: Vec<f64> = timesteps.iter().map(|&t| f64::from(t)).collect();
            let fp: Vec<f64> = train_sigmas.iter().map(|&s| f64::from(s)).collect();
            interp_on_index_grid(&t, &fp)
        }
        Interpolation::LogLinear => torch_linspace_f32(
            f64::from(log_sigmas[num_train - 1]),
            f64::from(log_sigmas[0]),
            n + 1,
        )
        .into_iter()
        .map(|l| f64::from(l.exp()))
        .collect(),
    };

    let (timesteps, sigmas): (Vec<f32>, Vec<f64>) = match p.sigma_spacing {
        SigmaSpacing::Karras | SigmaSpacing::Exponential | SigmaSpacing::Beta => {
            let lo = p.sigma_min.unwrap_or(sigmas[sigmas.len() - 1]);
            let hi = p.sigma_max.unwrap_or(sigmas[0]);
            let s = match p.sigma_spacing {
                SigmaSpacing::Karras => karras_sigmas(lo, hi, n),
                SigmaSpacing::Exponential => exponential_sigmas(lo, hi, n),
                _ => beta_sigmas(lo, hi, n, 0.6, 0.6),
            };
            let t = s
                .iter()
                .map(|&s| sigma_to_t(s, &log_sigmas) as f32)
                .collect();
            (t, s)
        }
        SigmaSpacing::Timesteps | SigmaSpacing::Lu => (timesteps, sigmas),
    };

    let sigma_last = match p.final_sigmas {
        FinalSigmas::Zero => 0.0,
        FinalSigmas::SigmaMin => ((1.0 - alphas_cumprod[0]) / alphas_cumprod[0]).sqrt(),
    };
    let mut sigmas: Vec<f32> = sigmas.into_iter().map(|s| s as f32).collect();
    sigmas.push(sigma_last);

    let timesteps = if p.continuous_timesteps && p.prediction == PredictionType::VPrediction {
        sigmas[..sigmas.len() - 1]
            .iter()
            .map(|s| 0.25 * s.ln())
            .collect()
    } else {
        timesteps
    };
    (timesteps, sigmas)
}

impl Euler {
    pub fn new(params: EulerParams, n: usize) -> Result<Self, SchedulerError> {
        let mut alphas_cumprod = schedule::alphas_cumprod(&params.beta.betas());
        if params.beta.rescale_betas_zero_snr {
            // diffusers: close to 0 without being 0, so the first sigma is finite.
            if let Some(last) = alphas_cumprod.last_mut() {
                *last = 2f32.powi(-24);
            }
        }
        let (timesteps, sigmas) = euler_schedule(&params, &alphas_cumprod, n);
        if timesteps.is_empty() {
            return Err(SchedulerError::InvalidStepCount {
                steps: n,
                reason: "the spacing yields no timesteps".into(),
            });
        }
        let max_sigma = sigmas.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let init_noise_sigma = match params.spacing {
            TimestepSpacing::Linspace | TimestepSpacing::Trailing => max_sigma,
            TimestepSpacing::Leading => (max_sigma * max_sigma + 1.0).sqrt(),
        };
        Ok(Self {
            params,
            alphas_cumprod,
            timesteps,
            sigmas,
            init_noise_sigma,
        })
    }

    pub fn alphas_cumprod(&self) -> &[f32] {
        &self.alphas_cumprod
    }

    pub fn scale_model_input(&self, sample: Tensor<4>, step_index: usize) -> Tensor<4> {
        let sigma = self.sigmas[step_index];
        sample.div_scalar(f64::from((sigma * sigma + 1.0).sqrt()))
    }

    pub fn step(
        &self,
        model_output: Tensor<4>,
        step_index: usize,
        sample: Tensor<4>,
    ) -> StepOutput {
        let sigma = self.sigmas[step_index];
        // No churn (s_churn = 0), so sigma_hat = sigma.
        let sigma_hat = sigma;
        let pred_original_sample = self.pred_original(model_output, sigma_hat, sample.clone());
        let derivative =
            (sample.clone() - pred_original_sample.clone()).div_scalar(f64::from(sigma_hat));
        let dt = self.sigmas[step_index + 1] - sigma_hat;
        let prev_sample = sample + derivative.mul_scalar(f64::from(dt));
        StepOutput {
            prev_sample,
            pred_original_sample,
        }
    }

    /// `x̂0` from the model's output at noise level `sigma` for the (unscaled) `sample`.
    pub fn pred_original(
        &self,
        model_output: Tensor<4>,
        sigma: f32,
        sample: Tensor<4>,
    ) -> Tensor<4> {
        match self.params.prediction {
            PredictionType::Sample => model_output,
            PredictionType::Epsilon => sample - model_output.mul_scalar(f64::from(sigma)),
            PredictionType::VPrediction => {
                let var = sigma * sigma + 1.0;
                model_output.mul_scalar(f64::from(-sigma / var.sqrt()))
                    + sample.div_scalar(f64::from(var))
            }
        }
    }

    pub fn add_noise(&self, original: Tensor<4>, noise: Tensor<4>, step_index: usize) -> Tensor<4> {
        original + noise.mul_scalar(f64::from(self.sigmas[step_index]))
    }
}

/// Resolved `EulerDiscreteScheduler` parameters.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct EulerParams {
    pub beta: BetaParams,
    pub prediction: PredictionType,
    pub interpolation: Interpolation,
    pub sigma_spacing: SigmaSpacing,
    pub sigma_min: Option<f64>,
    pub sigma_max: Option<f64>,
    pub spacing: TimestepSpacing,
    /// `timestep_type = "continuous"`.
    pub continuous_timesteps: bool,
    pub steps_offset: i64,
    pub final_sigmas: FinalSigmas,
}

impl EulerParams {
    pub fn resolve(c: &SchedulerConfig) -> Result<Self, SchedulerError> {
        Ok(Self {
            beta: BetaParams::resolve(c)?,
            prediction: prediction(c, &[("original_sample", PredictionType::Sample)])?,
            interpolation: parse_choice(
                "interpolation_type",
                c.interpolation_type.as_deref(),
                Interpolation::Linear,
                &[
                    ("linear", Interpolation::Linear),
                    ("log_linear", Interpolation::LogLinear),
                ],
            )?,
            sigma_spacing: sigma_spacing(c)?,
            sigma_min: positive_sigma("sigma_min", c.sigma_min)?,
            sigma_max: positive_sigma("sigma_max", c.sigma_max)?,
            spacing: spacing(c, TimestepSpacing::Linspace)?,
            continuous_timesteps: parse_choice(
                "timestep_type",
                c.timestep_type.as_deref(),
                false,
                &[("discrete", false), ("continuous", true)],
            )?,
            steps_offset: c.steps_offset.unwrap_or(0),
            final_sigmas: final_sigmas(c)?,
        })
    }
}
