//! `synfer` command line: argument parsing and file I/O only; the work is library code.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

use synfer::device::{self, DeviceChoice};
use synfer::pipeline::latents::load_latents_file;
use synfer::pipeline::{GenerateRequest, Pipeline};
use synfer::scheduler::SchedulerKind;
use synfer::{Error, Result};

#[derive(Parser)]
#[command(
    name = "synfer",
    version,
    about = "Facial-expression synthesis with Stable-Diffusion-class models"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate an image from a prompt.
    Generate(GenerateArgs),
}

#[derive(clap::Args)]
struct GenerateArgs {
    /// Model folder in diffusers layout.
    #[arg(long, default_value = synfer::DEFAULT_MODEL_DIR)]
    model: PathBuf,
    /// The prompt.
    #[arg(long)]
    prompt: String,
    /// Negative prompt.
    #[arg(long)]
    negative_prompt: Option<String>,
    /// Denoising steps.
    #[arg(long, default_value_t = 25)]
    steps: usize,
    /// Classifier-free guidance scale (≤ 1 disables it).
    #[arg(long, default_value_t = 7.5)]
    guidance: f64,
    /// Output width in pixels (default: the model's native size).
    #[arg(long)]
    width: Option<usize>,
    /// Output height in pixels (default: the model's native size).
    #[arg(long)]
    height: Option<usize>,
    /// Seed of the initial noise.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Images in the batch (image i uses seed + i; files get a `-i` suffix).
    #[arg(long, default_value_t = 1)]
    num_images: usize,
    /// Initial latents (.npy, or .safetensors with a tensor named `latents`), replacing the noise.
    #[arg(long)]
    latents: Option<PathBuf>,
    /// Override the model's scheduler: ddim, dpm++ or euler.
    #[arg(long, value_parser = parse_scheduler)]
    scheduler: Option<SchedulerKind>,
    /// Skip final CLIP layers.
    #[arg(long)]
    clip_skip: Option<usize>,
    /// Compute device.
    #[arg(long, value_enum, default_value = "auto")]
    device: DeviceChoice,
    /// Output PNG (a JSON sidecar is written next to it).
    #[arg(long)]
    out: PathBuf,
}

fn parse_scheduler(s: &str) -> std::result::Result<SchedulerKind, String> {
    s.parse()
        .map_err(|e: synfer::scheduler::SchedulerError| e.to_string())
}

/// Mesa's Vulkan loader complains on stderr without a runtime dir; give it a private one.
fn quiet_vulkan_loader() {
    if std::env::var_os("XDG_RUNTIME_DIR").is_none() {
        let dir = std::env::temp_dir().join(format!("synfer-xdg-{}", std::process::id()));
        if std::fs::create_dir_all(&dir).is_ok() {
            // SAFETY: called first thing in `main`, before any other thread exists.
            unsafe { std::env::set_var("XDG_RUNTIME_DIR", &dir) };
        }
    }
}

fn main() -> ExitCode {
    quiet_vulkan_loader();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Generate(args) => generate(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn output_paths(out: &Path, n: usize) -> Vec<PathBuf> {
    if n == 1 {
        return vec![out.to_path_buf()];
    }
    let stem = out.file_stem().and_then(|s| s.to_str()).unwrap_or("image");
    (0..n)
        .map(|i| out.with_file_name(format!("{stem}-{i}.png")))
        .collect()
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}

fn generate(args: GenerateArgs) -> Result<()> {
    if args.out.extension().and_then(|e| e.to_str()) != Some("png") {
        return Err(Error::request(
            "out",
            format!("{} must end in .png", args.out.display()),
        ));
    }
    let start = Instant::now();
    let selected = device::select(args.device)?;
    let pipeline = Pipeline::load(&args.model, &selected.device)?;
    let load_s = start.elapsed().as_secs_f64();

    let req = GenerateRequest {
        prompt: args.prompt,
        negative_prompt: args.negative_prompt,
        steps: args.steps,
        guidance_scale: args.guidance,
        seed: args.seed,
        width: args.width,
        height: args.height,
        num_images: args.num_images,
        scheduler: args.scheduler,
        clip_skip: args.clip_skip,
    };
    let latents = args.latents.as_deref().map(load_latents_file).transpose()?;

    let bar = ProgressBar::new(req.steps as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} step {pos}/{len} [{bar:30}] {elapsed_precise} eta {eta}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    let gen_start = Instant::now();
    let output = pollster::block_on(pipeline.generate(&req, latents.as_ref(), |e| {
        bar.set_length(e.total as u64);
        bar.set_position(e.step as u64);
    }))?;
    bar.finish_and_clear();
    let generate_s = gen_start.elapsed().as_secs_f64();
    for w in &output.warnings {
        eprintln!("warning: {w}");
    }

    let paths = output_paths(&args.out, output.images.len());
    for (path, pixels) in paths.iter().zip(&output.images) {
        let img =
            image::RgbImage::from_raw(output.width as u32, output.height as u32, pixels.clone())
                .expect("buffer matches size");
        let mut png = Vec::new();
        img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
            .map_err(|e| Error::Image {
                file: path.display().to_string(),
                message: e.to_string(),
            })?;
        write_atomic(path, &png)?;
    }
    let sidecar = json!({
        "synfer_version": env!("CARGO_PKG_VERSION"),
        "request": req,
        "seed": req.seed,
        "seeds": output.seeds,
        "latents_file": args.latents,
        "images": paths,
        "width": output.width,
        "height": output.height,
        "model": pipeline.info,
        "device": selected.description,
        "timings": {
            "load_s": load_s,
            "generate_s": generate_s,
            "per_step_s": generate_s / req.steps as f64,
            "total_s": start.elapsed().as_secs_f64(),
        },
        "warnings": output.warnings,
    });
    let sidecar_path = args.out.with_extension("json");
    write_atomic(
        &sidecar_path,
        serde_json::to_string_pretty(&sidecar)
            .expect("serialisable")
            .as_bytes(),
    )?;
    eprintln!(
        "wrote {} ({}x{}, {} steps, {:.2}s on {})",
        paths
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", "),
        output.width,
        output.height,
        req.steps,
        generate_s,
        selected.description
    );
    Ok(())
}
