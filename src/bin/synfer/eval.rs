//! `synfer eval`: expression agreement and AU control of a model, judged independently.

use std::path::PathBuf;

use indicatif::{ProgressBar, ProgressStyle};
use synfer::device::{self, DeviceChoice};
use synfer::eval::{EvalConfig, evaluate, grid};
use synfer::face::analyzer::FaceAnalyzer;
use synfer::files::write_atomic;
use synfer::guidance::semantic::SemanticGuidance;
use synfer::{Error, Result};

#[derive(clap::Args)]
pub struct EvalArgs {
    /// Model folder in diffusers layout (default: the built-in synfer-tiny).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Output folder: eval.json and grid.png.
    #[arg(long)]
    out: PathBuf,
    /// Images per expression.
    #[arg(long, default_value_t = 32)]
    per_expression: usize,
    /// Seeds per requested AU level.
    #[arg(long, default_value_t = 4)]
    per_level: usize,
    /// AUs probed with single-AU requests, comma-separated ('' skips the probe).
    #[arg(
        long,
        default_value = "AU1,AU2,AU4,AU5,AU6,AU9,AU12,AU15,AU17,AU20,AU25,AU26"
    )]
    aus: String,
    /// Prompt of the single-AU requests and base prompt of the expression requests.
    #[arg(long, default_value = "a photo of a face")]
    prompt: String,
    /// First seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Denoising steps.
    #[arg(long, default_value_t = 25)]
    steps: usize,
    /// Guidance scale.
    #[arg(long, default_value_t = 7.5)]
    guidance: f64,
    /// Images per pipeline call.
    #[arg(long, default_value_t = 8)]
    batch: usize,
    /// Also measure semantic guidance at this strength (the same seeds with and without).
    #[arg(long)]
    semantic_guidance: Option<f64>,
    /// Images per expression in the guided pass (the first seeds of the unguided ones).
    #[arg(long, default_value_t = 16)]
    sg_per_expression: usize,
    /// The guiding classifier (face-api or mini-xception); the other one judges.
    #[arg(long, default_value = "face-api")]
    sg_classifier: String,
    /// Compute device.
    #[arg(long, value_enum, default_value = "auto")]
    device: DeviceChoice,
}

pub fn run(args: EvalArgs) -> Result<()> {
    let selected = device::select(args.device)?;
    let mut pipe =
        crate::load_pipeline(args.model.as_deref(), &selected.device, Default::default())?;
    let semantic = match args.semantic_guidance {
        Some(scale) => {
            pipe.enable_semantic_guidance()?;
            let sg = SemanticGuidance {
                scale,
                classifier: args.sg_classifier.parse()?,
                ..SemanticGuidance::default()
            };
            sg.validate()?;
            Some(sg)
        }
        None => None,
    };
    let analyzer = FaceAnalyzer::embedded(&selected.device)?;
    let cfg = EvalConfig {
        per_expression: args.per_expression,
        per_level: args.per_level,
        aus: args
            .aus
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect(),
        prompt: args.prompt,
        seed: args.seed,
        steps: args.steps,
        guidance: args.guidance,
        batch: args.batch,
        semantic,
        semantic_per_expression: args.sg_per_expression,
        ..EvalConfig::default()
    };
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} image {pos}/{len} [{bar:30}] {elapsed_precise} eta {eta}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    let (report, images) = evaluate(&pipe, &analyzer, &cfg, |done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    })?;
    bar.finish_and_clear();
    std::fs::create_dir_all(&args.out).map_err(|e| Error::io(&args.out, e))?;
    let json = serde_json::to_vec_pretty(&report).map_err(|e| Error::json("eval.json", e))?;
    write_atomic(&args.out.join("eval.json"), &json)?;
    grid(&report, &images, 8).save(&args.out.join("grid.png"))?;
    println!(
        "{} on {}: FER B agreement {:.1} % (average over 7 expressions)",
        pipe.info.source,
        selected.description,
        report.average_agreement * 100.0
    );
    println!(
        "  faces found (BlazeFace score ≥ {}): {:.1} %",
        synfer::eval::FACE_THRESHOLD,
        report.face_rate * 100.0
    );
    for (name, r) in &report.expressions {
        println!(
            "  {name:<10} {:5.1} %  (faces {:5.1} %)",
            r.agreement * 100.0,
            r.face_rate * 100.0
        );
    }
    for (code, r) in &report.aus {
        let rho = r.spearman.map_or("undefined".into(), |s| format!("{s:.3}"));
        let means: Vec<String> = r.measured_mean.iter().map(|m| format!("{m:.2}")).collect();
        println!(
            "  {code:<5} Spearman {rho:>9}  measured by level: {}",
            means.join(" ")
        );
    }
    if let Some(s) = &report.semantic {
        println!(
            "  semantic guidance λ = {} ({} guides, {} judges): {:.1} % → {:.1} %; a guided step costs {:.2}× an unguided one",
            s.settings.scale,
            s.settings.classifier.name(),
            s.judge,
            s.average[0] * 100.0,
            s.average[1] * 100.0,
            s.step_cost_ratio
        );
        for (name, [a, b]) in &s.agreement {
            println!("    {name:<10} {:5.1} % → {:5.1} %", a * 100.0, b * 100.0);
        }
    }
    println!(
        "wrote {}/eval.json and grid.png ({:.0} s)",
        args.out.display(),
        report.seconds
    );
    Ok(())
}
