//! Diffusion noise schedulers that match huggingface diffusers 0.42.1 numerically.
//!
//! A [`SchedulerConfig`] is read from a diffusers `scheduler/scheduler_config.json`, optionally
//! converted to another class with [`SchedulerConfig::with_kind`], and
//! [built](SchedulerConfig::build) for a number of inference steps into a [`Scheduler`]:
//!
//! ```no_run
//! use burn::tensor::{Device, Tensor};
//! use synfer::scheduler::{SchedulerConfig, SchedulerKind};
//!
//! # fn unet(x: Tensor<4>, t: f64) -> Tensor<4> { x }
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let json = r#"{"_class_name": "PNDMScheduler", "beta_schedule": "scaled_linear",
//!                "beta_start": 0.00085, "beta_end": 0.012, "steps_offset": 1}"#;
//! let config = SchedulerConfig::from_json_str(json)?.with_kind(SchedulerKind::EulerDiscrete);
//! let mut scheduler = config.build(25)?;
//! let device = Device::flex();
//! let mut latents = Tensor::<4>::ones([1, 4, 64, 64], &device)
//!     .mul_scalar(scheduler.init_noise_sigma());
//! for i in 0..scheduler.timesteps().len() {
//!     let input = scheduler.scale_model_input(latents.clone(), i);
//!     let noise_pred = unet(input, scheduler.timesteps()[i]);
//!     latents = scheduler.step(noise_pred, i, latents).prev_sample;
//! }
//! # Ok(())
//! # }
//! ```
//!
//! Schedule maths runs on the CPU ([`schedule`]); the per-step tensor work is plain burn tensor
//! ops with scalar coefficients, so any batch size, backend and autodiff device works.

mod config;
mod ddim;
mod ddim_inverse;
mod dpm_solver;
mod euler;
mod euler_ancestral;
mod lcm;
mod params;
mod pndm;
pub mod schedule;
mod threshold;

use burn::tensor::Tensor;

#[cfg(not(target_family = "wasm"))]
pub(crate) use config::quote_non_finite_tokens;
pub use config::{SchedulerConfig, SchedulerError, SchedulerKind};

use ddim::{Ddim, DdimParams};
use ddim_inverse::DdimInverse;
use dpm_solver::{DpmParams, DpmSolver};
use euler::{Euler, EulerParams};
use euler_ancestral::EulerAncestral;
use lcm::{Lcm, LcmParams};
use params::PredictionType;
use pndm::{Pndm, PndmParams};

/// The largest `num_inference_steps` that [`SchedulerConfig::build`] accepts.
pub const MAX_INFERENCE_STEPS: usize = 100_000;

/// Where a stochastic scheduler (Euler ancestral, LCM) takes each step's fresh noise from.
#[derive(Debug, Clone)]
pub enum StepNoise {
    /// Image `i`'s noise at step `k`: standard normal from
    /// [`rng::step_rng`](crate::rng::step_rng)`(seeds[i], k, STEP_NOISE_STREAM)`, made on the
    /// host so that every device draws the same (an image past the list uses seed 0).
    Seeded(Vec<u64>),
    /// One tensor per step index, e.g. a reference implementation's recorded noise (a step
    /// past the list gets zeros).
    Given(Vec<Tensor<4>>),
}

/// The [`rng::step_rng`](crate::rng::step_rng) stream of [`StepNoise::Seeded`].
pub const STEP_NOISE_STREAM: u64 = 0x57e9_0015e;

impl StepNoise {
    /// The noise of step `step_index` for a sample like `like`.
    fn draw(&self, step_index: usize, like: &Tensor<4>) -> Tensor<4> {
        let dims = like.dims();
        match self {
            StepNoise::Seeded(seeds) => {
                let per: usize = dims[1..].iter().product();
                let mut data = Vec::with_capacity(dims[0] * per);
                for i in 0..dims[0] {
                    let seed = seeds.get(i).copied().unwrap_or(0);
                    let mut rng = crate::rng::step_rng(seed, step_index as u64, STEP_NOISE_STREAM);
                    data.extend(crate::rng::standard_normal(&mut rng, per));
                }
                Tensor::from_data(burn::tensor::TensorData::new(data, dims), &like.device())
            }
            StepNoise::Given(steps) => match steps.get(step_index) {
                Some(t) => t.clone(),
                None => like.zeros_like(),
            },
        }
    }
}

