//! Multistep DPM-Solver / DPM-Solver++ (Lu et al. 2022), as diffusers'
//! `DPMSolverMultistepScheduler` (deterministic variants).
//!
//! diffusers stores the inference sigmas as a float32 tensor and derives every step coefficient
//! (`alpha_t`, `sigma_t`, `lambda`, `h`, `exp(-h)`, ...) with float32 0-d tensor arithmetic;
//! this module does the same arithmetic in `f32` on the CPU, which matters because `h` is a
//! difference of nearby lambdas.

use burn::tensor::Tensor;

use super::StepOutput;
use super::config::{SchedulerConfig, SchedulerError};
use super::params::*;
use super::schedule::{
    self, beta_sigmas, exponential_sigmas, interp_on_index_grid, karras_sigmas, lu_lambdas,
    np_arange, np_linspace, np_round, sigma_to_alpha_sigma_t, sigma_to_t,
};
use super::threshold::threshold_sample;

/// DPM-Solver state: schedule plus the multistep history.
#[derive(Debug, Clone)]
pub(crate) struct DpmSolver {
    params: DpmParams,
    alphas_cumprod: Vec<f32>,
    /// Integer timesteps, descending.
    pub timesteps: Vec<i64>,
    /// Float32 sigmas, one more than the timesteps.
    pub sigmas: Vec<f32>,
    /// Converted model outputs of the latest steps, oldest first (at most `solver_order`).
    model_outputs: Vec<Tensor<4>>,
    lower_order_nums: usize,
    last_step: Option<usize>,
}

/// The `(timesteps, sigmas)` schedule of diffusers' `set_timesteps`.
pub(crate) fn dpm_schedule(
    p: &DpmParams,
    alphas_cumprod: &[f32],
    n: usize,
) -> Result<(Vec<i64>, Vec<f32>), SchedulerError> {
    let num_train = p.beta.num_train_timesteps;
    let lambdas = schedule::lambdas_from_alphas_cumprod(alphas_cumprod);
    let ascending: Vec<f32> = lambdas.iter().rev().copied().collect();
    let clipped_idx = schedule::searchsorted_left(&ascending, p.lambda_min_clipped);
    let last_timestep = num_train - clipped_idx;
    if last_timestep == 0 {
        return Err(SchedulerError::InvalidValue {
            key: "lambda_min_clipped",
            value: p.lambda_min_clipped.to_string(),
            reason: "clips every training timestep".into(),
        });
    }

    let mut timesteps: Vec<i64> = match p.spacing {
        TimestepSpacing::Linspace => {
            let mut t: Vec<i64> = np_linspace(0.0, (last_timestep - 1) as f64, n + 1)
                .into_iter()
                .rev()
                .map(|v| np_round(v) as i64)
                .collect();
            t.pop();
            t
        }
        TimestepSpacing::Leading => {
            let ratio = (last_timestep / (n + 1)) as i64;
            (1..=n as i64)
                .rev()
                .map(|i| i * ratio + p.steps_offset)
                .collect()
        }
        TimestepSpacing::Trailing => {
            let ratio = num_train as f64 / n as f64;
            np_arange(last_timestep as f64, 0.0, -ratio)
                .into_iter()
                .map(|v| np_round(v) as i64 - 1)
                .collect()
        }
    };

    let train_sigmas = schedule::sigmas_from_alphas_cumprod(alphas_cumprod);
    let log_sigmas = schedule::log_f32(&train_sigmas);
    let sigma_min = p.sigma_min.unwrap_or_else(|| f64::from(train_sigmas[0]));
    let sigma_max = p
        .sigma_max
        .unwrap_or_else(|| f64::from(train_sigmas[num_train - 1]));
    let round = p.beta.schedule != BetaSchedule::SquaredcosCapV2;
    let to_timesteps = |sigmas: &[f64], round: bool| -> Vec<i64> {
        sigmas
            .iter()
            .map(|&s| {
                let t = sigma_to_t(s, &log_sigmas);
                (if round { np_round(t) } else { t }) as i64
            })
            .collect()
    };

    let sigmas: Vec<f64> = match p.sigma_spacing {
        SigmaSpacing::Karras => {
            let s = karras_sigmas(sigma_min, sigma_max, n);
            timesteps = to_timesteps(&s, round);
            s
        }
        SigmaSpacing::Lu => {
            let l = lu_lambdas(
                f64::from(log_sigmas[0]),
                f64::from(log_sigmas[num_train - 1]),
                n,
            );
            let s: Vec<f64> = l.into_iter().map(f64::exp).collect();
            timesteps = to_timesteps(&s, round);
            s
        }
        SigmaSpacing::Exponential => {
            let s = exponential_sigmas(sigma_min, sigma_max, n);
            timesteps = to_timesteps(&s, false);
            s
        }
        SigmaSpacing::Beta => {
            let s = beta_sigmas(sigma_min, sigma_max, n, 0.6, 0.6);
            timesteps = to_timesteps(&s, false);
            s
        }
        SigmaSpacing::Timesteps => {
            let t: Vec<f64> = timesteps.iter().map(|&t| t as f64).collect();
            let fp: Vec<f64> = train_sigmas.iter().map(|&s| f64::from(s)).collect();
            interp_on_index_grid(&t, &fp)
        }
    };

    let sigma_last = match p.final_sigmas {
        FinalSigmas::Zero => 0.0,
        FinalSigmas::SigmaMin => ((1.0 - alphas_cumprod[0]) / alphas_cumprod[0]).sqrt(),
    };
    let mut sigmas: Vec<f32> = sigmas.into_iter().map(|s| s as f32).collect();
    sigmas.push(sigma_last);
    Ok((timesteps, sigmas))
}

