//! Scheduler tests against diffusers 0.42.1 references (CPU, no Python at test time).
//!
//! * `tests/fixtures/reference/schedulers.{json,safetensors}` (written by `tools/make_fixtures.py`):
//!   222 DDIM / DPM-Solver++ / Euler cases over prediction types, spacings, offsets, beta schedules
//!   and step counts, with every step's tensors.
//! * `tests/scheduler_data/extra_cases.json` (written by `tests/scheduler_data/gen_extra.py`):
//!   features those cases do not cover (Karras / exponential / Lu sigmas, thresholding, zero-SNR,
//!   cosine betas, `lambda_min_clipped`, noise-prediction DPM-Solver, order 3, ...) and
//!   `with_kind` conversions, each compared with diffusers' `Target.from_config(source.config)`.
//! * `tests/scheduler_data/pndm_cases.{json,safetensors}` (written by
//!   `tests/scheduler_data/gen_pndm.py`): `PNDMScheduler` over `skip_prk_steps` × prediction type ×
//!   spacing × `steps_offset` × `set_alpha_to_one` × 1, 2, 3, 4, 7, 25, 50 steps, the SD 1.5
//!   config, other beta schedules and conversions to and from PNDM, including the cases where
//!   diffusers fails.

use std::path::{Path, PathBuf};

use burn::tensor::{Device, Tensor, TensorData};
use safetensors::SafeTensors;
use serde_json::{Map, Value};
use synfer::scheduler::{Scheduler, SchedulerConfig, SchedulerError, SchedulerKind, StepNoise};

/// Tensor tolerance: relative L2 error.
const TENSOR_TOL: f64 = 1e-4;
/// Tolerance for float timesteps, sigmas and `init_noise_sigma`.
const SCALAR_TOL: f64 = 1e-6;

fn manifest_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn read_json(rel: &str) -> Value {
    let path = manifest_path(rel);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("bad JSON in {}: {e}", path.display()))
}

fn tensor4(values: Vec<f32>, shape: [usize; 4], device: &Device) -> Tensor<4> {
    Tensor::<4>::from_data(TensorData::new(values, shape), device)
}

fn to_vec(t: Tensor<4>) -> Vec<f32> {
    t.into_data().try_to_vec::<f32>().expect("f32 tensor")
}

/// `||a - b|| / ||b||` (absolute norm when `b` is zero).
fn rel_l2(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    let (mut diff, mut norm) = (0.0f64, 0.0f64);
    for (&x, &y) in a.iter().zip(b) {
        diff += (f64::from(x) - f64::from(y)).powi(2);
        norm += f64::from(y).powi(2);
    }
    if norm == 0.0 {
        diff.sqrt()
    } else {
        (diff / norm).sqrt()
    }
}

fn rel_scalar(a: f64, b: f64) -> f64 {
    if b == 0.0 {
        a.abs()
    } else {
        ((a - b) / b).abs()
    }
}

fn f64_array(v: &Value) -> Vec<f64> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_f64().expect("number"))
        .collect()
}

fn f32_array(v: &Value) -> Vec<f32> {
    f64_array(v).into_iter().map(|x| x as f32).collect()
}

fn shape4(v: &Value) -> [usize; 4] {
    let s: Vec<usize> = f64_array(v).into_iter().map(|x| x as usize).collect();
    s.try_into().expect("rank-4 shape")
}

/// Collects comparison failures and the worst errors seen.
#[derive(Default)]
struct Report {
    failures: Vec<String>,
    worst_tensor: (f64, String),
    worst_scalar: (f64, String),
    checked_tensors: usize,
}

impl Report {
    fn tensor(&mut self, what: String, got: &[f32], want: &[f32]) {
        let err = rel_l2(got, want);
        self.checked_tensors += 1;
        if err > self.worst_tensor.0 || err.is_nan() {
            self.worst_tensor = (err, what.clone());
        }
        if err.is_nan() || err > TENSOR_TOL {
            self.failures.push(format!(
                "{what}: relative L2 error {err:.3e} > {TENSOR_TOL:e}"
            ));
        }
    }

    fn scalar(&mut self, what: String, got: f64, want: f64) {
        let err = rel_scalar(got, want);
        if err > self.worst_scalar.0 || err.is_nan() {
            self.worst_scalar = (err, what.clone());
        }
        if err.is_nan() || err > SCALAR_TOL {
            self.failures.push(format!(
                "{what}: got {got}, want {want} (relative error {err:.3e})"
            ));
        }
    }

    fn finish(self, label: &str, cases: usize) {
        println!(
            "{label}: {cases} cases, {} step tensors; worst tensor rel L2 {:.3e} ({}); \
             worst scalar rel err {:.3e} ({})",
            self.checked_tensors,
            self.worst_tensor.0,
            self.worst_tensor.1,
            self.worst_scalar.0,
            self.worst_scalar.1
        );
        assert!(
            self.failures.is_empty(),
            "{} failures:\n{}",
            self.failures.len(),
            self.failures.join("\n")
        );
    }
}

