//! [`SchedulerConfig`]: diffusers' `scheduler/scheduler_config.json`, and its resolution into the
//! typed parameters of one scheduler kind.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Errors from parsing a scheduler config or building a scheduler from it.
#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    /// A config key holds a value that is not valid for the scheduler being built.
    #[error("invalid scheduler config value `{key}` = {value}: {reason}")]
    InvalidValue {
        /// The diffusers config key.
        key: &'static str,
        /// The offending value, as JSON-like text.
        value: String,
        /// Why the value is rejected.
        reason: String,
    },
    /// A config key asks for a diffusers feature that this crate does not implement.
    #[error("unsupported scheduler config `{key}` = {value}: {reason}")]
    Unsupported {
        /// The diffusers config key.
        key: &'static str,
        /// The requested value, as JSON-like text.
        value: String,
        /// What is missing.
        reason: String,
    },
    /// Two config keys are set to values that cannot be used together.
    #[error("conflicting scheduler config: `{key}` cannot be combined with `{other}`")]
    Conflict {
        /// The first key.
        key: &'static str,
        /// The key it conflicts with.
        other: &'static str,
    },
    /// The requested number of inference steps cannot be scheduled.
    #[error("invalid number of inference steps {steps}: {reason}")]
    InvalidStepCount {
        /// The requested number of steps.
        steps: usize,
        /// Why it is rejected.
        reason: String,
    },
    /// The config text is not valid JSON, or not a JSON object.
    #[error("scheduler config is not a valid JSON object: {0}")]
    Json(#[from] serde_json::Error),
}

impl SchedulerError {
    /// The config key the error is about, where there is one (the first key of a conflict).
    pub fn key(&self) -> Option<&'static str> {
        match self {
            Self::InvalidValue { key, .. }
            | Self::Unsupported { key, .. }
            | Self::Conflict { key, .. } => Some(key),
            Self::InvalidStepCount { .. } | Self::Json(_) => None,
        }
    }
}

/// The scheduler families that [`SchedulerConfig::build`] can construct.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SchedulerKind {
    /// diffusers' `DDIMScheduler` (deterministic, `eta = 0`).
    Ddim,
    /// diffusers' `DPMSolverMultistepScheduler` (DPM-Solver++ by default).
    DpmSolverMultistep,
    /// diffusers' `EulerDiscreteScheduler`.
    EulerDiscrete,
    /// diffusers' `PNDMScheduler`: pseudo numerical methods (PLMS with `skip_prk_steps`, as
    /// Stable Diffusion 1.x/2.x-base folders configure it; Runge-Kutta warm-up otherwise).
    Pndm,
    /// diffusers' `EulerAncestralDiscreteScheduler` (stochastic: fresh noise every step).
    EulerAncestral,
    /// diffusers' `LCMScheduler`: latent-consistency sampling in 2–8 steps (stochastic between
    /// steps), for LCM-distilled models and LCM-LoRA.
    Lcm,
}

impl SchedulerKind {
    /// All buildable kinds.
    pub const ALL: [SchedulerKind; 6] = [
        Self::Ddim,
        Self::DpmSolverMultistep,
        Self::EulerDiscrete,
        Self::Pndm,
        Self::EulerAncestral,
        Self::Lcm,
    ];

    /// The diffusers class name (`_class_name`) of this kind.
    pub fn class_name(self) -> &'static str {
        match self {
            Self::Ddim => "DDIMScheduler",
            Self::DpmSolverMultistep => "DPMSolverMultistepScheduler",
            Self::EulerDiscrete => "EulerDiscreteScheduler",
            Self::Pndm => "PNDMScheduler",
            Self::EulerAncestral => "EulerAncestralDiscreteScheduler",
            Self::Lcm => "LCMScheduler",
        }
    }

    /// The kind whose diffusers class name is `name`, if it is buildable.
    pub fn from_class_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.class_name() == name)
    }
}

impl fmt::Display for SchedulerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.class_name())
    }
}

impl FromStr for SchedulerKind {
    type Err = SchedulerError;