/// The result of one denoising step.
#[derive(Debug, Clone)]
pub struct StepOutput {
    /// The sample at the next (less noisy) timestep.
    pub prev_sample: Tensor<4>,
    /// The model's prediction of the clean sample `x_0` at this step (after clipping or
    /// thresholding, where configured). diffusers' PNDM returns none; for it this is the `x_0`
    /// implied by this call's model output and sample at `timesteps()[step_index]`, meant for
    /// previews only.
    pub pred_original_sample: Tensor<4>,
}

/// A scheduler with its inference timesteps set (diffusers' scheduler after `set_timesteps`).
///
/// Steps are addressed by their index into [`timesteps`](Self::timesteps); call `step` once per
/// entry, in order. Multistep state (DPM-Solver's and PNDM's history) lives inside; it
/// restarts whenever `step` is not called with the index following the previous call's, so a
/// run may start at any index (as img2img does with diffusers' `set_begin_index`) and the same
/// scheduler can run another sample from index 0.
///
/// PNDM's timesteps repeat entries exactly as diffusers' do (PLMS: `[t0, t1, t1, t2, …]`, one
/// more entry than requested steps; Runge-Kutta warm-up: 12 entries for the first three
/// intervals), and its step is diffusers' state machine driven by the number of calls since the
/// run (re)started, as diffusers' `counter` is by the calls since `set_timesteps`.
#[derive(Debug, Clone)]
pub struct Scheduler {
    inner: Inner,
    prediction: PredictionType,
    timesteps: Vec<f64>,
    sigmas: Option<Vec<f64>>,
    alphas_cumprod: Vec<f64>,
    num_train_timesteps: usize,
    noise: StepNoise,
}

#[derive(Debug, Clone)]
enum Inner {
    Ddim(Ddim),
    Dpm(DpmSolver),
    Euler(Euler),
    /// Boxed: PNDM's state is the largest.
    Pndm(Box<Pndm>),
    EulerAncestral(EulerAncestral),
    Lcm(Lcm),
}

