//! What a generation gives back: the images ([`GenerateOutput`]), progress events
//! ([`StepEvent`]) and the record of each image ([`ImageRecord`]: the JSON sidecar of the CLI
//! and the page's per-image metadata).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::request::{GenerateRequest, scheduler_short_name};
use crate::au::AuVector;
use crate::expression::Expression;
use crate::scheduler::SchedulerKind;

/// What happened at one denoising step.
#[derive(Debug, Clone)]
pub struct StepEvent {
    /// Steps done (1-based).
    pub step: usize,
    /// Total steps: the scheduler's timesteps (model evaluations), which for PNDM is more
    /// than the requested number.
    pub total: usize,
    /// The timestep just processed.
    pub timestep: f64,
    /// The first image's current prediction of the clean image `x̂0`, decoded (RGB bytes,
    /// output size), on the steps [`GenerateOptions::preview_every`](super::GenerateOptions)
    /// asks for.
    pub preview: Option<Vec<u8>>,
}

/// A finished generation.
#[derive(Debug, Clone)]
pub struct GenerateOutput {
    /// One RGB image per request image: `height × width × 3` bytes.
    pub images: Vec<Vec<u8>>,
    /// The same images as f32 in `[0, 1]` (`height × width × 3`), before rounding.
    pub images_f32: Vec<Vec<f32>>,
    /// Pixel width.
    pub width: usize,
    /// Pixel height.
    pub height: usize,
    /// Seed of each image (`seed + i`; `None` when latents were supplied).
    pub seeds: Vec<Option<u64>>,
    /// Non-fatal notes (e.g. prompt truncation).
    pub warnings: Vec<String>,
    /// The prompt that was encoded (see [`GenerateRequest::effective_prompt`]).
    pub prompt: String,
    /// The AU vector used, when the model has an AU adapter.
    pub aus: Option<AuVector>,
    /// The AU branch weight used.
    pub au_scale: Option<f64>,
    /// The scheduler that ran.
    pub scheduler: SchedulerKind,
}

/// Seconds spent on a generation.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Timings {
    /// Loading the model (CLI).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_s: Option<f64>,
    /// The generation call.
    pub generate_s: f64,
    /// `generate_s` per requested step.
    pub per_step_s: f64,
    /// The whole command (CLI).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_s: Option<f64>,
}

impl Timings {
    /// Timings of a generation of `steps` steps that took `generate_s` seconds.
    pub fn of(generate_s: f64, steps: usize) -> Self {
        Timings {
            load_s: None,
            generate_s,
            per_step_s: generate_s / steps.max(1) as f64,
            total_s: None,
        }
    }
}

/// The record of one generated image: what was asked, what was used, where and how fast. The
/// CLI writes it as the JSON sidecar of each PNG; the page keeps it with each gallery image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// The crate version that made the image.
    pub synfer_version: String,
    /// The request, as given.
    pub request: GenerateRequest,
    /// The prompt actually encoded.
    pub prompt_used: String,
    /// The target expression.
    pub expression: Option<Expression>,
    /// The AU vector used (every unit of the adapter's set), when the model has an adapter.
    pub aus: Option<BTreeMap<String, f32>>,
    /// The AU branch weight used.
    pub au_scale: Option<f64>,
    /// The scheduler that ran (`ddim`, `dpm++`, …; absent in records made before it was kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduler: Option<String>,
    /// This image's noise seed (`None`: latents were supplied).
    pub seed: Option<u64>,
    /// The latents file that replaced the noise, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latents_file: Option<String>,
    /// Pixel width.
    pub width: usize,
    /// Pixel height.
    pub height: usize,
    /// Where the model came from.
    pub model: String,
    /// The compute device (absent in synthesis output, whose bytes must not depend on the
    /// machine).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// Seconds spent (absent where the bytes must not depend on the run: synthesis output).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timings: Option<Timings>,
    /// Non-fatal notes of the generation.
    pub warnings: Vec<String>,
}

impl GenerateOutput {
    /// One record per image of this output of `request`, made by `model` on `device`.
    pub fn records(
        &self,
        request: &GenerateRequest,
        model: &str,
        device: Option<&str>,
        timings: Option<Timings>,
    ) -> Vec<ImageRecord> {
        let aus = self.aus.as_ref().map(|v| {
            v.au_set()
                .codes
                .iter()
                .map(|c| c.to_string())
                .zip(v.values().iter().copied())
                .collect::<BTreeMap<_, _>>()
        });
        self.seeds
            .iter()
            .map(|seed| ImageRecord {
                synfer_version: env!("CARGO_PKG_VERSION").to_string(),
                request: request.clone(),
                prompt_used: self.prompt.clone(),
                expression: request.expression,
                aus: aus.clone(),
                au_scale: self.au_scale,
                scheduler: Some(scheduler_short_name(self.scheduler).to_string()),
                seed: *seed,
                latents_file: None,
                width: self.width,
                height: self.height,
                model: model.to_string(),
                device: device.map(str::to_string),
                timings,
                warnings: self.warnings.clone(),
            })
            .collect()
    }
}

/// The PNG paths of `n` images for the output path `out`: `out` itself for one image, else
/// `<stem>-<i>.png` beside it.
#[cfg(not(target_family = "wasm"))]
pub fn image_paths(out: &std::path::Path, n: usize) -> Vec<std::path::PathBuf> {
    if n == 1 {
        return vec![out.to_path_buf()];
    }
    let stem = out.file_stem().and_then(|s| s.to_str()).unwrap_or("image");
    (0..n)
        .map(|i| out.with_file_name(format!("{stem}-{i}.png")))
        .collect()
}

#[cfg(not(target_family = "wasm"))]
impl GenerateOutput {
    /// Writes image `i` to `paths[i]` as a PNG carrying `records[i]` (see
    /// [`ImageRecord::png`]) and the record beside it as JSON (`.json`), each atomically.
    pub fn save(&self, paths: &[std::path::PathBuf], records: &[ImageRecord]) -> crate::Result<()> {
        for ((path, pixels), record) in paths.iter().zip(&self.images).zip(records) {
            let png = record.png(pixels, &path.display().to_string())?;
            crate::image::write_encoded(path, &png)?;
            let json = serde_json::to_vec_pretty(record)
                .map_err(|e| crate::Error::json(path.display().to_string(), e))?;
            crate::files::write_atomic(&path.with_extension("json"), &json)?;
        }
        Ok(())
    }
}
