//! `synfer fer`: train expression classifiers on synthetic and real sets, evaluate them,
//! predict with them.

use std::path::PathBuf;

use synfer::device::{self, DeviceChoice};
use synfer::expression::class_names;
use synfer::face::analyzer::FaceAnalyzer;
use synfer::fer::augment::Augment;
use synfer::fer::session::{DataSpec, EvalOptions, TrainSession, evaluate_dir};
use synfer::fer::train::FerStage;
use synfer::fer::{Arch, FerClassifier, FerConfig};
use synfer::train::adamw::AdamWConfig;
use synfer::train::run::{LoopConfig, RunDir};
use synfer::{Error, Result};

#[derive(clap::Subcommand)]
pub enum FerCommand {
    /// Train an expression classifier (ResNet-18 or mini-Xception) on synthetic and/or real
    /// sets; run again with the same arguments to resume.
    Train(Box<TrainArgs>),
    /// Accuracy, per-class accuracy, macro-F1 and confusion matrix of a model on a labelled set
    /// (eval.json + confusion.png).
    Eval(EvalArgs),
    /// Classify the faces in images (JSON Lines with --json).
    Predict(PredictArgs),
}

#[derive(clap::Args)]
pub struct TrainArgs {
    /// Training sets: synfer output (metadata.jsonl), FER2013 CSV, RAF-DB basic, AffectNet CSV
    /// or ImageFolder (see `synfer::dataset`).
    #[arg(long, required = true, num_args = 1..)]
    data: Vec<PathBuf>,
    /// Model folder (also the run folder: checkpoints, logs, curves); an existing run resumes.
    #[arg(long)]
    out: PathBuf,
    /// Split of the training sets to use where a layout has splits (`all`: every image).
    #[arg(long, default_value = "train")]
    split: String,
    /// Validation sets (evaluated at every checkpoint); default: the items of `--data` that are
    /// in the `--val-split` split, when there are any.
    #[arg(long, num_args = 1..)]
    val: Vec<PathBuf>,
    /// Split of the validation sets.
    #[arg(long, default_value = "val")]
    val_split: String,
    /// Architecture: mini-xception or resnet18.
    #[arg(long, default_value = "mini-xception")]
    arch: Arch,
    /// Base width (default: the original, 8 for mini-Xception and 64 for ResNet-18).
    #[arg(long)]
    width: Option<usize>,
    /// Input side in pixels.
    #[arg(long, default_value_t = 64)]
    input_size: usize,
    /// Grey input (1 channel) instead of RGB.
    #[arg(long)]
    grey: bool,
    /// Standardise each input image (zero mean, unit deviation) instead of scaling to [−1, 1].
    #[arg(long)]
    standardize: bool,
    /// Eight classes (with contempt) instead of seven.
    #[arg(long)]
    contempt: bool,
    /// Optimizer steps.
    #[arg(long, default_value_t = 2000)]
    steps: u64,
    /// Peak learning rate (AdamW; cosine decay after the warm-up).
    #[arg(long, default_value_t = 2e-3)]
    lr: f64,
    /// Warm-up steps.
    #[arg(long, default_value_t = 100)]
    warmup: u64,
    /// AdamW weight decay.
    #[arg(long, default_value_t = 5e-2)]
    weight_decay: f64,
    /// EMA decay of the weights (0: off; the model keeps the EMA weights).
    #[arg(long, default_value_t = 0.995)]
    ema: f64,
    /// Steps between checkpoints (and validation).
    #[arg(long, default_value_t = 200)]
    checkpoint_every: u64,
    /// Leave out synthetic images whose pseudo-label has a lower ensemble probability
    /// (`confidence` in synfer's metadata.jsonl; real sets are not filtered).
    #[arg(long, default_value_t = 0.0)]
    min_confidence: f32,
    /// Leave out synthetic images on which the pseudo-labelling classifiers disagree.
    #[arg(long)]
    consensus: bool,
    /// Augmentation off.
    #[arg(long)]
    no_augment: bool,
    #[command(flatten)]
    stage: FerStage,
    /// Compute device.
    #[arg(long, value_enum, default_value = "auto")]
    device: DeviceChoice,
}

#[derive(clap::Args)]
pub struct EvalArgs {
    /// Model folder (`fer.json` + `model.safetensors`).
    #[arg(long)]
    model: PathBuf,
    /// Labelled sets (any layout `fer train` reads).
    #[arg(long, required = true, num_args = 1..)]
    data: Vec<PathBuf>,
    /// Split to evaluate where a layout has splits (`all`: every image).
    #[arg(long, default_value = "test")]
    split: String,
    #[command(flatten)]
    options: EvalOptions,
    /// Output folder for eval.json and confusion.png (default: MODEL/eval).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Compute device.
    #[arg(long, value_enum, default_value = "auto")]
    device: DeviceChoice,
}

