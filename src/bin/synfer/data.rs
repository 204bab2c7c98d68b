//! `synfer data build`: the FEText-style training set (see `synfer::facetext`).

use std::path::PathBuf;

use synfer::Result;
use synfer::dataset::metadata;
use synfer::device::{self, DeviceChoice};
use synfer::face::analyzer::FaceAnalyzer;
use synfer::facetext::audit::{audit, table};
use synfer::facetext::build::{BuildConfig, build};
use synfer::facetext::stats;

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
    #[arg(long, default_value = "1")]
    every: std::num::NonZeroUsize,
    /// Compute device.
    #[arg(long, value_enum, default_value = "auto")]
    device: DeviceChoice,
}

#[derive(clap::Args)]
pub struct BuildArgs {
    #[command(flatten)]
    config: BuildConfig,
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
    let selected = device::select(args.device)?;
    let analyzer = FaceAnalyzer::embedded(&selected.device)?;
    let records: Vec<_> = metadata::read(&args.data)?
        .into_iter()
        .step_by(args.every.get())
        .collect();
    let bar = synfer::progress::bar(records.len() as u64, "image");
    let report = audit(&analyzer, &args.data, &records, |done, _| {
        bar.set_position(done as u64)
    })?;
    bar.finish_and_clear();
    let out = args.out.unwrap_or_else(|| args.data.join("audit.json"));
    report.write(&out)?;
    crate::print(&table(&report));
    eprintln!("wrote {}", out.display());
    Ok(())
}

fn build_cmd(args: BuildArgs) -> Result<()> {
    let selected = device::select(args.device)?;
    let analyzer = FaceAnalyzer::embedded(&selected.device)?;
    let cfg = args.config;
    let bar = synfer::progress::bar(cfg.count as u64, "image");
    let records = build(&cfg, &analyzer, &selected.device, |p| {
        bar.set_position(p.written as u64);
        bar.set_message(format!(
            "rejected {} faces, {} images; {} chunks resumed",
            p.rejected_faces, p.rejected_images, p.resumed_chunks
        ));
    })?;
    bar.finish();
    let s = stats::compute(&records);
    stats::write(&s, &cfg.out)?;
    let classes: Vec<String> = s.classes.iter().map(|(k, v)| format!("{k} {v}")).collect();
    eprintln!(
        "wrote {} images to {} (classes: {})",
        records.len(),
        cfg.out.display(),
        classes.join(", ")
    );
    Ok(())
}
