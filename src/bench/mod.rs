//! Speed against the reference: one denoising step (classifier-free guidance, so the UNet sees
//! twice the images) of an SD-1.5-shaped UNet with random weights, on a burn device, and the
//! same UNet in diffusers (`tools/bench_unet.py`, run as a child process) in the same run.
//! Used by `synfer bench` and `cargo bench --bench unet`.

use std::process::Command;
use std::time::Instant;

use burn::tensor::{Device, Tensor, TensorData};
use serde::Serialize;

pub mod sd15_model;

use crate::error::{Error, Result};
use crate::unet::{UNet2DConditionModel, UNetConfig};
use crate::weights::TensorStore;

/// The reference script, embedded so that the CLI runs it from any folder.
pub const REFERENCE_SCRIPT: &str = include_str!("../../tools/bench_unet.py");

/// Timing of one configuration.
#[derive(Debug, Clone, Serialize)]
pub struct StepTiming {
    /// Images per step (the UNet batch is twice this).
    pub batch: usize,
    /// Image side in pixels (latent side = size / 8).
    pub size: usize,
    /// Mean seconds per step over `iters` timed steps after one warm-up.
    pub mean_s: f64,
    /// Fastest step.
    pub min_s: f64,
    /// Timed steps.
    pub iters: usize,
}

/// SD 1.5's UNet with random weights on `device`.
pub fn sd15_unet(device: &Device) -> Result<UNet2DConditionModel> {
    let cfg = UNetConfig::from_json(&sd15_model::config("unet/config.json"), "bench")?;
    UNet2DConditionModel::load(&TensorStore::synthetic("bench", 0), &cfg, device)
}

/// Times `iters` CFG steps of `unet` on `batch` images of `size`² (one warm-up first); each
/// timing ends with the result read back, so queued GPU work is counted.
pub fn time_step(
    unet: &UNet2DConditionModel,
    device: &Device,
    batch: usize,
    size: usize,
    iters: usize,
) -> Result<StepTiming> {
    if batch == 0 || iters == 0 || size < 8 || !size.is_multiple_of(8) {
        return Err(Error::request(
            "bench",
            format!(
                "batch {batch}, iters {iters} and size {size} (a multiple of 8) must be positive"
            ),
        ));
    }
    let (n, side) = (2 * batch, size / 8);
    let noise = crate::rng::seeded_noise(1, &[n, 4, side, side]).data;
    let ctx = crate::rng::seeded_noise(2, &[n, 77, 768]).data;
    let run = || -> Result<f64> {
        let x = Tensor::<4>::from_data(TensorData::new(noise.clone(), [n, 4, side, side]), device);
        let c = Tensor::<3>::from_data(TensorData::new(ctx.clone(), [n, 77, 768]), device);
        let start = Instant::now();
        let out = unet.forward(x, &[999.0], c);
        out.into_data()
            .try_into_vec_as::<f32>()
            .map_err(|e| Error::Device(format!("reading the UNet output: {e:?}")))?;
        Ok(start.elapsed().as_secs_f64())
    };
    run()?;
    let times = (0..iters).map(|_| run()).collect::<Result<Vec<f64>>>()?;
    Ok(StepTiming {
        batch,
        size,
        mean_s: times.iter().sum::<f64>() / iters as f64,
        min_s: times.iter().copied().fold(f64::INFINITY, f64::min),
        iters,
    })
}

/// Where and how diffusers runs the reference.
#[derive(Debug, Clone)]
pub struct Reference {
    /// Python interpreter with torch and diffusers.
    pub python: String,
    /// torch device (`cpu`, `cuda`).
    pub device: String,
    /// `fp32` or `fp16`.
    pub dtype: String,
    /// CPU threads for torch.
    pub threads: usize,
}

impl Reference {
    /// The interpreter of `$SYNFER_PYTHON`, else `.venv/bin/python` when present, else `python3`.
    pub fn default_python() -> String {
        std::env::var("SYNFER_PYTHON").unwrap_or_else(|_| {
            if std::path::Path::new(".venv/bin/python").exists() {
                ".venv/bin/python".into()
            } else {
                "python3".into()
            }
        })
    }