/// Compares the schedule (timesteps, sigmas, init_noise_sigma) of a built scheduler.
fn check_schedule(
    report: &mut Report,
    name: &str,
    sched: &Scheduler,
    case: &Value,
    exact_int: bool,
) {
    let want_t = f64_array(&case["timesteps"]);
    let got_t = sched.timesteps();
    if got_t.len() != want_t.len() {
        report.failures.push(format!(
            "{name}: {} timesteps, want {} ({got_t:?} vs {want_t:?})",
            got_t.len(),
            want_t.len()
        ));
        return;
    }
    for (i, (&g, &w)) in got_t.iter().zip(&want_t).enumerate() {
        if exact_int {
            if g != w {
                report
                    .failures
                    .push(format!("{name}: timestep[{i}] = {g}, want {w}"));
            }
        } else {
            report.scalar(format!("{name}: timestep[{i}]"), g, w);
        }
    }
    match (sched.sigmas(), case["sigmas"].as_array()) {
        (None, None) => {}
        (Some(got), Some(_)) => {
            let want = f64_array(&case["sigmas"]);
            if got.len() != want.len() {
                report
                    .failures
                    .push(format!("{name}: {} sigmas, want {}", got.len(), want.len()));
            } else {
                for (i, (&g, &w)) in got.iter().zip(&want).enumerate() {
                    report.scalar(format!("{name}: sigma[{i}]"), g, w);
                }
            }
        }
        (g, _) => report.failures.push(format!(
            "{name}: sigmas presence differs (got {:?}, want {})",
            g.map(<[f64]>::len),
            case["sigmas"]
        )),
    }
    report.scalar(
        format!("{name}: init_noise_sigma"),
        sched.init_noise_sigma(),
        case["init_noise_sigma"].as_f64().expect("init_noise_sigma"),
    );
}

/// The config of a shared-fixture case: its constructor kwargs plus `_class_name`.
fn fixture_config(case: &Value, key: &str) -> SchedulerConfig {
    let mut map: Map<String, Value> = case[key].as_object().expect("config object").clone();
    map.insert("_class_name".into(), case["class"].clone());
    SchedulerConfig::try_from(map).unwrap_or_else(|e| panic!("{}: {e}", case["name"]))
}

struct Fixture<'a> {
    st: SafeTensors<'a>,
}

impl Fixture<'_> {
    fn get(&self, key: &str) -> (Vec<f32>, Vec<usize>) {
        let view = self
            .st
            .tensor(key)
            .unwrap_or_else(|e| panic!("missing fixture tensor {key}: {e}"));
        let data = view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        (data, view.shape().to_vec())
    }
}

#[test]
fn diffusers_reference_cases() {
    let json = read_json("tests/fixtures/reference/schedulers.json");
    let bytes = std::fs::read(manifest_path(
        "tests/fixtures/reference/schedulers.safetensors",
    ))
    .expect("schedulers.safetensors");
    let fixture = Fixture {
        st: SafeTensors::deserialize(&bytes).expect("valid safetensors"),
    };
    let device = Device::flex();
    let shape = shape4(&json["sample_shape"]);
    let step_len: usize = shape.iter().product();
    let (sample, _) = fixture.get("sample");

    let cases = json["cases"].as_array().expect("cases");
    let mut report = Report::default();
    for case in cases {
        let name = case["name"].as_str().expect("name");
        let config = fixture_config(case, "config");
        let n = case["num_inference_steps"].as_u64().expect("steps") as usize;
        let mut sched = match config.build(n) {
            Ok(s) => s,
            Err(e) => {
                report.failures.push(format!("{name}: build failed: {e}"));
                continue;
            }
        };
        let exact_int = case["timesteps_dtype"] == "int64";
        check_schedule(&mut report, name, &sched, case, exact_int);

        // The full config (every key, `lambda_min_clipped` as "-inf") must give the same schedule.
        match fixture_config(case, "full_config").build(n) {
            Ok(full)
                if full.timesteps() == sched.timesteps() && full.sigmas() == sched.sigmas() => {}
            Ok(_) => report
                .failures
                .push(format!("{name}: full_config gives a different schedule")),
            Err(e) => report
                .failures
                .push(format!("{name}: full_config build failed: {e}")),
        }

        let (scaled, _) = fixture.get(&format!("{name}.scaled_sample"));
        let (outputs, _) = fixture.get(&format!("{name}.model_output"));
        let (prevs, _) = fixture.get(&format!("{name}.prev_sample"));
        let (preds, _) = fixture.get(&format!("{name}.pred_original_sample"));
        let steps = sched.num_inference_steps();
        if prevs.len() != steps * step_len {
            report.failures.push(format!(
                "{name}: fixture has {} steps, scheduler {steps}",
                prevs.len() / step_len
            ));
            continue;
        }
        let at = |v: &[f32], i: usize| v[i * step_len..(i + 1) * step_len].to_vec();
        let mut x = tensor4(sample.clone(), shape, &device).mul_scalar(sched.init_noise_sigma());
        for i in 0..steps {
            let xin = sched.scale_model_input(x.clone(), i);
            report.tensor(
                format!("{name} step {i}: scaled_sample"),
                &to_vec(xin),
                &at(&scaled, i),
            );
            let model_output = tensor4(at(&outputs, i), shape, &device);
            let out = sched.step(model_output, i, x);
            report.tensor(
                format!("{name} step {i}: prev_sample"),
                &to_vec(out.prev_sample.clone()),
                &at(&prevs, i),
            );
            report.tensor(
                format!("{name} step {i}: pred_original_sample"),
                &to_vec(out.pred_original_sample),
                &at(&preds, i),
            );
            x = out.prev_sample;
        }
    }

    // alphas_cumprod of both beta schedules.
    for (schedule, start, end) in [("scaled_linear", 0.00085, 0.012), ("linear", 0.0001, 0.02)] {
        let mut config = SchedulerConfig::new(SchedulerKind::Ddim);
        config.beta_schedule = Some(schedule.into());
        config.beta_start = Some(start);
        config.beta_end = Some(end);
        let sched = config.build(10).expect("build");
        let (want, _) = fixture.get(&format!("alphas_cumprod.{schedule}"));
        for (i, (&g, &w)) in sched.alphas_cumprod().iter().zip(&want).enumerate() {
            report.scalar(format!("alphas_cumprod.{schedule}[{i}]"), g, f64::from(w));
        }
    }
    report.finish("shared fixtures", cases.len());
}

