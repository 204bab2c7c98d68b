//! Typed scheduler parameters resolved from a [`SchedulerConfig`]: the choices every scheduler
//! shares (prediction type, timestep and sigma spacing, beta schedule, thresholding) and their
//! diffusers defaults. Each scheduler resolves its own parameters from these (`DdimParams` in
//! `ddim.rs`, and so on).

use super::config::{SchedulerConfig, SchedulerError};
use super::schedule;

/// What the model predicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PredictionType {
    Epsilon,
    Sample,
    VPrediction,
}

/// How inference timesteps are spread over the training range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TimestepSpacing {
    Leading,
    Linspace,
    Trailing,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BetaSchedule {
    Linear,
    ScaledLinear,
    SquaredcosCapV2,
}

/// How the inference sigmas are spaced (DPM-Solver and Euler).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SigmaSpacing {
    /// Sigmas interpolated at the spaced timesteps.
    Timesteps,
    Karras,
    Exponential,
    /// Beta(0.6, 0.6) quantiles between the smallest and largest sigma.
    Beta,
    /// DPM-Solver's uniform-lambda steps.
    Lu,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FinalSigmas {
    Zero,
    SigmaMin,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AlgorithmType {
    /// DPM-Solver++ (data prediction).
    DpmSolverPlusPlus,
    /// DPM-Solver (noise prediction).
    DpmSolver,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SolverType {
    Midpoint,
    Heun,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Interpolation {
    Linear,
    LogLinear,
}

/// Dynamic thresholding settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Thresholding {
    pub ratio: f64,
    pub max_value: f64,
}

/// The longest training schedule accepted (diffusers' models use 1,000; every schedule is
/// computed in full on the host, so a config must not ask for billions of steps).
pub const MAX_TRAIN_TIMESTEPS: usize = 100_000;

/// The beta schedule keys shared by all kinds.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct BetaParams {
    pub num_train_timesteps: usize,
    pub beta_start: f64,
    pub beta_end: f64,
    pub schedule: BetaSchedule,
    pub trained_betas: Option<Vec<f64>>,
    pub rescale_betas_zero_snr: bool,
}

impl BetaParams {
    pub(super) fn resolve(c: &SchedulerConfig) -> Result<Self, SchedulerError> {
        let num_train_timesteps = c.num_train_timesteps.unwrap_or(1000);
        if !(2..=MAX_TRAIN_TIMESTEPS).contains(&num_train_timesteps) {
            return Err(SchedulerError::InvalidValue {
                key: "num_train_timesteps",
                value: num_train_timesteps.to_string(),
                reason: format!("must be 2..={MAX_TRAIN_TIMESTEPS}"),
            });
        }
        let schedule = parse_choice(
            "beta_schedule",
            c.beta_schedule.as_deref(),
            BetaSchedule::Linear,
            &[
                ("linear", BetaSchedule::Linear),
                ("scaled_linear", BetaSchedule::ScaledLinear),
                ("squaredcos_cap_v2", BetaSchedule::SquaredcosCapV2),
            ],
        )?;
        let beta_start = c.beta_start.unwrap_or(0.0001);
        let beta_end = c.beta_end.unwrap_or(0.02);
        if c.trained_betas.is_none() {
            check_beta("beta_start", beta_start)?;
            check_beta("beta_end", beta_end)?;
        }
        if let Some(betas) = &c.trained_betas {
            if betas.len() != num_train_timesteps {
                return Err(SchedulerError::InvalidValue {
                    key: "trained_betas",
                    value: format!("[{} values]", betas.len()),
                    reason: format!("expected num_train_timesteps = {num_train_timesteps} values"),
                });
            }
            if let Some(&bad) = betas.iter().find(|b| !(0.0..1.0).contains(*b)) {
                return Err(SchedulerError::InvalidValue {
                    key: "trained_betas",
                    value: bad.to_string(),
                    reason: "every beta must be in [0, 1)".into(),
                });
            }
        }
        Ok(Self {
            num_train_timesteps,
            beta_start,
            beta_end,
            schedule,
            trained_betas: c.trained_betas.clone(),
            rescale_betas_zero_snr: c.rescale_betas_zero_snr.unwrap_or(false),
        })
    }

    /// The float32 betas, after the optional zero-SNR rescale.
    pub fn betas(&self) -> Vec<f32> {
        let n = self.num_train_timesteps;
        let betas = match (&self.trained_betas, self.schedule) {
            (Some(b), _) => b.iter().map(|&v| v as f32).collect(),
            (None, BetaSchedule::Linear) => {
                schedule::linear_betas(self.beta_start, self.beta_end, n)
            }
            (None, BetaSchedule::ScaledLinear) => {
                schedule::scaled_linear_betas(self.beta_start, self.beta_end, n)
            }
            (None, BetaSchedule::SquaredcosCapV2) => schedule::squaredcos_cap_v2_betas(n),
        };
        if self.rescale_betas_zero_snr {
            schedule::rescale_zero_terminal_snr(&betas)
        } else {
            betas
        }
    }
}

pub(super) fn check_beta(key: &'static str, v: f64) -> Result<(), SchedulerError> {
    if (0.0..1.0).contains(&v) {
        Ok(())
    } else {
        Err(SchedulerError::InvalidValue {
            key,
            value: v.to_string(),
            reason: "must be in [0, 1)".into(),
        })
    }
}

pub(super) fn parse_choice<T: Copy>(
    key: &'static str,
    value: Option<&str>,
    default: T,
    choices: &[(&str, T)],
) -> Result<T, SchedulerError> {
    let Some(value) = value else {
        return Ok(default);
    };
    choices
        .iter()
        .find(|(name, _)| *name == value)
        .map(|&(_, v)| v)
        .ok_or_else(|| SchedulerError::InvalidValue {
            key,
            value: format!("{value:?}"),
            reason: format!(
                "expected one of {}",
                choices
                    .iter()
                    .map(|(n, _)| *n)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        })
}

pub(super) fn prediction(
    c: &SchedulerConfig,
    extra: &[(&str, PredictionType)],
) -> Result<PredictionType, SchedulerError> {
    if c.prediction_type.as_deref() == Some("flow_prediction") {
        return Err(SchedulerError::Unsupported {
            key: "prediction_type",
            value: "\"flow_prediction\"".into(),
            reason: "flow-matching models are not supported".into(),
        });
    }
    let mut choices = vec![
        ("epsilon", PredictionType::Epsilon),
        ("v_prediction", PredictionType::VPrediction),
        ("sample", PredictionType::Sample),
    ];
    choices.extend_from_slice(extra);
    parse_choice(
        "prediction_type",
        c.prediction_type.as_deref(),
        PredictionType::Epsilon,
        &choices,
    )
}

pub(super) fn spacing(
    c: &SchedulerConfig,
    default: TimestepSpacing,
) -> Result<TimestepSpacing, SchedulerError> {
    parse_choice(
        "timestep_spacing",
        c.timestep_spacing.as_deref(),
        default,
        &[
            ("leading", TimestepSpacing::Leading),
            ("linspace", TimestepSpacing::Linspace),
            ("trailing", TimestepSpacing::Trailing),
        ],
    )
}

/// `Some(clip_sample_range)` when `clip_sample` is on (`default_on` when the key is absent:
/// DDIM clips by default, LCM does not); the range must be a non-negative finite number.
pub(super) fn clip_sample_range(
    c: &SchedulerConfig,
    default_on: bool,
) -> Result<Option<f64>, SchedulerError> {
    if !c.clip_sample.unwrap_or(default_on) {
        return Ok(None);
    }
    let r = c.clip_sample_range.unwrap_or(1.0);
    if !(r >= 0.0 && r.is_finite()) {
        return Err(SchedulerError::InvalidValue {
            key: "clip_sample_range",
            value: r.to_string(),
            reason: "must be a non-negative finite number".into(),
        });
    }
    Ok(Some(r))
}

pub(super) fn thresholding(c: &SchedulerConfig) -> Result<Option<Thresholding>, SchedulerError> {
    if !c.thresholding.unwrap_or(false) {
        return Ok(None);
    }
    let ratio = c.dynamic_thresholding_ratio.unwrap_or(0.995);
    if !(0.0..=1.0).contains(&ratio) {
        return Err(SchedulerError::InvalidValue {
            key: "dynamic_thresholding_ratio",
            value: ratio.to_string(),
            reason: "must be in [0, 1]".into(),
        });
    }
    let max_value = c.sample_max_value.unwrap_or(1.0);
    if !(max_value > 0.0 && max_value.is_finite()) {
        return Err(SchedulerError::InvalidValue {
            key: "sample_max_value",
            value: max_value.to_string(),
            reason: "must be a positive finite number".into(),
        });
    }
    Ok(Some(Thresholding { ratio, max_value }))
}

pub(super) fn final_sigmas(c: &SchedulerConfig) -> Result<FinalSigmas, SchedulerError> {
    parse_choice(
        "final_sigmas_type",
        c.final_sigmas_type.as_deref(),
        FinalSigmas::Zero,
        &[
            ("zero", FinalSigmas::Zero),
            ("sigma_min", FinalSigmas::SigmaMin),
        ],
    )
}

pub(super) fn positive_sigma(
    key: &'static str,
    v: Option<f64>,
) -> Result<Option<f64>, SchedulerError> {
    match v {
        Some(s) if !(s > 0.0 && s.is_finite()) => Err(SchedulerError::InvalidValue {
            key,
            value: s.to_string(),
            reason: "must be a positive finite number".into(),
        }),
        _ => Ok(v),
    }
}

/// Karras / exponential / beta sigmas: at most one.
pub(super) fn sigma_spacing(c: &SchedulerConfig) -> Result<SigmaSpacing, SchedulerError> {
    let karras = c.use_karras_sigmas.unwrap_or(false);
    let exponential = c.use_exponential_sigmas.unwrap_or(false);
    let beta = c.use_beta_sigmas.unwrap_or(false);
    if karras && exponential {
        return Err(SchedulerError::Conflict {
            key: "use_karras_sigmas",
            other: "use_exponential_sigmas",
        });
    }
    if beta && (karras || exponential) {
        return Err(SchedulerError::Conflict {
            key: "use_beta_sigmas",
            other: if karras {
                "use_karras_sigmas"
            } else {
                "use_exponential_sigmas"
            },
        });
    }
    Ok(if karras {
        SigmaSpacing::Karras
    } else if exponential {
        SigmaSpacing::Exponential
    } else if beta {
        SigmaSpacing::Beta
    } else {
        SigmaSpacing::Timesteps
    })
}

#[cfg(test)]
mod tests {
    use super::super::ddim::DdimParams;
    use super::super::dpm_solver::DpmParams;
    use super::super::euler::EulerParams;
    use super::super::pndm::PndmParams;
    use super::*;

    #[test]
    fn defaults_per_kind() {
        let c = SchedulerConfig::default();
        let ddim = DdimParams::resolve(&c).unwrap();
        assert_eq!(ddim.spacing, TimestepSpacing::Leading);
        assert_eq!(ddim.clip_sample_range, Some(1.0));
        assert!(ddim.set_alpha_to_one);
        let dpm = DpmParams::resolve(&c).unwrap();
        assert_eq!(dpm.spacing, TimestepSpacing::Linspace);
        assert_eq!(dpm.solver_order, 2);
        assert_eq!(dpm.algorithm, AlgorithmType::DpmSolverPlusPlus);
        assert!(dpm.lower_order_final);
        let euler = EulerParams::resolve(&c).unwrap();
        assert_eq!(euler.spacing, TimestepSpacing::Linspace);
        assert_eq!(euler.beta.num_train_timesteps, 1000);
        assert_eq!(euler.beta.schedule, BetaSchedule::Linear);
        let pndm = PndmParams::resolve(&c).unwrap();
        assert_eq!(pndm.spacing, TimestepSpacing::Leading);
        assert!(!pndm.skip_prk_steps);
        assert!(!pndm.set_alpha_to_one);
        assert_eq!(pndm.steps_offset, 0);
        assert_eq!(pndm.prediction, PredictionType::Epsilon);
    }
}