/// `log(alpha_t) - log(sigma_t)` of a sigma, with its `(alpha_t, sigma_t)`, in float32.
fn lambda_of(sigma: f32) -> (f32, f32, f32) {
    let (alpha_t, sigma_t) = sigma_to_alpha_sigma_t(sigma);
    (alpha_t, sigma_t, alpha_t.ln() - sigma_t.ln())
}

impl DpmSolver {
    pub fn new(params: DpmParams, n: usize) -> Result<Self, SchedulerError> {
        let mut alphas_cumprod = schedule::alphas_cumprod(&params.beta.betas());
        if params.beta.rescale_betas_zero_snr {
            // diffusers: close to 0 without being 0, so the first sigma is finite.
            if let Some(last) = alphas_cumprod.last_mut() {
                *last = 2f32.powi(-24);
            }
        }
        let (timesteps, sigmas) = dpm_schedule(&params, &alphas_cumprod, n)?;
        if timesteps.is_empty() {
            return Err(SchedulerError::InvalidStepCount {
                steps: n,
                reason: "the spacing yields no timesteps".into(),
            });
        }
        Ok(Self {
            params,
            alphas_cumprod,
            timesteps,
            sigmas,
            model_outputs: Vec::new(),
            lower_order_nums: 0,
            last_step: None,
        })
    }

    pub fn alphas_cumprod(&self) -> &[f32] {
        &self.alphas_cumprod
    }

    /// Forgets the multistep history.
    pub fn reset(&mut self) {
        self.model_outputs.clear();
        self.lower_order_nums = 0;
        self.last_step = None;
    }

    /// diffusers' `convert_model_output`: the data prediction `x_0` (DPM-Solver++) or the noise
    /// prediction (DPM-Solver), plus `x_0` for the step output.
    fn convert_model_output(
        &self,
        model_output: Tensor<4>,
        step_index: usize,
        sample: &Tensor<4>,
    ) -> (Tensor<4>, Tensor<4>) {
        let p = &self.params;
        let (alpha_t, sigma_t) = sigma_to_alpha_sigma_t(self.sigmas[step_index]);
        let (alpha_t, sigma_t) = (f64::from(alpha_t), f64::from(sigma_t));
        let mean_only = |t: Tensor<4>| {
            if p.learned_variance {
                let channels = t.dims()[1];
                t.narrow(1, 0, channels.min(3))
            } else {
                t
            }
        };
        match p.algorithm {
            AlgorithmType::DpmSolverPlusPlus => {
                let x0 = match p.prediction {
                    PredictionType::Epsilon => (sample.clone()
                        - mean_only(model_output).mul_scalar(sigma_t))
                    .div_scalar(alpha_t),
                    PredictionType::Sample => model_output,
                    PredictionType::VPrediction => {
                        sample.clone().mul_scalar(alpha_t) - model_output.mul_scalar(sigma_t)
                    }
                };
                let x0 = match p.thresholding {
                    Some(th) => threshold_sample(x0, th),
                    None => x0,
                };
                (x0.clone(), x0)
            }
            AlgorithmType::DpmSolver => {
                let epsilon = match p.prediction {
                    PredictionType::Epsilon => mean_only(model_output),
                    PredictionType::Sample => {
                        (sample.clone() - model_output.mul_scalar(alpha_t)).div_scalar(sigma_t)
                    }
                    PredictionType::VPrediction => {
                        model_output.mul_scalar(alpha_t) + sample.clone().mul_scalar(sigma_t)
                    }
                };
                let x0 = (sample.clone() - epsilon.clone().mul_scalar(sigma_t)).div_scalar(alpha_t);
                match p.thresholding {
                    Some(th) => {
                        let x0 = threshold_sample(x0, th);
                        let epsilon =
                            (sample.clone() - x0.clone().mul_scalar(alpha_t)).div_scalar(sigma_t);
                        (epsilon, x0)
                    }
                    None => (epsilon, x0),
                }
            }
        }
    }