impl SchedulerConfig {
    /// Builds the scheduler named by `_class_name` for `num_inference_steps` steps.
    ///
    /// Errors name the config key whose value is invalid or asks for an unimplemented diffusers
    /// feature. `num_inference_steps` must be in `1..=MAX_INFERENCE_STEPS` (DDIM: at most
    /// `num_train_timesteps`). Like diffusers, some settings (e.g. `trailing` spacing or a
    /// clipped `lambda_min_clipped`) can yield a different number of timesteps than requested.
    pub fn build(&self, num_inference_steps: usize) -> Result<Scheduler, SchedulerError> {
        if !(1..=MAX_INFERENCE_STEPS).contains(&num_inference_steps) {
            return Err(SchedulerError::InvalidStepCount {
                steps: num_inference_steps,
                reason: format!("must be between 1 and {MAX_INFERENCE_STEPS}"),
            });
        }
        let widen = |v: &[f32]| v.iter().map(|&x| f64::from(x)).collect::<Vec<f64>>();
        let scheduler = match self.kind()? {
            SchedulerKind::Ddim => {
                let params = DdimParams::resolve(self)?;
                let num_train_timesteps = params.beta.num_train_timesteps;
                let prediction = params.prediction;
                let ddim = Ddim::new(params, num_inference_steps)?;
                Scheduler {
                    prediction,
                    timesteps: ddim.timesteps.iter().map(|&t| t as f64).collect(),
                    sigmas: None,
                    alphas_cumprod: widen(ddim.alphas_cumprod()),
                    num_train_timesteps,
                    inner: Inner::Ddim(ddim),
                    noise: StepNoise::Seeded(Vec::new()),
                }
            }
            SchedulerKind::DpmSolverMultistep => {
                let params = DpmParams::resolve(self)?;
                let num_train_timesteps = params.beta.num_train_timesteps;
                let prediction = params.prediction;
                let dpm = DpmSolver::new(params, num_inference_steps)?;
                Scheduler {
                    prediction,
                    timesteps: dpm.timesteps.iter().map(|&t| t as f64).collect(),
                    sigmas: Some(widen(&dpm.sigmas)),
                    alphas_cumprod: widen(dpm.alphas_cumprod()),
                    num_train_timesteps,
                    inner: Inner::Dpm(dpm),
                    noise: StepNoise::Seeded(Vec::new()),
                }
            }
            SchedulerKind::EulerDiscrete => {
                let params = EulerParams::resolve(self)?;
                let num_train_timesteps = params.beta.num_train_timesteps;
                let prediction = params.prediction;
                let euler = Euler::new(params, num_inference_steps)?;
                Scheduler {
                    prediction,
                    timesteps: widen(&euler.timesteps),
                    sigmas: Some(widen(&euler.sigmas)),
                    alphas_cumprod: widen(euler.alphas_cumprod()),
                    num_train_timesteps,
                    inner: Inner::Euler(euler),
                    noise: StepNoise::Seeded(Vec::new()),
                }
            }
            SchedulerKind::Pndm => {
                let params = PndmParams::resolve(self)?;
                let num_train_timesteps = params.beta.num_train_timesteps;
                let prediction = params.prediction;
                let pndm = Pndm::new(params, num_inference_steps)?;
                Scheduler {
                    prediction,
                    timesteps: pndm.timesteps.iter().map(|&t| t as f64).collect(),
                    sigmas: None,
                    alphas_cumprod: widen(pndm.alphas_cumprod()),
                    num_train_timesteps,
                    inner: Inner::Pndm(Box::new(pndm)),
                    noise: StepNoise::Seeded(Vec::new()),
                }
            }
            SchedulerKind::EulerAncestral => {
                let ea = EulerAncestral::new(self, num_inference_steps)?;
                Scheduler {
                    prediction: ea.euler.params.prediction,
                    timesteps: widen(&ea.euler.timesteps),
                    sigmas: Some(widen(&ea.euler.sigmas)),
                    alphas_cumprod: widen(ea.euler.alphas_cumprod()),
                    num_train_timesteps: ea.euler.params.beta.num_train_timesteps,
                    inner: Inner::EulerAncestral(ea),
                    noise: StepNoise::Seeded(Vec::new()),
                }
            }
            SchedulerKind::Lcm => {
                let params = LcmParams::resolve(self)?;
                let num_train_timesteps = params.beta.num_train_timesteps;
                let prediction = params.prediction;
                let lcm = Lcm::new(params, num_inference_steps)?;
                Scheduler {
                    prediction,
                    timesteps: lcm.timesteps.iter().map(|&t| t as f64).collect(),
                    sigmas: None,
                    alphas_cumprod: widen(lcm.alphas_cumprod()),
                    num_train_timesteps,
                    inner: Inner::Lcm(lcm),
                    noise: StepNoise::Seeded(Vec::new()),
                }
            }
        };
        Ok(scheduler)
    }
}

/// DDIM run backwards, as diffusers' `DDIMInverseScheduler` (eta = 0), with its timesteps set:
/// each step moves a latent from one noise level up to the next, so that DDIM denoising the
/// result over the same timesteps (reversed) gives it back. Built by
/// [`SchedulerConfig::build_inverse`] from any scheduler config (its DDIM keys, as
/// `from_config`); `leading` or `trailing` spacing, any other taken as `leading`.
#[derive(Debug, Clone)]
pub struct InverseScheduler {
    inner: DdimInverse,
    timesteps: Vec<f64>,
}

