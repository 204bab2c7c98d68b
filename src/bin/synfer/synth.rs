//! `synfer synth`: batch dataset synthesis from a plan, sharded and resumable.

use std::path::{Path, PathBuf};
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use synfer::device::{self, DeviceChoice, Precision};
use synfer::face::analyzer::FaceAnalyzer;
use synfer::synth::output::report;
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
    /// Compute device.
    #[arg(long, value_enum, default_value = "auto")]
    device: DeviceChoice,
    /// Float precision: f16 halves memory and uses tensor cores on GPUs (not on the CPU).
    #[arg(long, value_enum, default_value = "f32")]
    precision: Precision,
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
    let text = std::fs::read_to_string(&plan_path).map_err(|e| Error::io(&plan_path, e))?;
    let plan = Plan::from_toml(&text, &plan_path.display().to_string())?;
    let shard = Shard::parse(&args.shard)?;
    let selected = device::select_with(args.device, args.precision)?;
    let model = model_dir(&plan, &plan_path);
    let mut pipe = crate::load_pipeline(model.as_deref(), &selected.device, Default::default())?;
    pipe.buffer_limit = selected.max_buffer;
    let analyzer = FaceAnalyzer::embedded(&selected.device)?;
    eprintln!(
        "synth: {} items in the plan, shard {}/{}, {} on {}",
        plan.len(),
        shard.index,
        shard.count,
        pipe.info.source,
        selected.description
    );
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} {pos}/{len} images [{bar:30}] {per_sec} {elapsed_precise} eta {eta}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
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

/// The plan's model folder (relative to the plan file's folder); `None`: the built-in model.
fn model_dir(plan: &Plan, plan_path: &Path) -> Option<PathBuf> {
    plan.model.as_ref().map(|m| {
        let p = PathBuf::from(m);
        if p.is_absolute() {
            p
        } else {
            plan_path.parent().unwrap_or(Path::new(".")).join(p)
        }
    })
}

fn summary(out: &Path, records: &[synfer::synth::Record], rate: Option<f64>) {
    let r = report(records);
    println!(
        "{}: {} items, {} kept, relabelled {:.1} % (of images with a face), dropped {:.1} % {:?}",
        out.display(),
        r.items,
        r.kept,
        r.relabel_rate * 100.0,
        r.drop_rate * 100.0,
        r.dropped
    );
    if let Some(rate) = rate {
        println!("  {rate:.2} images/s in this run");
    }
    for (class, share) in &r.agreement {
        println!(
            "  {class:<10} requested → final agreement {:5.1} %",
            share * 100.0
        );
    }
    println!("  wrote metadata.jsonl, labels.csv, report.json, report.png");
}