    pub fn step(
        &mut self,
        model_output: Tensor<4>,
        step_index: usize,
        sample: Tensor<4>,
    ) -> StepOutput {
        if self.last_step.is_none_or(|last| last + 1 != step_index) {
            self.reset();
        }
        let p = &self.params;
        let len = self.timesteps.len();
        let lower_order_final = step_index + 1 == len
            && (p.euler_at_final
                || (p.lower_order_final && len < 15)
                || p.final_sigmas == FinalSigmas::Zero);
        let lower_order_second = step_index + 2 == len && p.lower_order_final && len < 15;

        let (converted, pred_original_sample) =
            self.convert_model_output(model_output, step_index, &sample);
        if self.model_outputs.len() == self.params.solver_order {
            self.model_outputs.remove(0);
        }
        self.model_outputs.push(converted);

        let order = self.params.solver_order;
        let prev_sample = if order == 1 || self.lower_order_nums < 1 || lower_order_final {
            self.first_order_update(step_index, sample)
        } else if order == 2 || self.lower_order_nums < 2 || lower_order_second {
            self.second_order_update(step_index, sample)
        } else {
            self.third_order_update(step_index, sample)
        };

        if self.lower_order_nums < order {
            self.lower_order_nums += 1;
        }
        self.last_step = Some(step_index);
        StepOutput {
            prev_sample,
            pred_original_sample,
        }
    }

    fn latest(&self, back: usize) -> Tensor<4> {
        self.model_outputs[self.model_outputs.len() - 1 - back].clone()
    }

    fn first_order_update(&self, i: usize, sample: Tensor<4>) -> Tensor<4> {
        let (alpha_t, sigma_t, lambda_t) = lambda_of(self.sigmas[i + 1]);
        let (alpha_s, sigma_s, lambda_s) = lambda_of(self.sigmas[i]);
        let h = lambda_t - lambda_s;
        let m0 = self.latest(0);
        match self.params.algorithm {
            AlgorithmType::DpmSolverPlusPlus => {
                sample.mul_scalar(f64::from(sigma_t / sigma_s))
                    - m0.mul_scalar(f64::from(alpha_t * ((-h).exp() - 1.0)))
            }
            AlgorithmType::DpmSolver => {
                sample.mul_scalar(f64::from(alpha_t / alpha_s))
                    - m0.mul_scalar(f64::from(sigma_t * (h.exp() - 1.0)))
            }
        }
    }