/// The sample every fixture script starts from (`schedulers.safetensors`' `sample`).
fn shared_sample() -> Vec<f32> {
    let bytes = std::fs::read(manifest_path(
        "tests/fixtures/reference/schedulers.safetensors",
    ))
    .expect("schedulers.safetensors");
    let fixture = Fixture {
        st: SafeTensors::deserialize(&bytes).expect("valid safetensors"),
    };
    fixture.get("sample").0
}

/// A case's config as diffusers built it: `Source.from_config(config_json)`, then
/// `Target.from_config(…)` when the case converts.
fn case_config(case: &Value) -> SchedulerConfig {
    let name = case["name"].as_str().expect("name");
    let config = SchedulerConfig::from_json_str(case["config_json"].as_str().expect("json"))
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    match case["convert_to"].as_str() {
        Some(target) => config.with_kind(target.parse().expect("kind")),
        None => config,
    }
}

#[test]
fn diffusers_extra_cases_and_conversions() {
    let json = read_json("tests/scheduler_data/extra_cases.json");
    let shared_sample = shared_sample();
    let device = Device::flex();
    let cases = json["cases"].as_array().expect("cases");
    let mut report = Report::default();
    for case in cases {
        let name = case["name"].as_str().expect("name");
        let config = case_config(case);
        let n = case["num_inference_steps"].as_u64().expect("steps") as usize;
        let mut sched = match config.build(n) {
            Ok(s) => s,
            Err(e) => {
                report.failures.push(format!("{name}: build failed: {e}"));
                continue;
            }
        };
        assert_eq!(sched.kind().class_name(), case["class"], "{name}: class");
        let exact_int = sched.kind() != SchedulerKind::EulerDiscrete;
        check_schedule(&mut report, name, &sched, case, exact_int);

        let shape = shape4(&case["sample_shape"]);
        let out_shape = shape4(&case["model_output_shape"]);
        let steps = case["prev_sample"].as_array().expect("steps").len();
        if steps != sched.num_inference_steps() {
            report.failures.push(format!("{name}: step count differs"));
            continue;
        }
        // The shared sample, first `channels` channels (batch 1).
        let sample = shared_sample[..shape.iter().product::<usize>()].to_vec();
        let x = tensor4(sample, shape, &device).mul_scalar(sched.init_noise_sigma());
        run_recorded_steps(&mut report, name, &mut sched, case, x, out_shape);
    }
    report.finish("extra cases", cases.len());
}

/// Runs `sched` from `x` with the case's recorded model outputs, comparing every step's
/// scaled input, `prev_sample` and `pred_original_sample` with the case's.
fn run_recorded_steps(
    report: &mut Report,
    name: &str,
    sched: &mut Scheduler,
    case: &Value,
    mut x: Tensor<4>,
    out_shape: [usize; 4],
) {
    let device = x.device();
    for i in 0..sched.num_inference_steps() {
        let xin = sched.scale_model_input(x.clone(), i);
        report.tensor(
            format!("{name} step {i}: scaled_sample"),
            &to_vec(xin),
            &f32_array(&case["scaled_sample"][i]),
        );
        let model_output = tensor4(f32_array(&case["model_output"][i]), out_shape, &device);
        let out = sched.step(model_output, i, x);
        report.tensor(
            format!("{name} step {i}: prev_sample"),
            &to_vec(out.prev_sample.clone()),
            &f32_array(&case["prev_sample"][i]),
        );
        report.tensor(
            format!("{name} step {i}: pred_original_sample"),
            &to_vec(out.pred_original_sample),
            &f32_array(&case["pred_original_sample"][i]),
        );
        x = out.prev_sample;
    }
}

/// Euler ancestral and LCM against diffusers, with diffusers' own per-step noise injected
/// (`tests/scheduler_data/stochastic_cases.json`, written by `gen_stochastic.py`).
#[test]
fn diffusers_stochastic_cases() {
    let json = read_json("tests/scheduler_data/stochastic_cases.json");
    let shared_sample = shared_sample();
    let device = Device::flex();
    let cases = json["cases"].as_array().expect("cases");
    let mut report = Report::default();
    for case in cases {
        let name = case["name"].as_str().expect("name");
        let config = case_config(case);
        let n = case["num_inference_steps"].as_u64().expect("steps") as usize;
        let mut sched = config
            .build(n)
            .unwrap_or_else(|e| panic!("{name}: build failed: {e}"));
        assert_eq!(sched.kind().class_name(), case["class"], "{name}: class");
        let exact_int = sched.kind() == SchedulerKind::Lcm;
        check_schedule(&mut report, name, &sched, case, exact_int);
        let shape = shape4(&case["sample_shape"]);
        let noise: Vec<Tensor<4>> = case["step_noise"]
            .as_array()
            .expect("step_noise")
            .iter()
            .map(|v| tensor4(f32_array(v), shape, &device))
            .collect();
        sched.set_step_noise(StepNoise::Given(noise));
        let steps = case["prev_sample"].as_array().expect("steps").len();
        assert_eq!(steps, sched.num_inference_steps(), "{name}: step count");
        // The shared sample (gen_stochastic.py starts from it too).
        let sample = shared_sample[..shape.iter().product::<usize>()].to_vec();
        let x = tensor4(sample, shape, &device).mul_scalar(sched.init_noise_sigma());
        run_recorded_steps(&mut report, name, &mut sched, case, x, shape);
    }
    assert_eq!(cases.len(), 15, "fixture looks truncated");
    report.finish("stochastic cases", cases.len());
}

