//! The training loop shared by every stage: AdamW steps, EMA, checkpoints with exact resume,
//! and a loss log (`loss.jsonl`) with its plot (`loss.png`).
//!
//! A run folder holds `checkpoint/` (`params`, `optimizer` and `ema` safetensors in f32 plus
//! `state.json`). A checkpoint is written to `checkpoint.tmp/` and swapped in by renames, so a
//! kill at any moment leaves one complete checkpoint. Because batches and noise depend only on
//! `(seed, step)` ([`crate::rng`], [`super::batches`]), a resumed run continues bit for bit.

use std::io::Write;
use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::optim::GradientsParams;
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use super::adamw::{AdamW, AdamWConfig};
use super::ema::Ema;
use super::params;
use super::tensors::{self, Precision};
use crate::error::{Error, Result};
use crate::files::{read_jsonl, to_jsonl, write_atomic};
use crate::plot::Canvas;

/// Loop settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoopConfig {
    /// Total optimizer steps.
    pub steps: u64,
    /// Peak learning rate.
    pub lr: f64,
    /// Linear warm-up steps.
    pub warmup: u64,
    /// EMA decay (0: no EMA); warmed up as in diffusers' `EMAModel`, see [`LoopConfig::ema_decay_at`].
    pub ema_decay: f64,
    /// Steps between checkpoints.
    pub checkpoint_every: u64,
    /// Optimizer.
    pub adamw: AdamWConfig,
    /// After the warm-up, decay the learning rate to 0 along a half cosine (else constant).
    #[serde(default)]
    pub cosine: bool,
}

impl LoopConfig {
    /// Checks the values (`checkpoint_every` at least 1, a finite non-negative learning rate,
    /// an EMA decay in `[0, 1)`).
    pub fn validate(&self) -> Result<()> {
        if self.checkpoint_every == 0 {
            return Err(Error::request("checkpoint_every", "must be at least 1"));
        }
        if !self.lr.is_finite() || self.lr < 0.0 {
            return Err(Error::request(
                "lr",
                format!("{} must be finite and ≥ 0", self.lr),
            ));
        }
        if !(0.0..1.0).contains(&self.ema_decay) {
            return Err(Error::request(
                "ema",
                format!("{} is not in [0, 1)", self.ema_decay),
            ));
        }
        Ok(())
    }

    /// EMA decay after `step` (0-based) updates: `min(decay, (1 + step) / (10 + step))`, so
    /// that early weights do not linger in the average of a short run.
    pub fn ema_decay_at(&self, step: u64) -> f64 {
        self.ema_decay.min((1 + step) as f64 / (10 + step) as f64)
    }

    /// Learning rate at `step` (0-based): linear warm-up, then constant or, with `cosine`,
    /// `lr · ½(1 + cos(π · (step − warmup) / (steps − warmup)))`.
    pub fn lr_at(&self, step: u64) -> f64 {
        if step < self.warmup {
            self.lr * (step + 1) as f64 / self.warmup as f64
        } else if self.cosine && self.steps > self.warmup {
            let t = (step - self.warmup) as f64 / (self.steps - self.warmup) as f64;
            self.lr * 0.5 * (1.0 + (std::f64::consts::PI * t.min(1.0)).cos())
        } else {
            self.lr
        }
    }
}

/// One line of `loss.jsonl`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LossEntry {
    /// Step (1-based: after this many updates).
    pub step: u64,
    /// Loss of the step's batch.
    pub loss: f64,
    /// Learning rate used.
    pub lr: f64,
    /// Gradient norm before clipping.
    pub grad_norm: f64,
    /// Wall seconds of the step.
    pub seconds: f64,
}

/// `checkpoint/state.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct State {
    step: u64,
    adamw: AdamWConfig,
}

/// A run folder.
#[derive(Debug, Clone)]
pub struct RunDir {
    /// Its path.
    pub root: PathBuf,
}

impl RunDir {
    /// Creates (if needed) and opens `root`.
    pub fn open(root: &Path) -> Result<Self> {
        std::fs::create_dir_all(root).map_err(|e| Error::io(root, e))?;
        Ok(RunDir {
            root: root.to_path_buf(),
        })
    }

    fn checkpoint(&self) -> PathBuf {
        self.root.join("checkpoint")
    }

    /// The step of the saved checkpoint, if any.
    pub fn saved_step(&self) -> Result<Option<u64>> {
        Ok(self
            .read_state(&self.complete_checkpoint())?
            .map(|s| s.step))
    }

    /// The folder holding a complete checkpoint: `checkpoint/`, or `checkpoint.tmp/` when a
    /// kill hit between the two renames of a swap.
    fn complete_checkpoint(&self) -> PathBuf {
        let main = self.checkpoint();
        if main.join("state.json").exists() {
            main
        } else {
            self.root.join("checkpoint.tmp")
        }
    }