    fn second_order_update(&self, i: usize, sample: Tensor<4>) -> Tensor<4> {
        let (alpha_t, sigma_t, lambda_t) = lambda_of(self.sigmas[i + 1]);
        let (alpha_s0, sigma_s0, lambda_s0) = lambda_of(self.sigmas[i]);
        let (_, _, lambda_s1) = lambda_of(self.sigmas[i - 1]);
        let (m0, m1) = (self.latest(0), self.latest(1));
        let h = lambda_t - lambda_s0;
        let h_0 = lambda_s0 - lambda_s1;
        let r0 = h_0 / h;
        let d1 = (m0.clone() - m1).mul_scalar(f64::from(1.0 / r0));
        let d0 = m0;
        let c = |x: f32| f64::from(x);
        match (self.params.algorithm, self.params.solver_type) {
            (AlgorithmType::DpmSolverPlusPlus, SolverType::Midpoint) => {
                let k = alpha_t * ((-h).exp() - 1.0);
                sample.mul_scalar(c(sigma_t / sigma_s0))
                    - d0.mul_scalar(c(k))
                    - d1.mul_scalar(c(0.5 * k))
            }
            (AlgorithmType::DpmSolverPlusPlus, SolverType::Heun) => {
                let em1 = (-h).exp() - 1.0;
                sample.mul_scalar(c(sigma_t / sigma_s0)) - d0.mul_scalar(c(alpha_t * em1))
                    + d1.mul_scalar(c(alpha_t * (em1 / h + 1.0)))
            }
            (AlgorithmType::DpmSolver, SolverType::Midpoint) => {
                let k = sigma_t * (h.exp() - 1.0);
                sample.mul_scalar(c(alpha_t / alpha_s0))
                    - d0.mul_scalar(c(k))
                    - d1.mul_scalar(c(0.5 * k))
            }
            (AlgorithmType::DpmSolver, SolverType::Heun) => {
                let em1 = h.exp() - 1.0;
                sample.mul_scalar(c(alpha_t / alpha_s0))
                    - d0.mul_scalar(c(sigma_t * em1))
                    - d1.mul_scalar(c(sigma_t * (em1 / h - 1.0)))
            }
        }
    }

    fn third_order_update(&self, i: usize, sample: Tensor<4>) -> Tensor<4> {
        let (alpha_t, sigma_t, lambda_t) = lambda_of(self.sigmas[i + 1]);
        let (alpha_s0, sigma_s0, lambda_s0) = lambda_of(self.sigmas[i]);
        let (_, _, lambda_s1) = lambda_of(self.sigmas[i - 1]);
        let (_, _, lambda_s2) = lambda_of(self.sigmas[i - 2]);
        let (m0, m1, m2) = (self.latest(0), self.latest(1), self.latest(2));
        let h = lambda_t - lambda_s0;
        let h_0 = lambda_s0 - lambda_s1;
        let h_1 = lambda_s1 - lambda_s2;
        let r0 = h_0 / h;
        let r1 = h_1 / h;
        let c = |x: f32| f64::from(x);
        let d1_0 = (m0.clone() - m1.clone()).mul_scalar(c(1.0 / r0));
        let d1_1 = (m1 - m2).mul_scalar(c(1.0 / r1));
        let d1 = d1_0.clone() + (d1_0.clone() - d1_1.clone()).mul_scalar(c(r0 / (r0 + r1)));
        let d2 = (d1_0 - d1_1).mul_scalar(c(1.0 / (r0 + r1)));
        let d0 = m0;
        let h2 = h * h;
        match self.params.algorithm {
            AlgorithmType::DpmSolverPlusPlus => {
                let em1 = (-h).exp() - 1.0;
                sample.mul_scalar(c(sigma_t / sigma_s0)) - d0.mul_scalar(c(alpha_t * em1))
                    + d1.mul_scalar(c(alpha_t * (em1 / h + 1.0)))
                    - d2.mul_scalar(c(alpha_t * ((em1 + h) / h2 - 0.5)))
            }
            AlgorithmType::DpmSolver => {
                let em1 = h.exp() - 1.0;
                sample.mul_scalar(c(alpha_t / alpha_s0))
                    - d0.mul_scalar(c(sigma_t * em1))
                    - d1.mul_scalar(c(sigma_t * (em1 / h - 1.0)))
                    - d2.mul_scalar(c(sigma_t * ((em1 - h) / h2 - 0.5)))
            }
        }
    }

    pub fn add_noise(&self, original: Tensor<4>, noise: Tensor<4>, step_index: usize) -> Tensor<4> {
        let (alpha_t, sigma_t) = sigma_to_alpha_sigma_t(self.sigmas[step_index]);
        original.mul_scalar(f64::from(alpha_t)) + noise.mul_scalar(f64::from(sigma_t))
    }
}

/// Resolved `DPMSolverMultistepScheduler` parameters.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct DpmParams {
    pub beta: BetaParams,
    pub solver_order: usize,
    pub prediction: PredictionType,
    pub thresholding: Option<Thresholding>,
    pub algorithm: AlgorithmType,
    pub solver_type: SolverType,
    pub lower_order_final: bool,
    pub euler_at_final: bool,
    pub sigma_spacing: SigmaSpacing,
    pub final_sigmas: FinalSigmas,
    pub lambda_min_clipped: f64,
    pub learned_variance: bool,
    pub spacing: TimestepSpacing,
    pub steps_offset: i64,
    /// `sigma_min`/`sigma_max` only reach DPM-Solver as keys carried over from another class's
    /// config (diffusers reads them with `hasattr(self.config, ...)`).
    pub sigma_min: Option<f64>,
    pub sigma_max: Option<f64>,
}