/// The shared fake model of the fixture scripts: `x · t / (t + 1) + 0.3 · noise`.
fn fake_model(x: Tensor<4>, t: f64, noise: &Tensor<4>) -> Tensor<4> {
    x.mul_scalar(t / (t + 1.0)) + noise.clone().mul_scalar(0.3)
}

#[test]
fn pndm_reference_cases() {
    let json = read_json("tests/scheduler_data/pndm_cases.json");
    let shared = std::fs::read(manifest_path(
        "tests/fixtures/reference/schedulers.safetensors",
    ))
    .expect("schedulers.safetensors");
    let shared = Fixture {
        st: SafeTensors::deserialize(&shared).expect("valid safetensors"),
    };
    let bytes =
        std::fs::read(manifest_path("tests/scheduler_data/pndm_cases.safetensors")).expect("pndm");
    let fixture = Fixture {
        st: SafeTensors::deserialize(&bytes).expect("valid safetensors"),
    };
    let device = Device::flex();
    let shape = shape4(&json["sample_shape"]);
    let step_len: usize = shape.iter().product();
    let (sample, _) = shared.get("sample");
    let (noise, _) = shared.get("noise");
    let noise = tensor4(noise, shape, &device);

    let cases = json["cases"].as_array().expect("cases");
    let mut report = Report::default();
    let mut errors = 0;
    for case in cases {
        let name = case["name"].as_str().expect("name");
        let config = case_config(case);
        let n = case["num_inference_steps"].as_u64().expect("steps") as usize;
        if let Some(diffusers_error) = case["error"].as_str() {
            // diffusers raises (at set_timesteps or at the first step); we refuse to build.
            errors += 1;
            match config.build(n) {
                Ok(_) => report.failures.push(format!(
                    "{name}: built, but diffusers fails at {}: {diffusers_error}",
                    case["error_at"]
                )),
                Err(
                    SchedulerError::InvalidStepCount { .. } | SchedulerError::InvalidValue { .. },
                ) => {}
                Err(e) => report
                    .failures
                    .push(format!("{name}: unexpected error kind: {e}")),
            }
            continue;
        }
        let mut sched = match config.build(n) {
            Ok(s) => s,
            Err(e) => {
                report.failures.push(format!("{name}: build failed: {e}"));
                continue;
            }
        };
        if sched.kind().class_name() != case["class"] {
            report.failures.push(format!(
                "{name}: class {}, want {}",
                sched.kind(),
                case["class"]
            ));
            continue;
        }
        check_schedule(&mut report, name, &sched, case, true);
        if let Some(full) = case["full_config"].as_str() {
            match SchedulerConfig::from_json_str(full).and_then(|c| c.build(n)) {
                Ok(f) if f.timesteps() == sched.timesteps() => {}
                Ok(_) => report
                    .failures
                    .push(format!("{name}: full_config gives a different schedule")),
                Err(e) => report
                    .failures
                    .push(format!("{name}: full_config build failed: {e}")),
            }
        }

        let (prevs, _) = fixture.get(&format!("{name}.prev_sample"));
        let preds = case["has_pred_original_sample"]
            .as_bool()
            .unwrap_or(false)
            .then(|| fixture.get(&format!("{name}.pred_original_sample")).0);
        // Runs starting mid-schedule hold the steps from `start_index` on.
        let start = case["start_index"].as_u64().unwrap_or(0) as usize;
        let steps = sched.num_inference_steps();
        if start >= steps || prevs.len() != (steps - start) * step_len {
            report.failures.push(format!(
                "{name}: fixture has {} steps from {start}, scheduler {steps}",
                prevs.len() / step_len
            ));
            continue;
        }
        let at =
            |v: &[f32], i: usize| v[(i - start) * step_len..(i - start + 1) * step_len].to_vec();
        let mut x = tensor4(sample.clone(), shape, &device).mul_scalar(sched.init_noise_sigma());
        for i in start..steps {
            let t = sched.timesteps()[i];
            let xin = sched.scale_model_input(x.clone(), i);
            let model_output = fake_model(xin, t, &noise);
            let out = sched.step(model_output, i, x);
            report.tensor(
                format!("{name} step {i} (t = {t}): prev_sample"),
                &to_vec(out.prev_sample.clone()),
                &at(&prevs, i),
            );
            if let Some(preds) = &preds {
                report.tensor(
                    format!("{name} step {i} (t = {t}): pred_original_sample"),
                    &to_vec(out.pred_original_sample),
                    &at(preds, i),
                );
            }
            x = out.prev_sample;
        }
    }
    assert!(errors > 0 && cases.len() > 300, "fixture looks truncated");
    report.finish(
        &format!("PNDM cases ({errors} where diffusers fails)"),
        cases.len(),
    );
}

