//! `synfer generate`: one request, images written as PNG with a JSON record beside each.

use std::path::PathBuf;
use std::time::Instant;

use synfer::au::adapter::read_adapter;
use synfer::fer::FerClassifier;
use synfer::guidance::semantic::SemanticFlags;
use synfer::layout::{StartFlags, replay_start};
use synfer::pipeline::ModelSource;
use synfer::pipeline::output::image_paths;
use synfer::pipeline::request::DEFAULT_GUIDANCE;
use synfer::pipeline::single_file::SingleFileOptions;
use synfer::pipeline::{GenerateOptions, GenerateRequest, ImageRecord, Pipeline, Timings};
use synfer::tensor::read_latents_file;
use synfer::weights::lora::read_lora;
use synfer::{Error, Result};

#[derive(clap::Args)]
pub struct GenerateArgs {
    #[command(flatten)]
    request: GenerateRequest,
    /// Classifier-free guidance scale; ≤ 1 disables guidance (one UNet pass per step).
    /// Default: the model's (`synfer.json`), else 7.5.
    #[arg(long)]
    guidance: Option<f64>,
    /// Model folder in diffusers layout, or a single-file checkpoint in the original Stable
    /// Diffusion layout (.safetensors, .ckpt) (default: the built-in synfer-tiny).
    #[arg(long)]
    model: Option<PathBuf>,
    /// A diffusers folder whose configs and tokenizer describe a single-file --model (for
    /// shapes other than standard SD 1.x / 2.x).
    #[arg(long, requires = "model")]
    config: Option<PathBuf>,
    /// Use a single-file checkpoint's EMA weights (`model_ema.*`).
    #[arg(long, requires = "model")]
    ema: bool,
    /// A single-file checkpoint's prediction type (`epsilon`, `v_prediction`), overriding its
    /// metadata.
    #[arg(long, requires = "model")]
    prediction_type: Option<String>,
    /// Initial latents (.npy, or .safetensors with a tensor named `latents`), replacing the noise.
    #[arg(long)]
    latents: Option<PathBuf>,
    #[command(flatten)]
    start: StartFlags,
    #[command(flatten)]
    semantic: SemanticFlags,
    /// A classifier trained with `synfer fer train` (model folder) to guide with.
    #[arg(long, requires = "semantic_guidance")]
    sg_model: Option<PathBuf>,
    /// AU adapter: an `au_adapter` folder (config.json + safetensors), or FineFace's released
    /// files (a folder holding them, or a comma-separated list).
    #[arg(long)]
    adapter: Option<String>,
    /// LoRA weights merged into the model, `FILE[:scale]` (repeatable).
    #[arg(long)]
    lora: Vec<String>,
    #[command(flatten)]
    device: crate::DeviceArgs,
    /// Regenerate the image a PNG written by synfer holds (its `synfer` record: request, seed
    /// and start); request flags are ignored, while --model, --adapter, --lora, --sg-model,
    /// --latents and --device must name what made it (a different model is reported).
    #[arg(long)]
    from_png: Option<PathBuf>,
    /// Output PNG (it carries its settings: A1111 `parameters` and the JSON record; the record
    /// is also written next to each image as JSON).
    #[arg(long)]
    out: PathBuf,
}