    /// Times the same step in diffusers; returns the script's JSON line, or an error saying
    /// why it could not run.
    pub fn time_step(&self, batch: usize, size: usize, iters: usize) -> Result<serde_json::Value> {
        let script = std::env::temp_dir().join(format!("synfer-bench-{}.py", std::process::id()));
        std::fs::write(&script, REFERENCE_SCRIPT).map_err(|e| Error::io(&script, e))?;
        let out = Command::new(&self.python)
            .arg(&script)
            .args([self.threads.to_string(), iters.to_string()])
            .args(["--device", &self.device, "--dtype", &self.dtype])
            .args(["--size", &size.to_string(), "--batch", &batch.to_string()])
            .output();
        let _ = std::fs::remove_file(&script);
        let what = format!(
            "diffusers reference ({} {} on {})",
            self.python, self.dtype, self.device
        );
        let out = out.map_err(|e| Error::Device(format!("{what} not run: {e}")))?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            let tail: Vec<&str> = err.lines().rev().take(3).collect();
            return Err(Error::Device(format!(
                "{what} failed ({}): {}",
                out.status,
                tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
            )));
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text.lines().last().unwrap_or_default();
        serde_json::from_str(line)
            .map_err(|e| Error::Device(format!("{what} printed no JSON ({e}): {text}")))
    }
}

/// A `synfer bench` run: synfer's step on one device against diffusers in each precision.
#[derive(Debug, Clone)]
pub struct Comparison {
    /// Image side in pixels.
    pub size: usize,
    /// Images per step, one configuration each.
    pub batches: Vec<usize>,
    /// Timed steps per configuration (after one warm-up).
    pub iters: usize,
    /// torch device of the reference (`none`: synfer only).
    pub reference: String,
    /// Reference precisions (`fp32`, `fp16`).
    pub dtypes: Vec<String>,
    /// Python with torch and diffusers.
    pub python: String,
    /// Where the results go as JSON, rewritten after every measurement (a run stopped by a
    /// time limit keeps the rest).
    pub out: Option<std::path::PathBuf>,
}

impl Comparison {
    /// Runs it on `device` (named `device_name` in the results); `report` gets a line per
    /// measurement. Returns the JSON rows.
    pub fn run(
        &self,
        device: &Device,
        device_name: &str,
        mut report: impl FnMut(&str),
    ) -> Result<Vec<serde_json::Value>> {
        use serde_json::json;
        if let Some(bad) = self
            .dtypes
            .iter()
            .find(|d| !matches!(d.as_str(), "fp32" | "fp16"))
        {
            return Err(Error::request(
                "reference_dtype",
                format!("{bad:?}: use fp32 or fp16"),
            ));
        }
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let unet = sd15_unet(device)?;
        let mut rows: Vec<serde_json::Value> = Vec::new();
        let save = |rows: &[serde_json::Value]| -> Result<()> {
            let Some(path) = &self.out else {
                return Ok(());
            };
            let doc = json!({
                "device": device_name, "size": self.size, "threads": threads, "results": rows,
            });
            let text = serde_json::to_vec_pretty(&doc).map_err(|e| Error::json("bench", e))?;
            crate::files::write_atomic(path, &text)
        };
        for &batch in &self.batches {
            let ours = time_step(&unet, device, batch, self.size, self.iters)?;
            report(&format!(
                "synfer   batch {batch}: {:.4} s/step (min {:.4})",
                ours.mean_s, ours.min_s
            ));
            rows.push(json!({"synfer": ours, "diffusers": []}));
            save(&rows)?;
            let dtypes = if self.reference == "none" {
                &[][..]
            } else {
                &self.dtypes[..]
            };
            let mut refs = Vec::new();
            for dtype in dtypes {
                let reference = Reference {
                    python: self.python.clone(),
                    device: self.reference.clone(),
                    dtype: dtype.clone(),
                    threads,
                };
                match reference.time_step(batch, self.size, self.iters) {
                    Ok(v) => {
                        let theirs = v.get("mean_s").and_then(|m| m.as_f64()).unwrap_or(f64::NAN);
                        report(&format!(
                            "diffusers batch {batch} {dtype} on {}: {theirs:.4} s/step → \
                             synfer/diffusers {:.2}×",
                            v.get("device").and_then(|d| d.as_str()).unwrap_or("?"),
                            ours.mean_s / theirs
                        ));
                        refs.push(
                            json!({"dtype": dtype, "result": v, "ratio": ours.mean_s / theirs}),
                        );
                    }
                    Err(e) => {
                        report(&format!("diffusers batch {batch} {dtype}: {e}"));
                        refs.push(json!({"dtype": dtype, "error": e.to_string()}));
                    }
                }
                if let Some(row) = rows.last_mut() {
                    row["diffusers"] = json!(refs);
                }
                save(&rows)?;
            }
        }
        Ok(rows)
    }
}
