//! DDIM (Song et al. 2020) with `eta = 0`, as diffusers' `DDIMScheduler`.

use burn::tensor::Tensor;

use super::StepOutput;
use super::config::{SchedulerConfig, SchedulerError};
use super::params::*;
use super::schedule::{self, np_arange, np_linspace, np_round};
use super::threshold::clip_or_threshold;

/// DDIM state: float32 `alphas_cumprod` and integer timesteps.
#[derive(Debug, Clone)]
pub(crate) struct Ddim {
    params: DdimParams,
    alphas_cumprod: Vec<f32>,
    final_alpha_cumprod: f32,
    /// Integer timesteps, descending.
    pub timesteps: Vec<i64>,
    /// The requested number of steps (diffusers uses it for the previous-timestep offset).
    num_inference_steps: usize,
}

/// DDIM's `set_timesteps` spacing.
pub(crate) fn ddim_timesteps(
    spacing: TimestepSpacing,
    num_train: usize,
    n: usize,
    steps_offset: i64,
) -> Vec<i64> {
    match spacing {
        TimestepSpacing::Linspace => np_linspace(0.0, (num_train - 1) as f64, n)
            .into_iter()
            .rev()
            .map(|t| np_round(t) as i64)
            .collect(),
        TimestepSpacing::Leading => {
            let ratio = (num_train / n) as i64;
            (0..n as i64)
                .rev()
                .map(|i| i * ratio + steps_offset)
                .collect()
        }
        TimestepSpacing::Trailing => {
            let ratio = num_train as f64 / n as f64;
            np_arange(num_train as f64, 0.0, -ratio)
                .into_iter()
                .map(|t| np_round(t) as i64 - 1)
                .collect()
        }
    }
}

impl Ddim {
    pub fn new(params: DdimParams, n: usize) -> Result<Self, SchedulerError> {
        let num_train = params.beta.num_train_timesteps;
        if n > num_train {
            return Err(SchedulerError::InvalidStepCount {
                steps: n,
                reason: format!("DDIM allows at most num_train_timesteps = {num_train} steps"),
            });
        }
        let timesteps = ddim_timesteps(params.spacing, num_train, n, params.steps_offset);
        check_offset_timesteps(&timesteps, num_train, n, params.steps_offset)?;
        let alphas_cumprod = schedule::alphas_cumprod(&params.beta.betas());
        let final_alpha_cumprod =
            schedule::final_alpha_cumprod(&alphas_cumprod, params.set_alpha_to_one);
        Ok(Self {
            params,
            alphas_cumprod,
            final_alpha_cumprod,
            timesteps,
            num_inference_steps: n,
        })
    }

    pub fn alphas_cumprod(&self) -> &[f32] {
        &self.alphas_cumprod
    }

    /// `(alpha_prod_t, alpha_prod_t_prev)` for a step.
    fn alphas(&self, step_index: usize) -> (f32, f32) {
        let t = self.timesteps[step_index];
        let prev_t = t - (self.params.beta.num_train_timesteps / self.num_inference_steps) as i64;
        let alpha_prod_t = self.alphas_cumprod[t as usize];
        let alpha_prod_t_prev = if prev_t >= 0 {
            self.alphas_cumprod[prev_t as usize]
        } else {
            self.final_alpha_cumprod
        };
        (alpha_prod_t, alpha_prod_t_prev)
    }

    pub fn step(
        &self,
        model_output: Tensor<4>,
        step_index: usize,
        sample: Tensor<4>,
    ) -> StepOutput {
        let (alpha_prod_t, alpha_prod_t_prev) = self.alphas(step_index);
        ddim_update(
            &self.params,
            model_output,
            sample,
            alpha_prod_t,
            alpha_prod_t_prev,
        )
    }

    pub fn add_noise(&self, original: Tensor<4>, noise: Tensor<4>, step_index: usize) -> Tensor<4> {
        let alpha = self.alphas_cumprod[self.timesteps[step_index] as usize];
        original.mul_scalar(f64::from(alpha.sqrt()))
            + noise.mul_scalar(f64::from((1.0 - alpha).sqrt()))
    }
}