impl SchedulerConfig {
    /// The inverse DDIM scheduler for `num_inference_steps` steps (see [`InverseScheduler`]).
    pub fn build_inverse(
        &self,
        num_inference_steps: usize,
    ) -> Result<InverseScheduler, SchedulerError> {
        if !(1..=MAX_INFERENCE_STEPS).contains(&num_inference_steps) {
            return Err(SchedulerError::InvalidStepCount {
                steps: num_inference_steps,
                reason: format!("must be between 1 and {MAX_INFERENCE_STEPS}"),
            });
        }
        let inner = DdimInverse::new(DdimParams::resolve(self)?, num_inference_steps)?;
        Ok(InverseScheduler {
            timesteps: inner.timesteps.iter().map(|&t| t as f64).collect(),
            inner,
        })
    }
}

impl InverseScheduler {
    /// The timesteps in inversion order (ascending).
    pub fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    /// The float32 cumulative alpha products of the training schedule.
    pub fn alphas_cumprod(&self) -> &[f32] {
        self.inner.alphas_cumprod()
    }

    /// Step `step_index`: `sample` and the model's output for it at `timesteps()[step_index]`
    /// give the latent at that timestep's noise level.
    ///
    /// # Panics
    ///
    /// If `step_index >= timesteps().len()`.
    pub fn step(&self, model_output: Tensor<4>, step_index: usize, sample: Tensor<4>) -> Tensor<4> {
        assert!(
            step_index < self.timesteps.len(),
            "step_index {step_index} is out of range for {} inverse steps",
            self.timesteps.len()
        );
        self.inner.step(model_output, step_index, sample)
    }
}

impl Scheduler {
    /// The scheduler class.
    pub fn kind(&self) -> SchedulerKind {
        match self.inner {
            Inner::Ddim(_) => SchedulerKind::Ddim,
            Inner::Dpm(_) => SchedulerKind::DpmSolverMultistep,
            Inner::Euler(_) => SchedulerKind::EulerDiscrete,
            Inner::Pndm(_) => SchedulerKind::Pndm,
            Inner::EulerAncestral(_) => SchedulerKind::EulerAncestral,
            Inner::Lcm(_) => SchedulerKind::Lcm,
        }
    }

    /// The inference timesteps in denoising order, as the model takes them (integers for DDIM,
    /// DPM-Solver and PNDM; float32 values, possibly fractional, for Euler). PNDM's repeat
    /// entries, as diffusers' do.
    pub fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    /// The number of denoising steps (model evaluations), `timesteps().len()`; for PNDM this
    /// differs from the requested number.
    pub fn num_inference_steps(&self) -> usize {
        self.timesteps.len()
    }

    /// The inference sigmas (float32 values, ending with the final sigma) of sigma-based
    /// schedulers; `None` for DDIM and PNDM.
    pub fn sigmas(&self) -> Option<&[f64]> {
        self.sigmas.as_deref()
    }

    /// The float32 cumulative alpha products of the training schedule.
    pub fn alphas_cumprod(&self) -> &[f64] {
        &self.alphas_cumprod
    }

    /// The number of training timesteps.
    pub fn num_train_timesteps(&self) -> usize {
        self.num_train_timesteps
    }

    /// The standard deviation of the initial noise: scale unit Gaussian latents by this.
    pub fn init_noise_sigma(&self) -> f64 {
        match &self.inner {
            Inner::Euler(e) | Inner::EulerAncestral(EulerAncestral { euler: e }) => {
                f64::from(e.init_noise_sigma)
            }
            Inner::Ddim(_) | Inner::Dpm(_) | Inner::Pndm(_) | Inner::Lcm(_) => 1.0,
        }
    }

    /// Scales the model input for step `step_index` (divides by `sqrt(sigma^2 + 1)` for Euler;
    /// identity otherwise).
    ///
    /// # Panics
    ///
    /// If `step_index >= num_inference_steps()`.
    pub fn scale_model_input(&self, sample: Tensor<4>, step_index: usize) -> Tensor<4> {
        self.check_index(step_index);
        match &self.inner {
            Inner::Euler(e) | Inner::EulerAncestral(EulerAncestral { euler: e }) => {
                e.scale_model_input(sample, step_index)
            }
            Inner::Ddim(_) | Inner::Dpm(_) | Inner::Pndm(_) | Inner::Lcm(_) => sample,
        }
    }

