//! `synfer synth`: batch dataset synthesis from a plan, sharded and resumable.

use std::path::{Path, PathBuf};
use std::time::Instant;

use synfer::Pipeline;
use synfer::face::analyzer::FaceAnalyzer;
use synfer::synth::output::report;
use synfer::synth::plan::OutputFormat;
use synfer::synth::{Plan, Shard, merge, run};
use synfer::{Error, Result};

#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct SynthArgs {
    #[command(subcommand)]
    command: Option<SynthCommand>,
    /// The plan (TOML; see `synfer::synth::plan`).
    #[arg(long)]
    plan: Option<PathBuf>,
    /// Output folder.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Run shard I of N (`I/N`, 0-based): blocks of `batch` items with block mod N = I.
    #[arg(long, default_value = "0/1")]
    shard: String,
    /// Continue an interrupted run in `--out` (same plan and shard).
    #[arg(long)]
    resume: bool,
    /// Output format, replacing the plan's `format`: `folder` (ImageFolder + metadata.jsonl)
    /// or `webdataset` (`<split>-NNNNNN.tar` shards).
    #[arg(long)]
    format: Option<OutputFormat>,
    /// Items per WebDataset tar, replacing the plan's `shard_size` (default 1000).
    #[arg(long)]
    shard_size: Option<usize>,
    #[command(flatten)]
    device: crate::DeviceArgs,
}

#[derive(clap::Subcommand)]
enum SynthCommand {
    /// Join finished shard folders of one plan into one dataset folder.
    Merge {
        /// The shard folders.
        #[arg(required = true)]
        shards: Vec<PathBuf>,
        /// Output folder.
        #[arg(long)]
        out: PathBuf,
    },
}

pub fn run_cli(args: SynthArgs) -> Result<()> {
    if let Some(SynthCommand::Merge { shards, out }) = args.command {
        let records = merge(&shards, &out)?;
        summary(&out, &records, None);
        return Ok(());
    }
    let (Some(plan_path), Some(out)) = (args.plan, args.out) else {
        return Err(Error::request(
            "plan",
            "synfer synth needs --plan FILE and --out DIR",
        ));
    };
    let mut plan = Plan::read(&plan_path)?;
    plan.format = args.format.unwrap_or(plan.format);
    plan.shard_size = args.shard_size.unwrap_or(plan.shard_size);
    plan.validate(&plan_path.display().to_string())?;
    let shard = Shard::parse(&args.shard)?;
    let selected = args.device.select()?;
    let model = plan.model_dir(&plan_path);
    let pipe = Pipeline::builder(model.as_deref())
        .selected(&selected)
        .build()?;
    let analyzer = FaceAnalyzer::embedded(&selected.device)?;
    eprintln!(
        "synth: {} items in the plan, shard {}/{}, {} on {}",
        plan.len(),
        shard.index,
        shard.count,
        pipe.info().source,
        selected.description
    );
    let bar = synfer::progress::bar(0, "image");
    let start = Instant::now();
    let mut made = 0;
    let records = run(&pipe, &analyzer, &plan, &out, shard, args.resume, |p| {
        if bar.length() != Some(p.total as u64) {
            bar.set_length(p.total as u64);
            bar.reset_eta();
        }
        bar.set_position(p.done as u64);
        made = p.this_run;
    })?;
    bar.finish_and_clear();
    summary(
        &out,
        &records,
        Some(made as f64 / start.elapsed().as_secs_f64()),
    );
    Ok(())
}

fn summary(out: &Path, records: &[synfer::synth::Record], rate: Option<f64>) {
    crate::print(&report(records).summary(out, rate));
}
