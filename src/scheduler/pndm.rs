//! Pseudo numerical methods for diffusion models (Liu et al. 2022), as diffusers'
//! `PNDMScheduler`: a Runge-Kutta warm-up (`skip_prk_steps = false`, "F-PNDM") or none
//! (`skip_prk_steps = true`, crowsonkb's PLMS, what Stable Diffusion folders configure),
//! followed by 4th-order linear multistep steps.
//!
//! diffusers' timesteps list repeats entries (PLMS: `[t0, t1, t1, t2, …]`; PRK: every
//! half-step twice) and its `step` runs a state machine driven by a call counter, not by the
//! timestep. [`Pndm::step`] reproduces that machine (the `ets` history, `counter`,
//! `cur_sample` and `cur_model_output`), the counter being the number of steps since the run
//! (re)started.

use burn::tensor::Tensor;

use super::StepOutput;
use super::config::{SchedulerConfig, SchedulerError};
use super::ddim::ddim_timesteps;
use super::params::*;
use super::schedule;

/// The Runge-Kutta warm-up's length in model evaluations (diffusers' `len(prk_timesteps)`).
const PRK_STEPS: usize = 12;

/// PNDM schedule and state.
#[derive(Debug, Clone)]
pub(crate) struct Pndm {
    params: PndmParams,
    alphas_cumprod: Vec<f32>,
    final_alpha_cumprod: f32,
    /// diffusers' `timesteps`: PRK timesteps (if any) then PLMS timesteps, with repeats.
    pub timesteps: Vec<i64>,
    /// Leading entries of `timesteps` that are PRK steps (`prk_timesteps`): 0 or 12.
    num_prk: usize,
    /// `num_train_timesteps // num_inference_steps`, diffusers' PLMS step size.
    step_ratio: i64,
    /// `num_train_timesteps // num_inference_steps // 2`, the PRK half step.
    prk_half: i64,
    // Running values, as diffusers names them.
    counter: usize,
    ets: Vec<Tensor<4>>,
    cur_model_output: Option<Tensor<4>>,
    cur_sample: Option<Tensor<4>>,
    last_step: Option<usize>,
}

/// diffusers' `set_timesteps`: `(timesteps, number of PRK entries)`.
pub(crate) fn pndm_timesteps(
    p: &PndmParams,
    n: usize,
) -> Result<(Vec<i64>, usize), SchedulerError> {
    let num_train = p.beta.num_train_timesteps;
    // diffusers' ascending `_timesteps` are DDIM's timesteps in the other order.
    let mut base = ddim_timesteps(p.spacing, num_train, n, p.steps_offset);
    base.reverse();
    if p.skip_prk_steps {
        // concatenate([_t[:-1], _t[-2:-1], _t[-1:]])[::-1]: the second timestep runs twice.
        let mut t = base[..n - 1].to_vec();
        if n >= 2 {
            t.push(base[n - 2]);
        }
        t.push(base[n - 1]);
        t.reverse();
        return Ok((t, 0));
    }
    if n < 4 {
        // diffusers fails inside numpy ("operands could not be broadcast together").
        return Err(SchedulerError::InvalidStepCount {
            steps: n,
            reason: "PNDMScheduler's Runge-Kutta warm-up needs at least 4 steps \
                     (or set skip_prk_steps)"
                .into(),
        });
    }
    let half = (num_train / n / 2) as i64;
    // _t[-4:].repeat(2) + tile([0, half], 4)
    let mut x: Vec<i64> = base[n - 4..].iter().flat_map(|&t| [t, t + half]).collect();
    x.pop(); // [:-1]
    // .repeat(2)[1:-1][::-1]
    let doubled: Vec<i64> = x.iter().flat_map(|&t| [t, t]).collect();
    let mut t: Vec<i64> = doubled[1..doubled.len() - 1]
        .iter()
        .rev()
        .copied()
        .collect();
    debug_assert_eq!(t.len(), PRK_STEPS);
    // plms_timesteps = _t[:-3][::-1]
    t.extend(base[..n - 3].iter().rev());
    Ok((t, PRK_STEPS))
}

