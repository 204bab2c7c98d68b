//! `synfer eval`: expression agreement and AU control of a model, judged independently.

use std::path::PathBuf;

use synfer::Pipeline;
use synfer::Result;
use synfer::device::{self, DeviceChoice};
use synfer::eval::{EvalConfig, evaluate};
use synfer::face::analyzer::FaceAnalyzer;
use synfer::guidance::semantic::SemanticGuidance;

#[derive(clap::Args)]
pub struct EvalArgs {
    /// Model folder in diffusers layout (default: the built-in synfer-tiny).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Output folder: eval.json and grid.png.
    #[arg(long)]
    out: PathBuf,
    #[command(flatten)]
    config: EvalConfig,
    /// Also measure semantic guidance at this strength (the same seeds with and without).
    #[arg(long)]
    semantic_guidance: Option<f64>,
    /// The guiding classifier (face-api or mini-xception); the other one judges.
    #[arg(long, default_value = "face-api")]
    sg_classifier: String,
    /// Compute device.
    #[arg(long, value_enum, default_value = "auto")]
    device: DeviceChoice,
}

pub fn run(args: EvalArgs) -> Result<()> {
    let selected = device::select(args.device)?;
    let mut pipe = Pipeline::builder(args.model.as_deref())
        .selected(&selected)
        .build()?;
    let mut cfg = args.config;
    cfg.aus.retain(|code| !code.trim().is_empty());
    if let Some(scale) = args.semantic_guidance {
        pipe.enable_semantic_guidance()?;
        let sg = SemanticGuidance {
            scale,
            classifier: args.sg_classifier.parse()?,
            ..SemanticGuidance::default()
        };
        sg.validate()?;
        cfg.semantic = Some(sg);
    }
    let analyzer = FaceAnalyzer::embedded(&selected.device)?;
    let bar = synfer::progress::bar(0, "image");
    let (report, images) = evaluate(&pipe, &analyzer, &cfg, |done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    })?;
    bar.finish_and_clear();
    report.write(&images, &args.out)?;
    crate::print(&report.summary(&selected.description));
    crate::print(&format!(
        "wrote {}/eval.json and grid.png ({:.0} s)\n",
        args.out.display(),
        report.seconds
    ));
    Ok(())
}