    /// Parses a diffusers class name or a short name (case-insensitive): `ddim`, `dpm++`,
    /// `dpmsolver++`, `dpm-solver++`, `dpm`, `dpmsolver`, `euler`, `pndm`, `plms`, `euler-a`
    /// (`euler_a`, `euler-ancestral`), `lcm`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(kind) = Self::from_class_name(s) {
            return Ok(kind);
        }
        match s.to_ascii_lowercase().as_str() {
            "ddim" => Ok(Self::Ddim),
            "dpm++" | "dpmsolver++" | "dpm-solver++" | "dpm" | "dpmsolver" | "dpm-solver"
            | "dpmsolvermultistep" => Ok(Self::DpmSolverMultistep),
            "euler" | "eulerdiscrete" => Ok(Self::EulerDiscrete),
            "pndm" | "plms" => Ok(Self::Pndm),
            "euler-a"
            | "euler_a"
            | "euler-ancestral"
            | "eulerancestral"
            | "eulerancestraldiscrete" => Ok(Self::EulerAncestral),
            "lcm" => Ok(Self::Lcm),
            _ => Err(SchedulerError::InvalidValue {
                key: "_class_name",
                value: format!("{s:?}"),
                reason: "expected one of ddim, dpm++, euler, euler-a, pndm, lcm or a diffusers \
                         class name"
                    .into(),
            }),
        }
    }
}

/// A diffusers scheduler config, as found in `scheduler/scheduler_config.json`.
///
/// Field names are diffusers' keys. Every field is optional: an absent (or `null`) key takes the
/// default of the scheduler class being built, exactly like diffusers' `from_config`, which only
/// carries over keys that were explicitly present. Keys this crate does not know are ignored, as
/// diffusers ignores keys a class does not take. Values are validated by
/// [`build`](Self::build), only for the keys the selected class honours.
///
/// Deserialising with serde names the offending key in its error; [`from_json_str`](Self::from_json_str)
/// also accepts the bare `Infinity`/`-Infinity`/`NaN` that Python's `json` writes (e.g.
/// `"lambda_min_clipped": -Infinity`) and returns a typed [`SchedulerError`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "Map<String, Value>")]
pub struct SchedulerConfig {
    /// `_class_name`: the diffusers scheduler class (e.g. `PNDMScheduler` for SD 1.5's folder).
    #[serde(rename = "_class_name")]
    pub class_name: String,
    /// Number of training diffusion steps (default 1000).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub num_train_timesteps: Option<usize>,
    /// First beta (default 0.0001).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub beta_start: Option<f64>,
    /// Last beta (default 0.02).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub beta_end: Option<f64>,
    /// `linear` (default), `scaled_linear` or `squaredcos_cap_v2`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub beta_schedule: Option<String>,
    /// Explicit betas, overriding `beta_start`/`beta_end`/`beta_schedule`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trained_betas: Option<Vec<f64>>,
    /// `epsilon` (default), `v_prediction` or `sample` (not PNDM).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prediction_type: Option<String>,
    /// `leading` (DDIM and PNDM default), `linspace` (DPM-Solver and Euler default) or
    /// `trailing`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timestep_spacing: Option<String>,
    /// Offset added to `leading` timesteps (default 0).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub steps_offset: Option<i64>,
    /// DDIM: clip the predicted `x_0` (default true).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clip_sample: Option<bool>,
    /// DDIM: clipping range (default 1.0).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clip_sample_range: Option<f64>,
    /// DDIM and PNDM: use 1 as the final previous `alphas_cumprod` (DDIM default true, PNDM
    /// default false).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub set_alpha_to_one: Option<bool>,
    /// DDIM and DPM-Solver: dynamic thresholding of the predicted `x_0` (default false).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thresholding: Option<bool>,
    /// Quantile used by dynamic thresholding (default 0.995).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dynamic_thresholding_ratio: Option<f64>,
    /// Upper bound of the dynamic threshold (default 1.0).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sample_max_value: Option<f64>,
    /// Rescale betas to zero terminal SNR (default false; PNDM ignores it, as diffusers does).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rescale_betas_zero_snr: Option<bool>,
    /// DPM-Solver: order 1, 2 (default) or 3.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub solver_order: Option<usize>,
    /// DPM-Solver: `dpmsolver++` (default), `dpmsolver` or `deis` (treated as `dpmsolver++`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub algorithm_type: Option<String>,
    /// DPM-Solver: `midpoint` (default) or `heun` (`logrho`, `bh1`, `bh2` mean `midpoint`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub solver_type: Option<String>,
    /// DPM-Solver: lower the order for the last steps of short schedules (default true).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lower_order_final: Option<bool>,
    /// DPM-Solver: use a first-order step at the end (default false).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub euler_at_final: Option<bool>,
    /// DPM-Solver and Euler: final sigma `zero` (default) or `sigma_min`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub final_sigmas_type: Option<String>,
    /// DPM-Solver: clip timesteps whose lambda is below this (default `-inf`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lambda_min_clipped: Option<f64>,
    /// DPM-Solver: `learned`/`learned_range` keep only the first 3 output channels of an epsilon
    /// model; the `fixed_*` values change nothing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub variance_type: Option<String>,
    /// DPM-Solver and Euler: Karras sigmas (default false).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub use_karras_sigmas: Option<bool>,
    /// DPM-Solver and Euler: exponential sigmas (default false).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub use_exponential_sigmas: Option<bool>,
    /// DPM-Solver and Euler: beta-distribution sigmas (default false).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub use_beta_sigmas: Option<bool>,
    /// DPM-Solver: uniform-lambda ("Lu") step sizes (default false).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub use_lu_lambdas: Option<bool>,
    /// DPM-Solver: flow-matching sigmas (not implemented; must be false).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub use_flow_sigmas: Option<bool>,
    /// Euler: sigma interpolation, `linear` (default) or `log_linear`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interpolation_type: Option<String>,
    /// Euler: `discrete` (default) or `continuous` (timesteps `0.25 * ln(sigma)` for v-prediction).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timestep_type: Option<String>,
    /// Smallest sigma for Karras/exponential sigmas (default: the schedule's own).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sigma_min: Option<f64>,
    /// Largest sigma for Karras/exponential sigmas (default: the schedule's own).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sigma_max: Option<f64>,
    /// PNDM: skip the Runge-Kutta warm-up and run PLMS from the first step (default false;
    /// Stable Diffusion folders set it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skip_prk_steps: Option<bool>,
    /// LCM: the distillation schedule's step count (default 50).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub original_inference_steps: Option<usize>,
    /// LCM: the timestep scale of the boundary-condition scalings (default 10).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timestep_scaling: Option<f64>,
}