impl Pndm {
    pub fn new(params: PndmParams, n: usize) -> Result<Self, SchedulerError> {
        let num_train = params.beta.num_train_timesteps;
        let (timesteps, num_prk) = pndm_timesteps(&params, n)?;
        if let Some(&bad) = timesteps.iter().find(|&&t| t < 0 || t >= num_train as i64) {
            // Only `leading` spacing adds the offset; `trailing` goes below 0 when there are
            // more steps than training timesteps (diffusers then indexes alphas from the end).
            if params.spacing == TimestepSpacing::Leading {
                super::ddim::check_offset_timesteps(&timesteps, num_train, n, params.steps_offset)?;
            }
            return Err(SchedulerError::InvalidStepCount {
                steps: n,
                reason: format!("gives timestep {bad}, outside 0..{num_train}"),
            });
        }
        let alphas_cumprod = schedule::alphas_cumprod(&params.beta.betas());
        let final_alpha_cumprod =
            schedule::final_alpha_cumprod(&alphas_cumprod, params.set_alpha_to_one);
        Ok(Self {
            params,
            alphas_cumprod,
            final_alpha_cumprod,
            timesteps,
            num_prk,
            step_ratio: (num_train / n) as i64,
            prk_half: (num_train / n / 2) as i64,
            counter: 0,
            ets: Vec::new(),
            cur_model_output: None,
            cur_sample: None,
            last_step: None,
        })
    }

    pub fn alphas_cumprod(&self) -> &[f32] {
        &self.alphas_cumprod
    }

    /// Forgets the running values (diffusers resets them in `set_timesteps`).
    pub fn reset(&mut self) {
        self.counter = 0;
        self.ets.clear();
        self.cur_model_output = None;
        self.cur_sample = None;
        self.last_step = None;
    }

    /// `alphas_cumprod[t]`; a negative `t` means the final alpha.
    fn alpha(&self, t: i64) -> f32 {
        if t < 0 {
            return self.final_alpha_cumprod;
        }
        *self
            .alphas_cumprod
            .get(t as usize)
            .unwrap_or_else(|| panic!("PNDM timestep {t} is outside the training schedule"))
    }

    /// Runs step `step_index` (the `counter`-th call since the run started).
    ///
    /// `pred_original_sample` is not something diffusers' PNDM returns: it is the `x_0` implied
    /// by this call's raw `model_output` and `sample` at `timesteps[step_index]`
    /// (`(x - sqrt(1 - ᾱ) ε) / sqrt(ᾱ)`, or `sqrt(ᾱ) x - sqrt(1 - ᾱ) v`), for previews.
    pub fn step(
        &mut self,
        model_output: Tensor<4>,
        step_index: usize,
        sample: Tensor<4>,
    ) -> StepOutput {
        if self.last_step.is_none_or(|last| last + 1 != step_index) {
            self.reset();
        }
        let t = self.timesteps[step_index];
        let pred_original_sample = self.pred_original_sample(&model_output, &sample, t);
        let prev_sample = if !self.params.skip_prk_steps && self.counter < self.num_prk {
            self.step_prk(model_output, t, sample)
        } else {
            self.step_plms(model_output, t, sample)
        };
        self.counter += 1;
        self.last_step = Some(step_index);
        StepOutput {
            prev_sample,
            pred_original_sample,
        }
    }

    fn pred_original_sample(
        &self,
        model_output: &Tensor<4>,
        sample: &Tensor<4>,
        t: i64,
    ) -> Tensor<4> {
        let alpha = self.alpha(t);
        let sqrt_alpha = f64::from(alpha.sqrt());
        let sqrt_beta = f64::from((1.0 - alpha).sqrt());
        match self.params.prediction {
            PredictionType::VPrediction => {
                sample.clone().mul_scalar(sqrt_alpha) - model_output.clone().mul_scalar(sqrt_beta)
            }
            // `Sample` is refused when the parameters are resolved.
            PredictionType::Epsilon | PredictionType::Sample => {
                (sample.clone() - model_output.clone().mul_scalar(sqrt_beta)).div_scalar(sqrt_alpha)
            }
        }
    }

