//! `synfer train`: training stages with checkpoints, exact resume and a loss log.

use std::path::{Path, PathBuf};

use synfer::Result;
use synfer::device::{self, DeviceChoice};
use synfer::train::adamw::AdamWConfig;
use synfer::train::denoiser::Trainable;
use synfer::train::diffusion::{Base, DiffusionStage, RunWeights};
use synfer::train::folder::export_run;
use synfer::train::job::{DiffusionJob, Event, VaeJob};
use synfer::train::run::LoopConfig;
use synfer::train::vae::VaeStage;

#[derive(clap::Subcommand)]
pub enum TrainCommand {
    /// Stage 1: the AutoencoderKL on a FEText-style folder (run again to resume).
    Vae(VaeArgs),
    /// Stage 2: text encoder + UNet + AU adapter on VAE latents, from scratch (`--vae-run`)
    /// or fine-tuning a diffusers folder (`--base`); run again to resume.
    Diffusion(DiffusionArgs),
    /// Writes a trained model as a diffusers folder (f16) with its AU adapter.
    Export(ExportArgs),
}

/// Where the model being trained comes from.
#[derive(clap::Args)]
#[group(required = true, multiple = false)]
pub struct BaseArgs {
    /// A finished `train vae` run: train synfer-tiny's text encoder and UNet from scratch on it.
    #[arg(long)]
    vae_run: Option<PathBuf>,
    /// A diffusers folder to fine-tune (its VAE, text encoder, UNet and AU adapter; a fresh
    /// FineFace-layout adapter is attached when it has none).
    #[arg(long)]
    base: Option<PathBuf>,
}

impl BaseArgs {
    /// The library's description of the starting point.
    fn base(&self, vae_weights: RunWeights, tokenizer: &Path) -> Base {
        match (&self.base, &self.vae_run) {
            (Some(dir), _) => Base::Folder(dir.clone()),
            (None, run) => Base::VaeRun {
                run: run.clone().unwrap_or_default(),
                weights: vae_weights,
                tokenizer: tokenizer.to_path_buf(),
            },
        }
    }
}

#[derive(clap::Args)]
pub struct DiffusionArgs {
    #[command(flatten)]
    common: CommonArgs,
    #[command(flatten)]
    from: BaseArgs,
    /// Which weights of `--vae-run` to use.
    #[arg(long, value_enum, default_value = "ema")]
    vae_weights: RunWeights,
    /// What to update.
    #[arg(long, value_enum, default_value = "all")]
    train: Trainable,
    /// Min-SNR-γ weighting of the ε loss (0: plain mean).
    #[arg(long, default_value_t = 5.0)]
    min_snr_gamma: f64,
    /// Rank of the LoRA updates (`--train lora`).
    #[arg(long, default_value_t = 8)]
    lora_rank: usize,
    /// Probability of training on the empty caption.
    #[arg(long, default_value_t = 0.1)]
    caption_dropout: f64,
    /// Probability of training with all AUs zero.
    #[arg(long, default_value_t = 0.1)]
    au_dropout: f64,
    /// CLIP BPE tokenizer files (vocab.json, merges.txt) for a from-scratch model.
    #[arg(long, default_value = TOKENIZER_DIR)]
    tokenizer: PathBuf,
}

#[derive(clap::Args)]
pub struct ExportArgs {
    /// The `train diffusion` run.
    #[arg(long)]
    run: PathBuf,
    #[command(flatten)]
    from: BaseArgs,
    /// Which weights of `--vae-run` to use.
    #[arg(long, value_enum, default_value = "ema")]
    vae_weights: RunWeights,
    /// CLIP BPE tokenizer files for a from-scratch model.
    #[arg(long, default_value = TOKENIZER_DIR)]
    tokenizer: PathBuf,
    /// Output folder (diffusers layout).
    #[arg(long)]
    out: PathBuf,
    /// Which weights of `--run` to export.
    #[arg(long, value_enum, default_value = "ema")]
    weights: RunWeights,
}

const TOKENIZER_DIR: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/sd1-tiny/tokenizer"
);

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
        TrainCommand::Diffusion(args) => diffusion(args),
        TrainCommand::Export(a) => {
            let base = a.from.base(a.vae_weights, &a.tokenizer);
            export_run(&a.run, &base, a.weights, &a.out)?;
            eprintln!("wrote {}", a.out.display());
            Ok(())
        }
    }
}

fn loop_config(c: &CommonArgs) -> LoopConfig {
    LoopConfig {
        steps: c.steps,
        lr: c.lr,
        warmup: c.warmup.max(1),
        ema_decay: c.ema,
        checkpoint_every: c.checkpoint_every,
        adamw: AdamWConfig::default(),
        cosine: false,
    }
}

/// A bar that follows a training job's events.
fn follow(what: &str, steps: u64, device: &str) -> impl FnMut(Event) {
    let bar = synfer::progress::bar(steps, "step");
    let what = what.to_string();
    let device = device.to_string();
    move |event| match event {
        Event::Encoding { images } => {
            eprintln!("encoding {images} images (and mirrors) with the VAE")
        }
        Event::Start {
            images,
            from_step,
            detail,
        } => {
            let detail = if detail.is_empty() {
                detail
            } else {
                format!("{detail}, ")
            };
            eprintln!(
                "{what}: {images} images, {detail}{steps} steps (from {from_step}) on {device}"
            );
            bar.set_position(from_step);
        }
        Event::Step(e) => {
            bar.set_position(e.step);
            bar.set_message(format!(
                "loss {:.4} |g| {:.2} {:.2}s/step",
                e.loss, e.grad_norm, e.seconds
            ));
            if e.step >= steps {
                bar.finish();
            }
        }
    }
}

fn vae(args: VaeArgs) -> Result<()> {
    let c = &args.common;
    let job = VaeJob {
        data: c.data.clone(),
        run: c.run.clone(),
        stage: VaeStage {
            batch: c.batch,
            kl_weight: args.kl_weight,
            seed: c.seed,
        },
        cfg: loop_config(c),
    };
    let selected = device::select(c.device)?;
    let on_event = follow("vae", c.steps, &selected.description);
    job.run(&selected.device, &selected.description, on_event)
}

fn diffusion(args: DiffusionArgs) -> Result<()> {
    let c = &args.common;
    let job = DiffusionJob {
        data: c.data.clone(),
        run: c.run.clone(),
        base: args.from.base(args.vae_weights, &args.tokenizer),
        stage: DiffusionStage {
            batch: c.batch,
            seed: c.seed,
            caption_dropout: args.caption_dropout,
            au_dropout: args.au_dropout,
            scaling_factor: 1.0,
            trainable: args.train,
            min_snr_gamma: (args.min_snr_gamma > 0.0).then_some(args.min_snr_gamma),
            lora_rank: matches!(args.train, Trainable::Lora).then_some(args.lora_rank),
        },
        cfg: loop_config(c),
    };
    let selected = device::select(c.device)?;
    let on_event = follow("diffusion", c.steps, &selected.description);
    job.run(&selected.device, &selected.description, on_event)
}