#[derive(clap::Args)]
pub struct PredictArgs {
    /// Model folder.
    #[arg(long)]
    model: PathBuf,
    /// Print JSON Lines `{"file", "label", "probs", "bbox"}` (errors as `{"file", "error"}`).
    #[arg(long)]
    json: bool,
    /// Treat each image as one face crop (no detection).
    #[arg(long)]
    assume_cropped: bool,
    /// Compute device.
    #[arg(long, value_enum, default_value = "auto")]
    device: DeviceChoice,
    /// Image files or directories.
    #[arg(required = true)]
    paths: Vec<PathBuf>,
}

pub fn run(cmd: FerCommand) -> Result<()> {
    match cmd {
        FerCommand::Train(args) => train(*args),
        FerCommand::Eval(args) => eval(args),
        FerCommand::Predict(args) => predict(args),
    }
}

fn train(a: TrainArgs) -> Result<()> {
    if a.steps == 0 {
        return Err(Error::request("steps", "must be at least 1"));
    }
    let mut stage = a.stage;
    stage.model = FerConfig {
        arch: a.arch,
        input_size: a.input_size,
        channels: if a.grey { 1 } else { 3 },
        width: a.width.unwrap_or(a.arch.default_width()),
        classes: class_names(a.contempt),
        standardize: a.standardize,
    };
    if a.no_augment {
        stage.augment = Augment::NONE;
    }
    stage.validate()?;
    let session = TrainSession {
        data: DataSpec {
            paths: a.data,
            split: a.split,
        },
        val: DataSpec {
            paths: a.val,
            split: a.val_split,
        },
        min_confidence: a.min_confidence,
        consensus: a.consensus,
        stage,
        cfg: LoopConfig {
            steps: a.steps,
            lr: a.lr,
            warmup: a.warmup.max(1),
            ema_decay: a.ema,
            checkpoint_every: a.checkpoint_every,
            adamw: AdamWConfig {
                weight_decay: a.weight_decay,
                ..AdamWConfig::default()
            },
            cosine: true,
        },
    };
    let run = RunDir::open(&a.out)?;
    session.check_resume(&run)?;
    let spinner = synfer::progress::spinner("decoding images");
    let (train, val) = session.decode()?;
    spinner.finish_and_clear();
    eprintln!("training: {}", train.summary());
    if let Some(v) = &val {
        eprintln!("validation: {}", v.summary());
    }
    let selected = device::select(a.device)?;
    eprintln!(
        "fer train: {} {} steps (from {}) × {} on {}",
        session.stage.model.arch.name(),
        a.steps,
        run.saved_step()?.unwrap_or(0),
        session.stage.batch,
        selected.description
    );
    let bar = synfer::progress::bar(a.steps, "step");
    bar.set_position(run.saved_step()?.unwrap_or(0));
    let trained = session.train(
        &a.out,
        &train,
        val.as_ref(),
        &selected.device,
        &selected.description,
        |e| {
            bar.set_position(e.step);
            bar.set_message(format!("loss {:.4} {:.2}s/step", e.loss, e.seconds));
        },
    )?;
    bar.finish();
    if let Some(m) = &trained.val {
        eprint!("{}", m.report("validation"));
    }
    eprintln!(
        "model: {} (fer.json, model.safetensors); curves: loss.png, accuracy.png",
        a.out.display()
    );
    Ok(())
}

fn eval(a: EvalArgs) -> Result<()> {
    let selected = device::select(a.device)?;
    let out = a.out.unwrap_or_else(|| a.model.join("eval"));
    let data = DataSpec {
        paths: a.data,
        split: a.split,
    };
    let (decoded, metrics) = evaluate_dir(&a.model, &data, &a.options, &out, &selected.device)?;
    eprintln!("evaluation: {}", decoded.summary());
    eprint!("{}", metrics.report("evaluation"));
    eprintln!("wrote {}/eval.json and confusion.png", out.display());
    Ok(())
}

fn predict(a: PredictArgs) -> Result<()> {
    let selected = device::select(a.device)?;
    let model = FerClassifier::load_dir(&a.model, &selected.device)?;
    let analyzer = if a.assume_cropped {
        None
    } else {
        Some(FaceAnalyzer::embedded(&selected.device)?)
    };
    let header = "file\tlabel\tconfidence\tbbox(x,y,w,h)\n";
    crate::each_file(&a.paths, a.json, header, |path, file| {
        let line = match (
            model.predict_file(analyzer.as_ref(), path, &selected.device)?,
            a.json,
        ) {
            (Some(p), true) => serde_json::to_string(&p).unwrap_or_default(),
            (Some(p), false) => p.table_row(),
            (None, true) => serde_json::json!({"file": file, "error": "no face found"}).to_string(),
            (None, false) => format!("{file}\t-\t-\tno face"),
        };
        Ok(format!("{line}\n"))
    })
}