    /// diffusers' `step_prk`: one of the four Runge-Kutta evaluations of a warm-up step.
    fn step_prk(&mut self, model_output: Tensor<4>, t: i64, sample: Tensor<4>) -> Tensor<4> {
        let diff_to_prev = if self.counter % 2 == 1 {
            0
        } else {
            self.prk_half
        };
        let prev_t = t - diff_to_prev;
        let timestep = self.timesteps[self.counter / 4 * 4];

        let model_output = match self.counter % 4 {
            0 => {
                self.cur_model_output = Some(add_opt(
                    self.cur_model_output.take(),
                    model_output.clone().mul_scalar(1.0 / 6.0),
                ));
                self.ets.push(model_output.clone());
                self.cur_sample = Some(sample.clone());
                model_output
            }
            1 | 2 => {
                self.cur_model_output = Some(add_opt(
                    self.cur_model_output.take(),
                    model_output.clone().mul_scalar(1.0 / 3.0),
                ));
                model_output
            }
            _ => add_opt(
                self.cur_model_output.take(),
                model_output.mul_scalar(1.0 / 6.0),
            ),
        };
        let cur_sample = self.cur_sample.clone().unwrap_or(sample);
        self.prev_sample(cur_sample, timestep, prev_t, model_output)
    }

    /// diffusers' `step_plms`: a linear multistep step of order up to 4.
    fn step_plms(&mut self, model_output: Tensor<4>, t: i64, sample: Tensor<4>) -> Tensor<4> {
        let mut prev_t = t - self.step_ratio;
        let mut timestep = t;
        if self.counter != 1 {
            let keep = self.ets.len().saturating_sub(3);
            self.ets.drain(..keep);
            self.ets.push(model_output.clone());
        } else {
            prev_t = t;
            timestep = t + self.step_ratio;
        }

        let e = |k: usize| self.ets[self.ets.len() - k].clone();
        let (model_output, sample) = match self.ets.len() {
            1 if self.counter == 0 => {
                self.cur_sample = Some(sample.clone());
                (model_output, sample)
            }
            1 if self.counter == 1 => {
                let combined = (model_output + e(1)).div_scalar(2.0);
                let first = self.cur_sample.take().unwrap_or(sample);
                (combined, first)
            }
            // Only reachable through the two cases above; kept total for safety.
            0 | 1 => (model_output, sample),
            2 => ((e(1).mul_scalar(3.0) - e(2)).div_scalar(2.0), sample),
            3 => (
                (e(1).mul_scalar(23.0) - e(2).mul_scalar(16.0) + e(3).mul_scalar(5.0))
                    .div_scalar(12.0),
                sample,
            ),
            _ => (
                (e(1).mul_scalar(55.0) - e(2).mul_scalar(59.0) + e(3).mul_scalar(37.0)
                    - e(4).mul_scalar(9.0))
                .mul_scalar(1.0 / 24.0),
                sample,
            ),
        };
        self.prev_sample(sample, timestep, prev_t, model_output)
    }

    /// diffusers' `_get_prev_sample`: formula (9) of the PNDM paper, in float32 coefficients.
    fn prev_sample(
        &self,
        sample: Tensor<4>,
        timestep: i64,
        prev_timestep: i64,
        model_output: Tensor<4>,
    ) -> Tensor<4> {
        let alpha_prod_t = self.alpha(timestep);
        let alpha_prod_t_prev = self.alpha(prev_timestep);
        let beta_prod_t = 1.0 - alpha_prod_t;
        let beta_prod_t_prev = 1.0 - alpha_prod_t_prev;

        let model_output = match self.params.prediction {
            PredictionType::VPrediction => {
                model_output.mul_scalar(f64::from(alpha_prod_t.sqrt()))
                    + sample.clone().mul_scalar(f64::from(beta_prod_t.sqrt()))
            }
            PredictionType::Epsilon | PredictionType::Sample => model_output,
        };
        let sample_coeff = (alpha_prod_t_prev / alpha_prod_t).sqrt();
        let denom = alpha_prod_t * beta_prod_t_prev.sqrt()
            + (alpha_prod_t * beta_prod_t * alpha_prod_t_prev).sqrt();
        sample.mul_scalar(f64::from(sample_coeff))
            - model_output
                .mul_scalar(f64::from(alpha_prod_t_prev - alpha_prod_t))
                .div_scalar(f64::from(denom))
    }

    pub fn add_noise(&self, original: Tensor<4>, noise: Tensor<4>, step_index: usize) -> Tensor<4> {
        let alpha = self.alpha(self.timesteps[step_index]);
        original.mul_scalar(f64::from(alpha.sqrt()))
            + noise.mul_scalar(f64::from((1.0 - alpha).sqrt()))
    }
}

/// `acc + x`, where a missing `acc` is diffusers' initial `0`.
fn add_opt(acc: Option<Tensor<4>>, x: Tensor<4>) -> Tensor<4> {
    match acc {
        Some(acc) => acc + x,
        None => x,
    }
}