#[test]
fn pndm_runs_restart_like_diffusers_set_timesteps() {
    let device = Device::flex();
    for skip_prk in [true, false] {
        let mut config = SchedulerConfig::new(SchedulerKind::Pndm);
        config.skip_prk_steps = Some(skip_prk);
        config.prediction_type = Some("v_prediction".into());
        let mut sched = config.build(8).unwrap();
        let run = |sched: &mut Scheduler, start: usize| {
            let mut x = pattern(1, 0.0, &device);
            for i in start..sched.num_inference_steps() {
                let t = sched.timesteps()[i];
                let model_output = x.clone().mul_scalar(0.5) + pattern(1, t as f32, &device);
                x = sched.step(model_output, i, x).prev_sample;
            }
            to_vec(x)
        };
        let first = run(&mut sched, 0);
        assert_eq!(
            first,
            run(&mut sched, 0),
            "a second run must not reuse history"
        );
        // Starting mid-schedule behaves like diffusers after `set_timesteps` (counter 0).
        let partial = run(&mut sched, 3);
        assert_eq!(partial, run(&mut config.build(8).unwrap(), 3));
        sched.reset();
        assert_eq!(run(&mut sched, 0), first);
    }
}

#[test]
fn pipeline_config_files_parse() {
    // sd2-tiny's scheduler_config.json as diffusers writes it, with `-Infinity`.
    let text = std::fs::read_to_string(manifest_path(
        "tests/scheduler_data/sd2_dpm_scheduler_config.json",
    ))
    .expect("config file");
    assert!(text.contains("-Infinity"));
    assert!(serde_json::from_str::<SchedulerConfig>(&text).is_err());
    let config = SchedulerConfig::from_json_str(&text).expect("parse");
    assert_eq!(config.kind().unwrap(), SchedulerKind::DpmSolverMultistep);
    assert_eq!(config.lambda_min_clipped, Some(f64::NEG_INFINITY));
    let sched = config.build(5).expect("build");
    assert_eq!(sched.timesteps(), &[831.0, 665.0, 499.0, 333.0, 167.0]);

    let sd1 = r#"{"_class_name": "DDIMScheduler", "_diffusers_version": "0.42.1",
        "beta_end": 0.012, "beta_schedule": "scaled_linear", "beta_start": 0.00085,
        "clip_sample": false, "clip_sample_range": 1.0, "dynamic_thresholding_ratio": 0.995,
        "num_train_timesteps": 1000, "prediction_type": "epsilon", "rescale_betas_zero_snr": false,
        "sample_max_value": 1.0, "set_alpha_to_one": false, "steps_offset": 1,
        "thresholding": false, "timestep_spacing": "leading", "trained_betas": null}"#;
    let config: SchedulerConfig = serde_json::from_str(sd1).expect("serde parse");
    assert_eq!(config, SchedulerConfig::from_json_str(sd1).unwrap());
    assert_eq!(
        config.build(4).unwrap().timesteps(),
        &[751.0, 501.0, 251.0, 1.0]
    );

    // Serialising writes only the keys that are set, and reads back to the same config.
    let back: SchedulerConfig =
        serde_json::from_str(&serde_json::to_string(&config).unwrap()).unwrap();
    assert_eq!(back, config);
}

#[test]
fn with_kind_carries_set_keys_and_defaults_the_rest() {
    // SD 1.5 ships a PNDMScheduler config (PLMS): one more timestep than steps, the second one
    // repeated, as diffusers' list.
    let pndm = SchedulerConfig::from_json_str(
        r#"{"_class_name": "PNDMScheduler", "beta_end": 0.012, "beta_schedule": "scaled_linear",
            "beta_start": 0.00085, "num_train_timesteps": 1000, "set_alpha_to_one": false,
            "skip_prk_steps": true, "steps_offset": 1, "trained_betas": null,
            "clip_sample": false}"#,
    )
    .unwrap();
    assert_eq!(pndm.skip_prk_steps, Some(true));
    let sched = pndm.build(5).unwrap();
    assert_eq!(sched.kind(), SchedulerKind::Pndm);
    assert_eq!(sched.timesteps(), &[801.0, 601.0, 601.0, 401.0, 201.0, 1.0]);
    assert_eq!(sched.sigmas(), None);

    // A class this crate does not implement cannot be built as is.
    let mut lms = pndm.clone();
    lms.class_name = "LMSDiscreteScheduler".into();
    let err = lms.build(10).unwrap_err();
    assert_eq!(err.key(), Some("_class_name"));
    assert!(matches!(err, SchedulerError::Unsupported { .. }), "{err}");
    assert!(lms.with_kind(SchedulerKind::Pndm).build(10).is_ok());

    for kind in SchedulerKind::ALL {
        let converted = pndm.clone().with_kind(kind);
        assert_eq!(converted.kind().unwrap(), kind);
        assert_eq!(converted.class_name, kind.class_name());
        assert_eq!(converted.steps_offset, Some(1));
        assert_eq!(converted.beta_schedule.as_deref(), Some("scaled_linear"));
        // Unset keys stay unset, so each class applies its own default spacing.
        assert_eq!(converted.timestep_spacing, None);
        let sched = converted.build(10).unwrap();
        assert_eq!(sched.kind(), kind);
        let first = sched.timesteps()[0];
        match kind {
            SchedulerKind::Ddim | SchedulerKind::Pndm => assert_eq!(first, 901.0), // leading + offset
            SchedulerKind::DpmSolverMultistep
            | SchedulerKind::EulerDiscrete
            | SchedulerKind::EulerAncestral => assert_eq!(first, 999.0), // linspace
            SchedulerKind::Lcm => assert_eq!(first, 999.0), // its distillation schedule
        }
    }

    // Converting back and forth keeps every key that was set.
    let round_trip = pndm
        .clone()
        .with_kind(SchedulerKind::EulerDiscrete)
        .with_kind(SchedulerKind::Ddim)
        .with_kind(SchedulerKind::DpmSolverMultistep);
    assert_eq!(
        round_trip,
        pndm.clone().with_kind(SchedulerKind::DpmSolverMultistep)
    );

    // Keys one class ignores (DDIM's clip_sample) carry through another class unharmed.
    let mut ddim = SchedulerConfig::new(SchedulerKind::Ddim);
    ddim.clip_sample = Some(false);
    ddim.algorithm_type = Some("not-a-solver".into()); // ignored by DDIM and Euler
    assert!(ddim.build(5).is_ok());
    assert!(
        ddim.clone()
            .with_kind(SchedulerKind::EulerDiscrete)
            .build(5)
            .is_ok()
    );
    let err = ddim
        .clone()
        .with_kind(SchedulerKind::DpmSolverMultistep)
        .build(5)
        .unwrap_err();
    assert_eq!(err.key(), Some("algorithm_type"));
}