    fn read_state(&self, dir: &Path) -> Result<Option<State>> {
        let path = dir.join("state.json");
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| Error::json(path.display().to_string(), e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(&path, e)),
        }
    }

    fn save_checkpoint<M: Module>(&self, model: &M, opt: &AdamW, ema: &Ema) -> Result<()> {
        let tmp = self.root.join("checkpoint.tmp");
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
        }
        std::fs::create_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
        tensors::save(
            &tmp.join("params.safetensors"),
            &params::read(model),
            Precision::F32,
        )?;
        tensors::save(
            &tmp.join("optimizer.safetensors"),
            &opt.state_to_host(),
            Precision::F32,
        )?;
        tensors::save(&tmp.join("ema.safetensors"), &ema.to_host(), Precision::F32)?;
        let state = State {
            step: opt.step,
            adamw: opt.config,
        };
        let json = serde_json::to_vec_pretty(&state).map_err(|e| Error::json("state.json", e))?;
        write_atomic(&tmp.join("state.json"), &json)?;
        let main = self.checkpoint();
        let old = self.root.join("checkpoint.old");
        if main.exists() {
            if old.exists() {
                std::fs::remove_dir_all(&old).map_err(|e| Error::io(&old, e))?;
            }
            std::fs::rename(&main, &old).map_err(|e| Error::io(&main, e))?;
        }
        std::fs::rename(&tmp, &main).map_err(|e| Error::io(&main, e))?;
        if old.exists() {
            std::fs::remove_dir_all(&old).map_err(|e| Error::io(&old, e))?;
        }
        Ok(())
    }

    /// Log entries (after a resume, only those up to the checkpoint are kept).
    pub(crate) fn log_entries(&self) -> Result<Vec<LossEntry>> {
        read_jsonl(&self.root.join("loss.jsonl"))
    }

    fn rewrite_log(&self, entries: &[LossEntry]) -> Result<()> {
        let text = to_jsonl(entries, "loss.jsonl")?;
        write_atomic(&self.root.join("loss.jsonl"), text.as_bytes())
    }

    fn append_log(&self, entries: &[LossEntry]) -> Result<()> {
        let path = self.root.join("loss.jsonl");
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        f.write_all(to_jsonl(entries, "loss.jsonl")?.as_bytes())
            .map_err(|e| Error::io(&path, e))
    }

    /// Draws `loss.png`: the loss per step (light) and its running mean over 100 steps, log
    /// scale.
    pub(crate) fn plot_loss(&self) -> Result<()> {
        let entries = self.log_entries()?;
        plot_losses(&entries).save(&self.root.join("loss.png"))
    }
}

/// A loss curve (log scale) with its 100-step running mean.
pub(crate) fn plot_losses(entries: &[LossEntry]) -> Canvas {
    let (mut c, [left, top, pw, ph]) = plot_frame();
    let finite: Vec<&LossEntry> = entries
        .iter()
        .filter(|e| e.loss > 0.0 && e.loss.is_finite())
        .collect();
    if finite.is_empty() {
        c.text(80, 150, "NO STEPS YET", 2, [0, 0, 0]);
        return c;
    }
    let lo = finite
        .iter()
        .map(|e| e.loss.ln())
        .fold(f64::INFINITY, f64::min);
    let hi = finite
        .iter()
        .map(|e| e.loss.ln())
        .fold(f64::NEG_INFINITY, f64::max)
        .max(lo + 1e-6);
    let last = finite.last().map_or(1, |e| e.step).max(1) as f32;
    let at = |step: u64, loss: f64| {
        (
            left + pw * step as f32 / last,
            top + ph * (1.0 - ((loss.ln() - lo) / (hi - lo)) as f32),
        )
    };
    for e in &finite {
        let (x, y) = at(e.step, e.loss);
        c.set(x as usize, y as usize, [170, 190, 230]);
    }
    let mut prev = None;
    let mut window = std::collections::VecDeque::new();
    let mut sum = 0.0;
    for e in &finite {
        window.push_back(e.loss);
        sum += e.loss;
        if window.len() > 100 {
            sum -= window.pop_front().unwrap_or(0.0);
        }
        let p = at(e.step, sum / window.len() as f64);
        if let Some(q) = prev {
            c.line(q, p, [20, 60, 160]);
        }
        prev = Some(p);
    }
    c.text(
        8,
        8,
        &format!("LOSS (LOG SCALE) {:.4} .. {:.4}", lo.exp(), hi.exp()),
        1,
        [0, 0, 0],
    );
    c.text(left as usize, (top + ph + 10.0) as usize, "0", 1, [0, 0, 0]);
    step_axis_labels(&mut c, [left, top, pw, ph], last);
    c
}