pub fn run(args: GenerateArgs) -> Result<()> {
    if args.out.extension().and_then(|e| e.to_str()) != Some("png") {
        return Err(Error::request(
            "out",
            format!("{} must end in .png", args.out.display()),
        ));
    }
    let start = Instant::now();
    let selected = args.device.select()?;
    let source: ModelSource = match &args.model {
        Some(path) if path.is_file() => ModelSource::SingleFile(
            path.clone(),
            SingleFileOptions {
                config: args.config.clone(),
                ema: args.ema,
                prediction_type: args.prediction_type.clone(),
            },
        ),
        Some(_) if args.config.is_some() || args.ema || args.prediction_type.is_some() => {
            return Err(Error::request(
                "model",
                "--config, --ema and --prediction-type apply to a single-file --model",
            ));
        }
        other => other.as_deref().into(),
    };
    let mut builder = Pipeline::builder(source).selected(&selected);
    for spec in &args.lora {
        builder = builder.lora(read_lora(spec)?);
    }
    if let Some(spec) = &args.adapter {
        let paths: Vec<PathBuf> = spec.split(',').map(PathBuf::from).collect();
        let (adapter, loras) = read_adapter(&paths)?;
        builder = builder.adapter(adapter).loras(loras);
    }
    let mut pipeline = builder.build()?;
    let replay = match &args.from_png {
        Some(path) => {
            let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
            let record = ImageRecord::from_png(&bytes, &path.display().to_string())?;
            if record.model != pipeline.info().source {
                eprintln!(
                    "warning: {} was made by {}; regenerating with {}",
                    path.display(),
                    record.model,
                    pipeline.info().source
                );
            }
            if let (Some(file), None) = (&record.latents_file, &args.latents) {
                return Err(Error::request(
                    "from_png",
                    format!(
                        "{} started from the latents {file}: pass them with --latents",
                        path.display()
                    ),
                ));
            }
            Some(record)
        }
        None => None,
    };
    let mut req = match &replay {
        Some(record) => record.replay_request(),
        None => {
            let mut req = args.request;
            req.guidance_scale = args
                .guidance
                .or(pipeline.info().defaults.guidance_scale)
                .unwrap_or(DEFAULT_GUIDANCE);
            req.semantic_guidance = args.semantic.settings(args.sg_model.is_some())?;
            req
        }
    };
    if req.semantic_guidance.is_some() {
        pipeline.enable_semantic_guidance()?;
    }
    if let Some(dir) = &args.sg_model {
        let (config, weights) = FerClassifier::read_dir(dir)?;
        pipeline.enable_trained_guidance(&config, &weights)?;
    }
    let load_s = start.elapsed().as_secs_f64();
    let latents = args.latents.as_deref().map(read_latents_file).transpose()?;
    let flags = match (&replay, &pipeline.info().defaults.layout) {
        (Some(_), _) => None,
        (None, Some(d)) if args.start.is_none() && req.expression.is_some() => {
            Some(StartFlags::from_default(d, args.model.as_deref()))
        }
        (None, _) => Some(args.start),
    };
    let images = match flags {
        Some(flags) => {
            let (image_start, images) = flags
                .resolve(req.num_images, req.seed, pipeline.device())?
                .unzip();
            req.start = image_start;
            images
        }
        // A replayed start draws or reads the recorded face again.
        None => match &replay {
            Some(record) => replay_start(record, pipeline.device())?.map(|img| vec![img]),
            None => None,
        },
    };
    let options = GenerateOptions {
        latents: latents.as_ref(),
        images: images.as_deref(),
        ..GenerateOptions::default()
    };
    let bar = synfer::progress::bar(req.steps as u64, "step");
    let gen_start = Instant::now();
    let output = pipeline.generate_with(&req, &options, |e| {
        bar.set_length(e.total as u64);
        bar.set_position(e.step as u64);
    })?;
    bar.finish_and_clear();
    let generate_s = gen_start.elapsed().as_secs_f64();
    for w in &output.warnings {
        eprintln!("warning: {w}");
    }
    let timings = Timings {
        load_s: Some(load_s),
        total_s: Some(start.elapsed().as_secs_f64()),
        ..Timings::of(generate_s, req.steps)
    };
    let mut records = output.records(
        &req,
        &pipeline.info().source,
        Some(&selected.description),
        Some(timings),
    );
    for r in &mut records {
        r.latents_file = args.latents.as_ref().map(|p| p.display().to_string());
    }
    let paths = image_paths(&args.out, output.images.len());
    output.save(&paths, &records)?;
    let names: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    eprintln!(
        "wrote {} ({}x{}, {} steps, {generate_s:.2}s on {})",
        names.join(", "),
        output.width,
        output.height,
        req.steps,
        selected.description
    );
    Ok(())
}