    /// Runs step `step_index`: from `sample` at `timesteps()[step_index]` and the model's output
    /// for it, computes the sample at the next timestep.
    ///
    /// # Panics
    ///
    /// If `step_index >= num_inference_steps()`, or (inside burn) if the tensors' shapes differ.
    pub fn step(
        &mut self,
        model_output: Tensor<4>,
        step_index: usize,
        sample: Tensor<4>,
    ) -> StepOutput {
        self.check_index(step_index);
        match &mut self.inner {
            Inner::Ddim(d) => d.step(model_output, step_index, sample),
            Inner::Dpm(d) => d.step(model_output, step_index, sample),
            Inner::Euler(e) => e.step(model_output, step_index, sample),
            Inner::Pndm(p) => p.step(model_output, step_index, sample),
            Inner::EulerAncestral(e) => {
                let noise = self.noise.draw(step_index, &sample);
                e.step(model_output, step_index, sample, noise)
            }
            Inner::Lcm(l) => {
                let noise = (step_index + 1 < self.timesteps.len())
                    .then(|| self.noise.draw(step_index, &sample));
                l.step(model_output, step_index, sample, noise)
            }
        }
    }

    /// Noises `original` to the noise level of step `step_index` (forward diffusion), as
    /// diffusers' `add_noise` at `timesteps()[step_index]`.
    ///
    /// # Panics
    ///
    /// If `step_index >= num_inference_steps()`, or (inside burn) if the tensors' shapes differ.
    pub fn add_noise(&self, original: Tensor<4>, noise: Tensor<4>, step_index: usize) -> Tensor<4> {
        self.check_index(step_index);
        match &self.inner {
            Inner::Ddim(d) => d.add_noise(original, noise, step_index),
            Inner::Dpm(d) => d.add_noise(original, noise, step_index),
            Inner::Euler(e) => e.add_noise(original, noise, step_index),
            Inner::Pndm(p) => p.add_noise(original, noise, step_index),
            Inner::EulerAncestral(e) => e.euler.add_noise(original, noise, step_index),
            Inner::Lcm(l) => l.add_noise(original, noise, step_index),
        }
    }

    /// The clean sample `x̂0` implied by `model_output` for the model input `sample` at
    /// timestep `t`, by the model's prediction type (ε: `(x − √(1−ᾱ)·ε) / √ᾱ`; v:
    /// `√ᾱ·x − √(1−ᾱ)·v`; sample: the output itself). `sample` is the *scaled* model input
    /// (for Euler, `scale_model_input`'s output, which is in the variance-preserving scale), and
    /// `t` may be fractional (Euler): ᾱ is interpolated linearly between training steps. Plain
    /// tensor ops, so it differentiates (semantic guidance).
    pub fn pred_original_sample(
        &self,
        model_output: Tensor<4>,
        sample: Tensor<4>,
        t: f64,
    ) -> Tensor<4> {
        let acp = schedule::interp_on_index_grid(&[t], &self.alphas_cumprod)[0];
        let (sa, sb) = (acp.sqrt(), (1.0 - acp).sqrt());
        match self.prediction {
            PredictionType::Epsilon => (sample - model_output * sb) / sa,
            PredictionType::VPrediction => sample * sa - model_output * sb,
            PredictionType::Sample => model_output,
        }
    }

    /// Sets where a stochastic scheduler's (Euler ancestral, LCM) per-step noise comes from (default: seed 0 for
    /// every image); deterministic schedulers ignore it.
    pub fn set_step_noise(&mut self, noise: StepNoise) {
        self.noise = noise;
    }

    /// Forgets the multistep history, so the next `step` starts a fresh run.
    pub fn reset(&mut self) {
        match &mut self.inner {
            Inner::Dpm(d) => d.reset(),
            Inner::Pndm(p) => p.reset(),
            Inner::Ddim(_) | Inner::Euler(_) | Inner::EulerAncestral(_) | Inner::Lcm(_) => {}
        }
    }

    fn check_index(&self, step_index: usize) {
        assert!(
            step_index < self.timesteps.len(),
            "step_index {step_index} is out of range for {} inference steps",
            self.timesteps.len()
        );
    }
}