impl SchedulerConfig {
    /// A config of the given kind with every key at that class's default.
    pub fn new(kind: SchedulerKind) -> Self {
        Self {
            class_name: kind.class_name().to_owned(),
            ..Self::default()
        }
    }

    /// Parses a diffusers `scheduler_config.json` text.
    ///
    /// Python's non-standard `Infinity`, `-Infinity` and `NaN` number tokens are accepted.
    pub fn from_json_str(json: &str) -> Result<Self, SchedulerError> {
        let map: Map<String, Value> = serde_json::from_str(&quote_non_finite_tokens(json))?;
        Self::try_from(map)
    }

    /// The kind named by `_class_name`.
    ///
    /// Classes this crate cannot build (e.g. `LMSDiscreteScheduler`) give
    /// [`SchedulerError::Unsupported`]; convert them with [`with_kind`](Self::with_kind).
    pub fn kind(&self) -> Result<SchedulerKind, SchedulerError> {
        SchedulerKind::from_class_name(&self.class_name).ok_or_else(|| {
            SchedulerError::Unsupported {
                key: "_class_name",
                value: format!("{:?}", self.class_name),
                reason: "only DDIMScheduler, DPMSolverMultistepScheduler, \
                         EulerDiscreteScheduler and PNDMScheduler can be built; convert with \
                         `with_kind`"
                    .into(),
            }
        })
    }

    /// This config converted to another scheduler class, like diffusers'
    /// `Kind.from_config(other.config)`: keys that were set carry over (keys the new class does
    /// not take are kept but ignored), every other key takes the new class's default.
    pub fn with_kind(mut self, kind: SchedulerKind) -> Self {
        kind.class_name().clone_into(&mut self.class_name);
        self
    }
}

impl TryFrom<Map<String, Value>> for SchedulerConfig {
    type Error = SchedulerError;