/// One DDIM move (eta = 0) of `sample` from the level `alpha_from` to `alpha_to` given the
/// model's output there: `x̂0` and `ε̂` by the prediction type, `x̂0` clipped or thresholded
/// as configured, then `√ᾱ_to · x̂0 + √(1 − ᾱ_to) · ε̂`. Denoising moves down the levels;
/// [`super::ddim_inverse`] moves up with the same update.
pub(crate) fn ddim_update(
    params: &DdimParams,
    model_output: Tensor<4>,
    sample: Tensor<4>,
    alpha_from: f32,
    alpha_to: f32,
) -> StepOutput {
    let beta_from = 1.0 - alpha_from;
    let sqrt_alpha = f64::from(alpha_from.sqrt());
    let sqrt_beta = f64::from(beta_from.sqrt());
    let (pred_original_sample, pred_epsilon) = match params.prediction {
        PredictionType::Epsilon => (
            (sample - model_output.clone().mul_scalar(sqrt_beta)).div_scalar(sqrt_alpha),
            model_output,
        ),
        PredictionType::Sample => (
            model_output.clone(),
            (sample - model_output.mul_scalar(sqrt_alpha)).div_scalar(sqrt_beta),
        ),
        PredictionType::VPrediction => (
            sample.clone().mul_scalar(sqrt_alpha) - model_output.clone().mul_scalar(sqrt_beta),
            model_output.mul_scalar(sqrt_alpha) + sample.mul_scalar(sqrt_beta),
        ),
    };
    let pred_original_sample = clip_or_threshold(
        pred_original_sample,
        params.thresholding,
        params.clip_sample_range,
    );
    // eta = 0: no variance term, the direction coefficient is sqrt(1 - alpha_to).
    let direction = f64::from((1.0 - alpha_to).sqrt());
    let prev_sample = pred_original_sample
        .clone()
        .mul_scalar(f64::from(alpha_to.sqrt()))
        + pred_epsilon.mul_scalar(direction);
    StepOutput {
        prev_sample,
        pred_original_sample,
    }
}

/// Resolved `DDIMScheduler` parameters.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct DdimParams {
    pub beta: BetaParams,
    pub prediction: PredictionType,
    pub spacing: TimestepSpacing,
    pub steps_offset: i64,
    /// `Some(range)` when `clip_sample` is on.
    pub clip_sample_range: Option<f64>,
    pub set_alpha_to_one: bool,
    pub thresholding: Option<Thresholding>,
}

impl DdimParams {
    pub fn resolve(c: &SchedulerConfig) -> Result<Self, SchedulerError> {
        let clip_sample_range = clip_sample_range(c, true)?;
        Ok(Self {
            beta: BetaParams::resolve(c)?,
            prediction: prediction(c, &[])?,
            spacing: spacing(c, TimestepSpacing::Leading)?,
            steps_offset: c.steps_offset.unwrap_or(0),
            clip_sample_range,
            set_alpha_to_one: c.set_alpha_to_one.unwrap_or(true),
            thresholding: thresholding(c)?,
        })
    }
}

/// Refuses timesteps outside `0..num_train` (what a large `steps_offset` gives for `n`
/// inference steps), naming the key.
pub(super) fn check_offset_timesteps(
    timesteps: &[i64],
    num_train: usize,
    n: usize,
    steps_offset: i64,
) -> Result<(), SchedulerError> {
    match timesteps.iter().find(|&&t| t < 0 || t >= num_train as i64) {
        // The step count is to blame only when one step fewer would fit (leading spacing:
        // the last timestep is (n − 2)·⌊T/(n − 1)⌋ + offset); otherwise the offset is.
        Some(&bad)
            if n < 2
                || steps_offset < 0
                || (n as i64 - 2) * (num_train / (n - 1)) as i64 + steps_offset
                    >= num_train as i64 =>
        {
            Err(SchedulerError::InvalidValue {
                key: "steps_offset",
                value: steps_offset.to_string(),
                reason: format!("gives timestep {bad}, outside 0..{num_train}"),
            })
        }
        // Otherwise the step count (the caller's choice) meets the model's offset.
        Some(&bad) => Err(SchedulerError::InvalidStepCount {
            steps: n,
            reason: format!(
                "with this model's steps_offset {steps_offset} the schedule reaches timestep \
                 {bad}, outside its 0..{num_train}; use fewer steps"
            ),
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spacings_match_diffusers() {
        // DDIMScheduler(...).set_timesteps(n) in diffusers 0.42.1.
        assert_eq!(
            ddim_timesteps(TimestepSpacing::Leading, 1000, 10, 1),
            vec![901, 801, 701, 601, 501, 401, 301, 201, 101, 1]
        );
        assert_eq!(
            ddim_timesteps(TimestepSpacing::Linspace, 1000, 10, 0),
            vec![999, 888, 777, 666, 555, 444, 333, 222, 111, 0]
        );
        assert_eq!(
            ddim_timesteps(TimestepSpacing::Trailing, 1000, 10, 0),
            vec![999, 899, 799, 699, 599, 499, 399, 299, 199, 99]
        );
        assert_eq!(
            ddim_timesteps(TimestepSpacing::Trailing, 1000, 3, 0),
            vec![999, 666, 332]
        );
        assert_eq!(
            ddim_timesteps(TimestepSpacing::Linspace, 1000, 4, 0),
            vec![999, 666, 333, 0]
        );
    }
}