fn build_err(json: &str) -> SchedulerError {
    match SchedulerConfig::from_json_str(json) {
        Err(e) => e,
        Ok(config) => match config.build(10) {
            Err(e) => e,
            Ok(_) => panic!("config {json} should be rejected"),
        },
    }
}

#[test]
fn invalid_values_give_typed_errors_naming_the_key() {
    let ddim = "DDIMScheduler";
    let dpm = "DPMSolverMultistepScheduler";
    let euler = "EulerDiscreteScheduler";
    // (class, extra JSON fields, key, unsupported feature rather than invalid value)
    let cases: &[(&str, &str, &str, bool)] = &[
        (ddim, r#""beta_schedule": "cosine""#, "beta_schedule", false),
        (euler, r#""beta_schedule": 3"#, "beta_schedule", false),
        (
            ddim,
            r#""prediction_type": "noise""#,
            "prediction_type",
            false,
        ),
        (
            dpm,
            r#""prediction_type": "flow_prediction""#,
            "prediction_type",
            true,
        ),
        (
            euler,
            r#""timestep_spacing": "uniform""#,
            "timestep_spacing",
            false,
        ),
        (
            ddim,
            r#""num_train_timesteps": -5"#,
            "num_train_timesteps",
            false,
        ),
        (
            ddim,
            r#""num_train_timesteps": 1"#,
            "num_train_timesteps",
            false,
        ),
        (
            euler,
            r#""num_train_timesteps": "1000""#,
            "num_train_timesteps",
            false,
        ),
        (ddim, r#""beta_start": 1.5"#, "beta_start", false),
        (dpm, r#""beta_end": -0.1"#, "beta_end", false),
        (
            ddim,
            r#""trained_betas": [0.1, 0.2]"#,
            "trained_betas",
            false,
        ),
        (ddim, r#""clip_sample": "yes""#, "clip_sample", false),
        (
            ddim,
            r#""clip_sample_range": -1.0"#,
            "clip_sample_range",
            false,
        ),
        (ddim, r#""steps_offset": 500"#, "steps_offset", false),
        (
            ddim,
            r#""thresholding": true, "dynamic_thresholding_ratio": 1.5"#,
            "dynamic_thresholding_ratio",
            false,
        ),
        (
            dpm,
            r#""thresholding": true, "sample_max_value": 0"#,
            "sample_max_value",
            false,
        ),
        (dpm, r#""solver_order": 4"#, "solver_order", false),
        (
            dpm,
            r#""algorithm_type": "sde-dpmsolver++""#,
            "algorithm_type",
            true,
        ),
        (dpm, r#""algorithm_type": "unipc""#, "algorithm_type", false),
        (
            dpm,
            r#""algorithm_type": "dpmsolver""#,
            "final_sigmas_type",
            false,
        ),
        (dpm, r#""solver_type": "rk4""#, "solver_type", false),
        (
            dpm,
            r#""final_sigmas_type": "one""#,
            "final_sigmas_type",
            false,
        ),
        (
            euler,
            r#""final_sigmas_type": "one""#,
            "final_sigmas_type",
            false,
        ),
        (dpm, r#""use_flow_sigmas": true"#, "use_flow_sigmas", true),
        (dpm, r#""variance_type": "wide""#, "variance_type", false),
        (
            dpm,
            r#""lambda_min_clipped": 1e9"#,
            "lambda_min_clipped",
            false,
        ),
        (
            euler,
            r#""interpolation_type": "cubic""#,
            "interpolation_type",
            false,
        ),
        (euler, r#""timestep_type": "jumpy""#, "timestep_type", false),
        (
            euler,
            r#""sigma_min": -1.0, "use_karras_sigmas": true"#,
            "sigma_min",
            false,
        ),
        (euler, r#""sigma_max": "big""#, "sigma_max", false),
        (
            "PNDMScheduler",
            r#""prediction_type": "sample""#,
            "prediction_type",
            false,
        ),
        (
            "PNDMScheduler",
            r#""skip_prk_steps": 1"#,
            "skip_prk_steps",
            false,
        ),
        (
            "PNDMScheduler",
            r#""steps_offset": 950, "skip_prk_steps": true"#,
            "steps_offset",
            false,
        ),
        (
            "PNDMScheduler",
            r#""timestep_spacing": "karras""#,
            "timestep_spacing",
            false,
        ),
        ("LMSDiscreteScheduler", "", "_class_name", true),
        ("", "", "_class_name", true),
    ];
    for &(class, extra, key, unsupported) in cases {
        let sep = if extra.is_empty() { "" } else { ", " };
        let json = format!(r#"{{"_class_name": "{class}"{sep}{extra}}}"#);
        let err = build_err(&json);
        assert_eq!(err.key(), Some(key), "{json}: {err}");
        assert!(
            err.to_string().contains(key),
            "{json}: message {err} lacks the key"
        );
        match (&err, unsupported) {
            (SchedulerError::Unsupported { .. }, true)
            | (SchedulerError::InvalidValue { .. }, false) => {}
            _ => panic!("{json}: unexpected error kind {err:?}"),
        }
    }

    let conflict = build_err(
        r#"{"_class_name": "EulerDiscreteScheduler", "use_karras_sigmas": true,
            "use_exponential_sigmas": true}"#,
    );
    assert!(matches!(
        conflict,
        SchedulerError::Conflict {
            key: "use_karras_sigmas",
            ..
        }
    ));

    // A value invalid only for another class is ignored, as diffusers ignores unknown keys.
    let ok = SchedulerConfig::from_json_str(
        r#"{"_class_name": "EulerDiscreteScheduler", "solver_order": 9, "clip_sample": true,
            "some_future_key": {"nested": [1, 2]}}"#,
    )
    .unwrap();
    assert!(ok.build(10).is_ok());

    assert!(matches!(build_err("{not json"), SchedulerError::Json(_)));
    assert!(matches!(build_err("[1, 2]"), SchedulerError::Json(_)));

    let ddim = SchedulerConfig::new(SchedulerKind::Ddim);
    assert!(matches!(
        ddim.build(0),
        Err(SchedulerError::InvalidStepCount { steps: 0, .. })
    ));
    assert!(matches!(
        ddim.build(1001),
        Err(SchedulerError::InvalidStepCount { steps: 1001, .. })
    ));
    let euler = SchedulerConfig::new(SchedulerKind::EulerDiscrete);
    assert!(
        euler.build(2000).is_ok(),
        "Euler allows more steps than training steps"
    );
    assert!(matches!(
        euler.build(usize::MAX),
        Err(SchedulerError::InvalidStepCount { .. })
    ));
    // PNDM's Runge-Kutta warm-up needs 4 steps (diffusers fails inside numpy below that).
    let prk = SchedulerConfig::new(SchedulerKind::Pndm);
    assert!(matches!(
        prk.build(3),
        Err(SchedulerError::InvalidStepCount { steps: 3, .. })
    ));
    assert_eq!(prk.build(4).unwrap().num_inference_steps(), 13);
}

/// A deterministic `[b, 4, 3, 3]` tensor with values of both signs and magnitudes above 1.
fn pattern(batch: usize, phase: f32, device: &Device) -> Tensor<4> {
    let n = batch * 4 * 3 * 3;
    let values = (0..n)
        .map(|i| 2.5 * ((i as f32) * 0.77 + phase).sin())
        .collect();
    tensor4(values, [batch, 4, 3, 3], device)
}

fn thresholding_configs() -> Vec<SchedulerConfig> {
    let mut configs = Vec::new();
    for kind in SchedulerKind::ALL {
        let mut c = SchedulerConfig::new(kind);
        c.beta_schedule = Some("scaled_linear".into());
        c.beta_start = Some(0.00085);
        c.beta_end = Some(0.012);
        if kind != SchedulerKind::EulerDiscrete {
            c.thresholding = Some(true);
            c.dynamic_thresholding_ratio = Some(0.9);
            c.sample_max_value = Some(1.5);
        }
        if kind == SchedulerKind::DpmSolverMultistep {
            c.solver_order = Some(3);
        }
        configs.push(c);
    }
    configs
}

#[test]
fn batches_match_single_items() {
    let device = Device::flex();
    for config in thresholding_configs() {
        let mut batched = config.build(6).unwrap();
        let mut singles: Vec<Scheduler> = (0..3).map(|_| config.build(6).unwrap()).collect();
        let mut x = pattern(3, 0.0, &device);
        let mut xs: Vec<Tensor<4>> = (0..3).map(|b| x.clone().narrow(0, b, 1)).collect();
        for i in 0..batched.num_inference_steps() {
            let model_output = pattern(3, i as f32, &device);
            let out = batched.step(model_output.clone(), i, x);
            for (b, (sched, xb)) in singles.iter_mut().zip(xs.iter_mut()).enumerate() {
                let single = sched.step(model_output.clone().narrow(0, b, 1), i, xb.clone());
                let from_batch = to_vec(out.prev_sample.clone().narrow(0, b, 1));
                let err = rel_l2(&from_batch, &to_vec(single.prev_sample.clone()));
                assert!(
                    err < 1e-6,
                    "{:?} step {i} item {b}: {err}",
                    config.class_name
                );
                *xb = single.prev_sample;
            }
            x = out.prev_sample;
        }
    }
}

#[test]
fn works_on_autodiff_tensors() {
    let plain = Device::flex();
    let device = Device::flex().autodiff();
    for config in thresholding_configs() {
        let mut reference = config.build(5).unwrap();
        let mut sched = config.build(5).unwrap();
        let x0 = pattern(2, 0.3, &device).require_grad();
        let mut x = x0.clone().mul_scalar(sched.init_noise_sigma());
        let mut y = pattern(2, 0.3, &plain).mul_scalar(reference.init_noise_sigma());
        for i in 0..sched.num_inference_steps() {
            let input = sched.scale_model_input(x.clone(), i);
            let model_output = input.mul_scalar(0.5) + pattern(2, i as f32, &device);
            x = sched.step(model_output, i, x).prev_sample;
            let input = reference.scale_model_input(y.clone(), i);
            let model_output = input.mul_scalar(0.5) + pattern(2, i as f32, &plain);
            y = reference.step(model_output, i, y).prev_sample;
        }
        let noised = sched.add_noise(x.clone(), pattern(2, 1.0, &device), 1);
        let err = rel_l2(&to_vec(x.clone()), &to_vec(y));
        assert!(
            err < 1e-6,
            "{}: autodiff result differs by {err}",
            config.class_name
        );
        let grads = (x + noised).sum().backward();
        let grad = x0
            .grad(&grads)
            .expect("gradient reaches the initial sample");
        let grad = grad.into_data().try_to_vec::<f32>().unwrap();
        assert!(grad.iter().all(|g| g.is_finite()) && grad.iter().any(|&g| g != 0.0));
    }
}

#[test]
fn add_noise_matches_the_schedule() {
    let device = Device::flex();
    let original = pattern(1, 0.0, &device);
    let noise = pattern(1, 2.0, &device);
    for kind in SchedulerKind::ALL {
        let sched = SchedulerConfig::new(kind).build(10).unwrap();
        let got = to_vec(sched.add_noise(original.clone(), noise.clone(), 3));
        let (o, n) = (to_vec(original.clone()), to_vec(noise.clone()));
        let (a, s) = match sched.sigmas() {
            None => {
                let alpha = sched.alphas_cumprod()[sched.timesteps()[3] as usize];
                (alpha.sqrt(), (1.0 - alpha).sqrt())
            }
            // Both Euler classes: `original + σ · noise` (diffusers' EulerDiscrete `add_noise`).
            Some(sigmas)
                if matches!(
                    kind,
                    SchedulerKind::EulerDiscrete | SchedulerKind::EulerAncestral
                ) =>
            {
                (1.0, sigmas[3])
            }
            Some(sigmas) => {
                let alpha = 1.0 / (sigmas[3] * sigmas[3] + 1.0).sqrt();
                (alpha, sigmas[3] * alpha)
            }
        };
        let want: Vec<f32> = o
            .iter()
            .zip(&n)
            .map(|(&o, &n)| (a * f64::from(o) + s * f64::from(n)) as f32)
            .collect();
        assert!(rel_l2(&got, &want) < 1e-6, "{kind}");
    }
}

#[test]
fn multistep_history_restarts_for_a_new_run() {
    let device = Device::flex();
    let mut config = SchedulerConfig::new(SchedulerKind::DpmSolverMultistep);
    config.solver_order = Some(3);
    let mut sched = config.build(8).unwrap();
    let run = |sched: &mut Scheduler, start: usize| {
        let mut x = pattern(1, 0.0, &device);
        for i in start..sched.num_inference_steps() {
            x = sched.step(pattern(1, i as f32, &device), i, x).prev_sample;
        }
        to_vec(x)
    };
    let first = run(&mut sched, 0);
    let second = run(&mut sched, 0);
    assert_eq!(
        first, second,
        "a second run from step 0 must not reuse history"
    );
    let partial = run(&mut sched, 3);
    let mut fresh = config.build(8).unwrap();
    assert_eq!(
        partial,
        run(&mut fresh, 3),
        "starting mid-schedule behaves like a fresh start"
    );
    sched.reset();
    assert_eq!(run(&mut sched, 0), first);
}

#[test]
fn too_many_steps_blame_the_steps_and_an_absurd_offset_blames_the_offset() {
    let cfg = |offset: i64| {
        SchedulerConfig::from_json_str(&format!(
            r#"{{"_class_name": "DDIMScheduler", "steps_offset": {offset}}}"#
        ))
        .unwrap()
    };
    // 1,000 steps + offset 1 reach timestep 1,000; 999 steps fit: the step count is at fault.
    let err = cfg(1).build(1000).unwrap_err();
    assert!(
        matches!(err, SchedulerError::InvalidStepCount { steps: 1000, .. }),
        "{err:?}"
    );
    assert!(cfg(1).build(999).is_ok());
    // An offset of 600 fails for every count above 1: the offset is at fault.
    let err = cfg(600).build(10).unwrap_err();
    assert_eq!(err.key(), Some("steps_offset"), "{err}");
}