impl DpmParams {
    pub fn resolve(c: &SchedulerConfig) -> Result<Self, SchedulerError> {
        // diffusers' precedence: Karras, then Lu lambdas, then exponential / beta sigmas.
        let sigma_spacing = match sigma_spacing(c)? {
            SigmaSpacing::Karras => SigmaSpacing::Karras,
            _ if c.use_lu_lambdas.unwrap_or(false) => SigmaSpacing::Lu,
            other => other,
        };
        if c.use_flow_sigmas.unwrap_or(false) {
            return Err(SchedulerError::Unsupported {
                key: "use_flow_sigmas",
                value: "true".into(),
                reason: "flow-matching sigmas are not implemented".into(),
            });
        }
        let solver_order = c.solver_order.unwrap_or(2);
        if !(1..=3).contains(&solver_order) {
            return Err(SchedulerError::InvalidValue {
                key: "solver_order",
                value: solver_order.to_string(),
                reason: "must be 1, 2 or 3".into(),
            });
        }
        let algorithm = match c.algorithm_type.as_deref() {
            None | Some("dpmsolver++") | Some("deis") => AlgorithmType::DpmSolverPlusPlus,
            Some("dpmsolver") => AlgorithmType::DpmSolver,
            Some(v @ ("sde-dpmsolver" | "sde-dpmsolver++")) => {
                return Err(SchedulerError::Unsupported {
                    key: "algorithm_type",
                    value: format!("{v:?}"),
                    reason: "stochastic (SDE) DPM-Solver variants are not implemented".into(),
                });
            }
            Some(v) => {
                return Err(SchedulerError::InvalidValue {
                    key: "algorithm_type",
                    value: format!("{v:?}"),
                    reason: "expected one of dpmsolver++, dpmsolver, deis".into(),
                });
            }
        };
        let solver_type = parse_choice(
            "solver_type",
            c.solver_type.as_deref(),
            SolverType::Midpoint,
            &[
                ("midpoint", SolverType::Midpoint),
                ("heun", SolverType::Heun),
                ("logrho", SolverType::Midpoint),
                ("bh1", SolverType::Midpoint),
                ("bh2", SolverType::Midpoint),
            ],
        )?;
        let final_sigmas = final_sigmas(c)?;
        // diffusers checks the raw value, so `deis` (run as dpmsolver++) is rejected here too.
        let raw_algorithm = c.algorithm_type.as_deref().unwrap_or("dpmsolver++");
        if raw_algorithm != "dpmsolver++" && final_sigmas == FinalSigmas::Zero {
            return Err(SchedulerError::InvalidValue {
                key: "final_sigmas_type",
                value: "\"zero\"".into(),
                reason: format!("algorithm_type {raw_algorithm} needs final_sigmas_type sigma_min"),
            });
        }
        let lambda_min_clipped = c.lambda_min_clipped.unwrap_or(f64::NEG_INFINITY);
        if lambda_min_clipped.is_nan() {
            return Err(SchedulerError::InvalidValue {
                key: "lambda_min_clipped",
                value: "NaN".into(),
                reason: "must be a number".into(),
            });
        }
        let learned_variance = parse_choice(
            "variance_type",
            c.variance_type.as_deref(),
            false,
            &[
                ("learned", true),
                ("learned_range", true),
                ("fixed_small", false),
                ("fixed_small_log", false),
                ("fixed_large", false),
                ("fixed_large_log", false),
            ],
        )?;
        Ok(Self {
            beta: BetaParams::resolve(c)?,
            solver_order,
            prediction: prediction(c, &[])?,
            thresholding: thresholding(c)?,
            algorithm,
            solver_type,
            lower_order_final: c.lower_order_final.unwrap_or(true),
            euler_at_final: c.euler_at_final.unwrap_or(false),
            sigma_spacing,
            final_sigmas,
            lambda_min_clipped,
            learned_variance,
            spacing: spacing(c, TimestepSpacing::Linspace)?,
            steps_offset: c.steps_offset.unwrap_or(0),
            sigma_min: positive_sigma("sigma_min", c.sigma_min)?,
            sigma_max: positive_sigma("sigma_max", c.sigma_max)?,
        })
    }
}