    fn try_from(map: Map<String, Value>) -> Result<Self, Self::Error> {
        let class_name = match map.get("_class_name") {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(s)) => s.clone(),
            Some(v) => return Err(invalid("_class_name", v, "expected a string")),
        };
        Ok(Self {
            class_name,
            num_train_timesteps: get_usize(&map, "num_train_timesteps")?,
            beta_start: get_f64(&map, "beta_start")?,
            beta_end: get_f64(&map, "beta_end")?,
            beta_schedule: get_string(&map, "beta_schedule")?,
            trained_betas: get_f64_vec(&map, "trained_betas")?,
            prediction_type: get_string(&map, "prediction_type")?,
            timestep_spacing: get_string(&map, "timestep_spacing")?,
            steps_offset: get_i64(&map, "steps_offset")?,
            clip_sample: get_bool(&map, "clip_sample")?,
            clip_sample_range: get_f64(&map, "clip_sample_range")?,
            set_alpha_to_one: get_bool(&map, "set_alpha_to_one")?,
            thresholding: get_bool(&map, "thresholding")?,
            dynamic_thresholding_ratio: get_f64(&map, "dynamic_thresholding_ratio")?,
            sample_max_value: get_f64(&map, "sample_max_value")?,
            rescale_betas_zero_snr: get_bool(&map, "rescale_betas_zero_snr")?,
            solver_order: get_usize(&map, "solver_order")?,
            algorithm_type: get_string(&map, "algorithm_type")?,
            solver_type: get_string(&map, "solver_type")?,
            lower_order_final: get_bool(&map, "lower_order_final")?,
            euler_at_final: get_bool(&map, "euler_at_final")?,
            final_sigmas_type: get_string(&map, "final_sigmas_type")?,
            lambda_min_clipped: get_f64(&map, "lambda_min_clipped")?,
            variance_type: get_string(&map, "variance_type")?,
            use_karras_sigmas: get_bool(&map, "use_karras_sigmas")?,
            use_exponential_sigmas: get_bool(&map, "use_exponential_sigmas")?,
            use_beta_sigmas: get_bool(&map, "use_beta_sigmas")?,
            use_lu_lambdas: get_bool(&map, "use_lu_lambdas")?,
            use_flow_sigmas: get_bool(&map, "use_flow_sigmas")?,
            interpolation_type: get_string(&map, "interpolation_type")?,
            timestep_type: get_string(&map, "timestep_type")?,
            sigma_min: get_f64(&map, "sigma_min")?,
            sigma_max: get_f64(&map, "sigma_max")?,
            skip_prk_steps: get_bool(&map, "skip_prk_steps")?,
            original_inference_steps: get_usize(&map, "original_inference_steps")?,
            timestep_scaling: get_f64(&map, "timestep_scaling")?,
        })
    }
}

/// Turns bare `NaN`, `Infinity` and `-Infinity` tokens outside strings into JSON strings.
pub(crate) fn quote_non_finite_tokens(json: &str) -> String {
    let mut out = String::with_capacity(json.len() + 16);
    let mut in_string = false;
    let mut escaped = false;
    let mut rest = json;
    while let Some(c) = rest.chars().next() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
            rest = &rest[c.len_utf8()..];
            continue;
        }
        if c == '"' {
            in_string = true;
            out.push(c);
            rest = &rest[1..];
            continue;
        }
        if let Some(token) = ["-Infinity", "Infinity", "NaN"]
            .into_iter()
            .find(|t| rest.starts_with(t))
        {
            out.push('"');
            out.push_str(token);
            out.push('"');
            rest = &rest[token.len()..];
            continue;
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

fn invalid(key: &'static str, value: &Value, reason: &str) -> SchedulerError {
    SchedulerError::InvalidValue {
        key,
        value: value.to_string(),
        reason: reason.to_owned(),
    }
}

fn present<'a>(map: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    map.get(key).filter(|v| !v.is_null())
}

fn value_to_f64(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => match s.as_str() {
            "Infinity" | "inf" => Some(f64::INFINITY),
            "-Infinity" | "-inf" => Some(f64::NEG_INFINITY),
            "NaN" | "nan" => Some(f64::NAN),
            _ => None,
        },
        _ => None,
    }
}

