//! `synfer train`: training stages with checkpoints, exact resume and a loss log.

use std::path::PathBuf;

use indicatif::{ProgressBar, ProgressStyle};
use synfer::device::{self, DeviceChoice};
use synfer::pipeline::source::DirSource;
use synfer::train::adamw::AdamWConfig;
use synfer::train::data::Dataset;
use synfer::train::diffusion::{
    Denoiser, DiffusionStage, LatentCache, ModelFiles, RunWeights, Trainable, export_folder,
    load_trained, train_diffusion,
};
use synfer::train::run::{LoopConfig, RunDir};
use synfer::train::vae::{TINY_VAE_CONFIG, VaeStage, init_vae, train_vae};
use synfer::train::{params, tensors};
use synfer::vae::{AutoencoderKL, VaeConfig};
use synfer::{Error, Pipeline, Result};

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

#[derive(clap::ValueEnum, Clone, Copy)]
enum WhichWeights {
    /// The run's EMA average.
    Ema,
    /// The raw parameters of its last checkpoint.
    Raw,
}

impl From<WhichWeights> for RunWeights {
    fn from(w: WhichWeights) -> Self {
        match w {
            WhichWeights::Ema => RunWeights::Ema,
            WhichWeights::Raw => RunWeights::Raw,
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
    vae_weights: WhichWeights,
    /// What to update.
    #[arg(long, value_enum, default_value = "all")]
    train: TrainWhat,
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
    vae_weights: WhichWeights,
    /// CLIP BPE tokenizer files for a from-scratch model.
    #[arg(long, default_value = TOKENIZER_DIR)]
    tokenizer: PathBuf,
    /// Output folder (diffusers layout).
    #[arg(long)]
    out: PathBuf,
    /// Which weights of `--run` to export.
    #[arg(long, value_enum, default_value = "ema")]
    weights: WhichWeights,
}

const TOKENIZER_DIR: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/sd1-tiny/tokenizer"
);

#[derive(clap::ValueEnum, Clone, Copy)]
enum TrainWhat {
    /// Every parameter.
    All,
    /// The AU adapter only.
    Adapter,
    /// LoRA updates of the UNet's attention projections (rank --lora-rank) plus the AU adapter.
    Lora,
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
        TrainCommand::Diffusion(args) => diffusion(args),
        TrainCommand::Export(args) => export(args),
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
        cosine: false,
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
    write_record(&c.run, &record)?;
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

fn write_record(run: &std::path::Path, record: &serde_json::Value) -> Result<()> {
    let path = run.join("config.json");
    std::fs::write(&path, serde_json::to_vec_pretty(record).unwrap_or_default())
        .map_err(|e| Error::io(&path, e))
}

/// The model files, VAE and denoiser a diffusion run starts from.
fn starting_point(
    from: &BaseArgs,
    vae_weights: WhichWeights,
    tokenizer: &std::path::Path,
    seed: u64,
    device: &burn::tensor::Device,
) -> Result<(ModelFiles, AutoencoderKL, Denoiser)> {
    if let Some(base) = &from.base {
        let pipe = Pipeline::load(base, device)?;
        let files = ModelFiles::from_folder(&DirSource::new(base)?)?;
        let vae = pipe.vae.clone();
        let denoiser = Denoiser::from_pipeline(pipe, &files, seed)?;
        return Ok((files, vae, denoiser));
    }
    let vae_run = from
        .vae_run
        .as_ref()
        .expect("clap requires --vae-run or --base");
    let vae_cfg = VaeConfig::from_json(TINY_VAE_CONFIG.as_bytes(), "synfer-tiny vae config")?;
    let vae = load_trained(init_vae(&vae_cfg, 0, device)?, vae_run, vae_weights.into())?;
    let files = ModelFiles::tiny(tokenizer, TINY_VAE_CONFIG)?;
    let denoiser = Denoiser::init(&files, seed, device)?;
    Ok((files, vae, denoiser))
}

/// The run's latent cache (`latents.safetensors`), encoded on first use.
fn latent_cache(
    run: &std::path::Path,
    data: &Dataset,
    vae: &AutoencoderKL,
    device: &burn::tensor::Device,
) -> Result<LatentCache> {
    let path = run.join("latents.safetensors");
    if path.exists() {
        let t = tensors::load(&path)?;
        let get = |k: &str| {
            t.get(k).cloned().ok_or_else(|| Error::MissingKey {
                file: path.display().to_string(),
                key: k.into(),
            })
        };
        let (mean, std) = (get("mean")?, get("std")?);
        let shape = [mean.shape[1], mean.shape[2], mean.shape[3]];
        return Ok(LatentCache {
            shape,
            mean: mean.data,
            std: std.data,
        });
    }
    eprintln!("encoding {} images (and mirrors) with the VAE", data.len());
    let cache = LatentCache::encode(data, vae, 32, device);
    let shape = vec![
        2 * data.len(),
        cache.shape[0],
        cache.shape[1],
        cache.shape[2],
    ];
    let host = |data: &Vec<f32>| synfer::pipeline::HostTensor {
        shape: shape.clone(),
        data: data.clone(),
    };
    let map = std::collections::BTreeMap::from([
        ("mean".to_string(), host(&cache.mean)),
        ("std".to_string(), host(&cache.std)),
    ]);
    tensors::save(&path, &map, tensors::Precision::F32)?;
    Ok(cache)
}

fn diffusion(args: DiffusionArgs) -> Result<()> {
    let c = &args.common;
    let cfg = loop_config(c)?;
    for (name, p) in [
        ("--caption-dropout", args.caption_dropout),
        ("--au-dropout", args.au_dropout),
    ] {
        if !(0.0..=1.0).contains(&p) {
            return Err(Error::request(name, format!("{p} is not a probability")));
        }
    }
    let selected = device::select(c.device)?;
    let plain = selected.device.clone();
    let data = Dataset::load(&c.data)?;
    let run = RunDir::open(&c.run)?;
    let (files, vae, denoiser) = starting_point(
        &args.from,
        args.vae_weights,
        &args.tokenizer,
        c.seed,
        &plain,
    )?;
    let cache = latent_cache(&c.run, &data, &vae, &plain)?;
    let stage = DiffusionStage {
        batch: c.batch,
        seed: c.seed,
        caption_dropout: args.caption_dropout,
        au_dropout: args.au_dropout,
        scaling_factor: match &args.from.base {
            Some(_) => files.vae()?.scaling_factor,
            None => cache.scaling_factor(),
        },
        trainable: match args.train {
            TrainWhat::All => Trainable::All,
            TrainWhat::Adapter => Trainable::Adapter,
            TrainWhat::Lora => Trainable::Lora,
        },
        min_snr_gamma: (args.min_snr_gamma > 0.0).then_some(args.min_snr_gamma),
        lora_rank: matches!(args.train, TrainWhat::Lora).then_some(args.lora_rank),
    };
    if stage.lora_rank == Some(0) {
        return Err(Error::request("--lora-rank", "must be at least 1"));
    }
    let record = serde_json::json!({
        "stage": "diffusion", "data": c.data, "images": data.len(), "loop": cfg,
        "diffusion": stage, "vae_run": args.from.vae_run, "base": args.from.base,
        "device": selected.description,
    });
    write_record(&c.run, &record)?;
    let train_device = plain.clone().autodiff();
    let mut denoiser = params::write(
        Denoiser::init(&files, 0, &train_device)?,
        &params::read(&denoiser),
        "starting weights",
    )?;
    if let Some(rank) = stage.lora_rank {
        denoiser.attach_lora(rank, c.seed, &train_device);
    }
    let tokenizer = files.tokenizer()?;
    let start = run.saved_step()?.unwrap_or(0);
    eprintln!(
        "diffusion: {} images, latents {:?}, scaling factor {:.4}, {} steps (from {start}) on {}",
        data.len(),
        cache.shape,
        stage.scaling_factor,
        c.steps,
        selected.description
    );
    let bar = progress(c.steps, start);
    train_diffusion(
        &run,
        &data,
        &cache,
        &tokenizer,
        denoiser,
        &stage,
        &cfg,
        &train_device,
        |e| {
            bar.set_position(e.step);
            bar.set_message(format!(
                "loss {:.4} |g| {:.2} {:.2}s/step",
                e.loss, e.grad_norm, e.seconds
            ));
        },
    )?;
    bar.finish();
    Ok(())
}

fn export(args: ExportArgs) -> Result<()> {
    let device = burn::tensor::Device::flex();
    let path = args.run.join("config.json");
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).map_err(|e| Error::io(&path, e))?)
            .map_err(|e| Error::json(path.display().to_string(), e))?;
    let stage: DiffusionStage = serde_json::from_value(record["diffusion"].clone())
        .map_err(|e| Error::json(path.display().to_string(), e))?;
    let (mut files, vae, denoiser) =
        starting_point(&args.from, args.vae_weights, &args.tokenizer, 0, &device)?;
    if args.from.vae_run.is_some() {
        let mut cfg: serde_json::Value = serde_json::from_str(TINY_VAE_CONFIG)
            .map_err(|e| Error::json("synfer-tiny vae config", e))?;
        cfg["scaling_factor"] = serde_json::json!(stage.scaling_factor);
        files.files.insert(
            "vae/config.json",
            serde_json::to_string_pretty(&cfg)
                .unwrap_or_default()
                .into_bytes(),
        );
    }
    let mut denoiser = denoiser;
    if let Some(rank) = stage.lora_rank {
        denoiser.attach_lora(rank, 0, &device);
    }
    let denoiser = load_trained(denoiser, &args.run, args.weights.into())?;
    export_folder(
        &args.out,
        &files,
        &params::read(&denoiser),
        &params::read(&vae),
    )?;
    eprintln!("wrote {}", args.out.display());
    Ok(())
}