/// A 640×360 canvas with the axes of its plot area, and the area `[left, top, width, height]`.
pub fn plot_frame() -> (Canvas, [f32; 4]) {
    let (left, top, pw, ph) = (60.0f32, 30.0f32, 560.0f32, 290.0f32);
    let mut c = Canvas::new(640, 360);
    c.rect(
        left as usize,
        (top + ph) as usize,
        pw as usize,
        1,
        [0, 0, 0],
    );
    c.rect(left as usize, top as usize, 1, ph as usize, [0, 0, 0]);
    (c, [left, top, pw, ph])
}

/// The last step and "STEP" under a plot area `[left, top, width, height]`.
pub fn step_axis_labels(c: &mut Canvas, area: [f32; 4], last: f32) {
    let [left, top, pw, ph] = area;
    c.text(
        (left + pw - 40.0) as usize,
        (top + ph + 10.0) as usize,
        &format!("{last}"),
        1,
        [0, 0, 0],
    );
    c.text(
        ((left + pw) / 2.0) as usize,
        (top + ph + 22.0) as usize,
        "STEP",
        1,
        [0, 0, 0],
    );
}

/// Runs (or resumes) `cfg.steps` optimizer steps of `loss_of(model, step)` on `model`.
/// `on_step` sees each log entry; returns the trained model and its EMA.
pub fn train<M: Module>(
    run: &RunDir,
    model: M,
    device: &Device,
    cfg: &LoopConfig,
    loss_of: impl FnMut(&M, u64) -> Result<Tensor<1>>,
    on_step: impl FnMut(&LossEntry),
) -> Result<(M, Ema)> {
    train_with_hook(run, model, device, cfg, loss_of, on_step, |_, _, _| Ok(()))
}

/// [`train`] with `on_checkpoint(model, ema, step)` called after each checkpoint is saved
/// (validation, extra logs).
pub fn train_with_hook<M: Module>(
    run: &RunDir,
    mut model: M,
    device: &Device,
    cfg: &LoopConfig,
    mut loss_of: impl FnMut(&M, u64) -> Result<Tensor<1>>,
    mut on_step: impl FnMut(&LossEntry),
    mut on_checkpoint: impl FnMut(&M, &Ema, u64) -> Result<()>,
) -> Result<(M, Ema)> {
    cfg.validate()?;
    let dir = run.complete_checkpoint();
    let (mut opt, mut ema) = match run.read_state(&dir)? {
        Some(state) => {
            let plain = device.clone().inner();
            let file = dir.join("params.safetensors");
            model = params::write(model, &tensors::load(&file)?, &file.display().to_string())?;
            let file = dir.join("optimizer.safetensors");
            let opt = AdamW::from_host(
                state.adamw,
                state.step,
                &tensors::load(&file)?,
                &plain,
                &file.display().to_string(),
            )?;
            let ema = Ema::from_host(&tensors::load(&dir.join("ema.safetensors"))?, &plain);
            let kept: Vec<LossEntry> = run
                .log_entries()?
                .into_iter()
                .filter(|e| e.step <= state.step)
                .collect();
            run.rewrite_log(&kept)?;
            (opt, ema)
        }
        None => {
            run.rewrite_log(&[])?;
            (AdamW::new(cfg.adamw), Ema::new())
        }
    };
    let mut pending = Vec::new();
    while opt.step < cfg.steps {
        let step = opt.step;
        let start = std::time::Instant::now();
        let loss = loss_of(&model, step)?;
        let value = f64::from(loss.clone().into_scalar::<f32>());
        if !value.is_finite() {
            return Err(Error::Device(format!(
                "training diverged at step {step}: loss {value}"
            )));
        }
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        let lr = cfg.lr_at(step);
        let (next, report) = opt.step(lr, model, grads);
        model = next;
        if cfg.ema_decay > 0.0 {
            ema.update(&model, cfg.ema_decay_at(step));
        }
        let entry = LossEntry {
            step: opt.step,
            loss: value,
            lr,
            grad_norm: report.grad_norm,
            seconds: start.elapsed().as_secs_f64(),
        };
        on_step(&entry);
        pending.push(entry);
        if opt.step % cfg.checkpoint_every == 0 || opt.step == cfg.steps {
            run.save_checkpoint(&model, &opt, &ema)?;
            run.append_log(&pending)?;
            pending.clear();
            run.plot_loss()?;
            on_checkpoint(&model, &ema, opt.step)?;
        }
    }
    Ok((model, ema))
}