fn get_f64(map: &Map<String, Value>, key: &'static str) -> Result<Option<f64>, SchedulerError> {
    present(map, key)
        .map(|v| value_to_f64(v).ok_or_else(|| invalid(key, v, "expected a number")))
        .transpose()
}

fn get_i64(map: &Map<String, Value>, key: &'static str) -> Result<Option<i64>, SchedulerError> {
    present(map, key)
        .map(|v| {
            let as_int = match v {
                Value::Number(n) => n.as_i64().or_else(|| {
                    n.as_f64()
                        .filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15)
                        .map(|f| f as i64)
                }),
                _ => None,
            };
            as_int.ok_or_else(|| invalid(key, v, "expected an integer"))
        })
        .transpose()
}

fn get_usize(map: &Map<String, Value>, key: &'static str) -> Result<Option<usize>, SchedulerError> {
    match get_i64(map, key)? {
        None => Ok(None),
        Some(i) => usize::try_from(i)
            .map(Some)
            .map_err(|_| SchedulerError::InvalidValue {
                key,
                value: i.to_string(),
                reason: "expected a non-negative integer".into(),
            }),
    }
}

fn get_bool(map: &Map<String, Value>, key: &'static str) -> Result<Option<bool>, SchedulerError> {
    present(map, key)
        .map(|v| {
            v.as_bool()
                .ok_or_else(|| invalid(key, v, "expected a boolean"))
        })
        .transpose()
}

fn get_string(
    map: &Map<String, Value>,
    key: &'static str,
) -> Result<Option<String>, SchedulerError> {
    present(map, key)
        .map(|v| {
            v.as_str()
                .map(str::to_owned)
                .ok_or_else(|| invalid(key, v, "expected a string"))
        })
        .transpose()
}

fn get_f64_vec(
    map: &Map<String, Value>,
    key: &'static str,
) -> Result<Option<Vec<f64>>, SchedulerError> {
    present(map, key)
        .map(|v| {
            v.as_array()
                .and_then(|items| items.iter().map(value_to_f64).collect::<Option<Vec<_>>>())
                .ok_or_else(|| invalid(key, v, "expected an array of numbers"))
        })
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_finite_tokens_are_quoted_outside_strings() {
        let s =
            r#"{"a": -Infinity, "b": "NaN -Infinity", "c": [NaN, Infinity], "d": "x\"Infinity"}"#;
        let q = quote_non_finite_tokens(s);
        assert_eq!(
            q,
            r#"{"a": "-Infinity", "b": "NaN -Infinity", "c": ["NaN", "Infinity"], "d": "x\"Infinity"}"#
        );
    }
    #[test]
    fn parses_python_infinity() {
        let c = SchedulerConfig::from_json_str(
            r#"{"_class_name": "DPMSolverMultistepScheduler", "lambda_min_clipped": -Infinity}"#,
        )
        .unwrap();
        assert_eq!(c.lambda_min_clipped, Some(f64::NEG_INFINITY));
    }
    #[test]
    fn kind_names() {
        for k in SchedulerKind::ALL {
            assert_eq!(SchedulerKind::from_class_name(k.class_name()), Some(k));
            assert_eq!(k.class_name().parse::<SchedulerKind>().unwrap(), k);
        }
        assert_eq!(
            "dpm++".parse::<SchedulerKind>().unwrap(),
            SchedulerKind::DpmSolverMultistep
        );
        assert_eq!(
            "Euler".parse::<SchedulerKind>().unwrap(),
            SchedulerKind::EulerDiscrete
        );
        assert_eq!(
            "ddim".parse::<SchedulerKind>().unwrap(),
            SchedulerKind::Ddim
        );
        assert_eq!(
            "pndm".parse::<SchedulerKind>().unwrap(),
            SchedulerKind::Pndm
        );
        assert_eq!(
            "PLMS".parse::<SchedulerKind>().unwrap(),
            SchedulerKind::Pndm
        );
        assert_eq!(
            "euler-a".parse::<SchedulerKind>().unwrap(),
            SchedulerKind::EulerAncestral
        );
        assert_eq!("LCM".parse::<SchedulerKind>().unwrap(), SchedulerKind::Lcm);
        assert!("lms".parse::<SchedulerKind>().is_err());
    }
}
