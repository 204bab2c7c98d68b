//! `synfer train`: training stages with checkpoints, exact resume and a loss log.

use std::path::PathBuf;

use indicatif::{ProgressBar, ProgressStyle};
use synfer::device::{self, DeviceChoice};
use synfer::train::adamw::AdamWConfig;
use synfer::train::data::Dataset;
use synfer::train::run::{LoopConfig, RunDir};
use synfer::train::vae::{TINY_VAE_CONFIG, VaeStage, init_vae, train_vae};
use synfer::vae::VaeConfig;
use synfer::{Error, Result};

#[derive(clap::Subcommand)]
pub enum TrainCommand {
    /// Stage 1: the AutoencoderKL on a FEText-style folder (run again to resume).
    Vae(VaeArgs),
}

#[derive(clap::Args)]
pub struct CommonArgs {
    /// FEText-style folder (images + metadata.jsonl).
    #[arg(long)]
    data: PathBuf,
    /// Run folder (checkpoints, loss.jsonl, loss.png); an existing one is resumed.
    #[arg(long)]
    run: PathBuf,
    /// Total optimizer steps.
    #[arg(long)]
    steps: u64,
    /// Images per step.
    #[arg(long, default_value_t = 16)]
    batch: usize,
    /// Peak learning rate.
    #[arg(long, default_value_t = 2e-4)]
    lr: f64,
    /// Warm-up steps.
    #[arg(long, default_value_t = 200)]
    warmup: u64,
    /// EMA decay of the weights (0: off).
    #[arg(long, default_value_t = 0.999)]
    ema: f64,
    /// Steps between checkpoints.
    #[arg(long, default_value_t = 200)]
    checkpoint_every: u64,
    /// Seed of the initial weights, batches and noise.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Compute device (auto: a hardware GPU if present, else flex CPU).
    #[arg(long, value_enum, default_value = "auto")]
    device: DeviceChoice,
}

#[derive(clap::Args)]
pub struct VaeArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// Weight of the KL term.
    #[arg(long, default_value_t = 1e-5)]
    kl_weight: f64,
}

pub fn run(cmd: TrainCommand) -> Result<()> {
    match cmd {
        TrainCommand::Vae(args) => vae(args),
    }
}

fn loop_config(c: &CommonArgs) -> Result<LoopConfig> {
    if c.checkpoint_every == 0 || c.batch == 0 {
        return Err(Error::request(
            "train",
            "--checkpoint-every and --batch must be at least 1",
        ));
    }
    Ok(LoopConfig {
        steps: c.steps,
        lr: c.lr,
        warmup: c.warmup.max(1),
        ema_decay: c.ema,
        checkpoint_every: c.checkpoint_every,
        adamw: AdamWConfig::default(),
    })
}

fn progress(total: u64, done: u64) -> ProgressBar {
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} step {pos}/{len} [{bar:30}] {elapsed_precise} eta {eta} {msg}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar.set_position(done);
    bar
}

fn vae(args: VaeArgs) -> Result<()> {
    let c = &args.common;
    let cfg = loop_config(c)?;
    let selected = device::select(c.device)?;
    let train_device = selected.device.clone().autodiff();
    let data = Dataset::load(&c.data)?;
    let run = RunDir::open(&c.run)?;
    let vae_cfg = VaeConfig::from_json(TINY_VAE_CONFIG.as_bytes(), "synfer-tiny vae config")?;
    let model = init_vae(&vae_cfg, c.seed, &train_device)?;
    let stage = VaeStage {
        batch: c.batch,
        kl_weight: args.kl_weight,
        seed: c.seed,
    };
    let record = serde_json::json!({
        "stage": "vae", "data": c.data, "images": data.len(), "loop": cfg, "vae": stage,
        "model_config": serde_json::from_str::<serde_json::Value>(TINY_VAE_CONFIG).ok(),
        "device": selected.description,
    });
    let path = c.run.join("config.json");
    std::fs::write(
        &path,
        serde_json::to_vec_pretty(&record).unwrap_or_default(),
    )
    .map_err(|e| Error::io(&path, e))?;
    let start = run.saved_step()?.unwrap_or(0);
    eprintln!(
        "vae: {} images, {} steps (from {start}) on {}",
        data.len(),
        c.steps,
        selected.description
    );
    let bar = progress(c.steps, start);
    train_vae(&run, &data, model, &stage, &cfg, &train_device, |e| {
        bar.set_position(e.step);
        bar.set_message(format!(
            "loss {:.4} |g| {:.2} {:.2}s/step",
            e.loss, e.grad_norm, e.seconds
        ));
    })?;
    bar.finish();
    Ok(())
}