/// Resolved `PNDMScheduler` parameters.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PndmParams {
    /// Never rescaled: `PNDMScheduler` takes no `rescale_betas_zero_snr`, so diffusers'
    /// `from_config` drops a carried-over value.
    pub beta: BetaParams,
    /// `Epsilon` or `VPrediction` (diffusers' PNDM rejects anything else).
    pub prediction: PredictionType,
    pub spacing: TimestepSpacing,
    pub steps_offset: i64,
    pub skip_prk_steps: bool,
    pub set_alpha_to_one: bool,
}

impl PndmParams {
    pub fn resolve(c: &SchedulerConfig) -> Result<Self, SchedulerError> {
        let mut beta = BetaParams::resolve(c)?;
        beta.rescale_betas_zero_snr = false;
        // diffusers accepts any string here but raises at the first `step`; refuse it up front.
        let prediction = parse_choice(
            "prediction_type",
            c.prediction_type.as_deref(),
            PredictionType::Epsilon,
            &[
                ("epsilon", PredictionType::Epsilon),
                ("v_prediction", PredictionType::VPrediction),
            ],
        )?;
        Ok(Self {
            beta,
            prediction,
            spacing: spacing(c, TimestepSpacing::Leading)?,
            steps_offset: c.steps_offset.unwrap_or(0),
            skip_prk_steps: c.skip_prk_steps.unwrap_or(false),
            set_alpha_to_one: c.set_alpha_to_one.unwrap_or(false),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::{SchedulerConfig, SchedulerKind};

    fn timesteps(json: &str, n: usize) -> Result<Vec<i64>, SchedulerError> {
        let mut c = SchedulerConfig::from_json_str(json).unwrap();
        c.class_name = SchedulerKind::Pndm.class_name().into();
        Pndm::new(PndmParams::resolve(&c)?, n).map(|p| p.timesteps)
    }

    #[test]
    fn timesteps_match_diffusers() {
        // PNDMScheduler(...).set_timesteps(n).timesteps in diffusers 0.42.1.
        let plms = r#"{"skip_prk_steps": true, "steps_offset": 1}"#;
        assert_eq!(timesteps(plms, 1).unwrap(), vec![1]);
        assert_eq!(timesteps(plms, 2).unwrap(), vec![501, 1, 1]);
        assert_eq!(
            timesteps(plms, 5).unwrap(),
            vec![801, 601, 601, 401, 201, 1]
        );
        let linspace = r#"{"skip_prk_steps": true, "timestep_spacing": "linspace"}"#;
        assert_eq!(timesteps(linspace, 1).unwrap(), vec![0]);
        assert_eq!(timesteps(linspace, 3).unwrap(), vec![999, 500, 500, 0]);
        let trailing = r#"{"skip_prk_steps": true, "timestep_spacing": "trailing"}"#;
        assert_eq!(timesteps(trailing, 3).unwrap(), vec![999, 666, 666, 332]);
        let prk = r#"{"steps_offset": 1}"#;
        assert_eq!(
            timesteps(prk, 5).unwrap(),
            vec![
                801, 701, 701, 601, 601, 501, 501, 401, 401, 301, 301, 201, 201, 1
            ]
        );
        let prk_linspace = r#"{"timestep_spacing": "linspace"}"#;
        assert_eq!(
            timesteps(prk_linspace, 4).unwrap(),
            vec![999, 791, 791, 666, 666, 458, 458, 333, 333, 125, 125, 0, 0]
        );
        for n in 1..4 {
            assert!(matches!(
                timesteps(prk, n),
                Err(SchedulerError::InvalidStepCount { .. })
            ));
        }
        // More steps than training timesteps: numpy's rounding reaches -1 at 2000 steps.
        assert_eq!(timesteps(trailing, 1500).unwrap().len(), 1501);
        assert!(matches!(
            timesteps(trailing, 2000),
            Err(SchedulerError::InvalidStepCount { .. })
        ));
    }

    #[test]
    fn pndm_ignores_zero_snr_and_refuses_sample_prediction() {
        let mut c = SchedulerConfig::new(SchedulerKind::Pndm);
        c.rescale_betas_zero_snr = Some(true);
        assert!(!PndmParams::resolve(&c).unwrap().beta.rescale_betas_zero_snr);
        c.prediction_type = Some("sample".into());
        let err = PndmParams::resolve(&c).unwrap_err();
        assert_eq!(err.key(), Some("prediction_type"));
    }
}
