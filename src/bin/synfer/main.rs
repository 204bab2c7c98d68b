//! `synfer` command line: argument parsing and file I/O only; the work is library code.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

mod bench;
mod data;
mod eval;
mod fer;
mod synth;
mod train;

use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

use synfer::au::{AuVector, Expression};
use synfer::device::{self, DeviceChoice, Precision};
use synfer::face::analyzer::{FaceAnalyzer, FaceReport, RgbView};
use synfer::files::{IMAGE_EXTENSIONS, write_atomic};
use synfer::guidance::semantic::{GuideClassifier, SemanticGuidance};
use synfer::pipeline::adapter::{read_adapter, read_lora};
use synfer::pipeline::latents::load_latents_file;
use synfer::pipeline::{GenerateRequest, LoadOptions, Pipeline};
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
    Generate(Box<GenerateArgs>),
    /// List the action units of an AU set and the expression prototypes.
    Aus {
        /// `fineface` (12 AUs, 0–5) or `opengraphau` (41 AUs, binary).
        #[arg(long, default_value = "fineface")]
        set: String,
    },
    /// Analyse faces in images: expression (two FER classifiers and their ensemble), FineFace
    /// AU estimates and 468 landmarks. Directories are walked recursively (sorted; .png, .jpg,
    /// .jpeg). A file that cannot be read or decoded is reported (stderr, and a
    /// `{"file", "error"}` line with --json) and the run goes on; the exit code is non-zero
    /// only when no file could be analysed.
    Analyze(AnalyzeArgs),
    /// Training data.
    #[command(subcommand)]
    Data(data::DataCommand),
    /// Train synfer's models (resumable).
    #[command(subcommand)]
    Train(train::TrainCommand),
    /// Measure a model: expression agreement judged by mini-Xception and AU control
    /// (Spearman's ρ of requested vs measured intensity); writes eval.json and grid.png.
    Eval(Box<eval::EvalArgs>),
    /// Synthesise a labelled dataset from a plan (sharded, resumable; `synth merge` joins shards).
    Synth(Box<synth::SynthArgs>),
    /// Expression classifiers: train on synthetic and real sets, evaluate, predict.
    #[command(subcommand)]
    Fer(fer::FerCommand),
    /// Speed: SD-1.5-shaped UNet steps on a device against diffusers (same shapes, same run).
    Bench(bench::BenchArgs),
}

#[derive(clap::Args)]
struct AnalyzeArgs {
    /// Treat each image as one face crop (no detection; bbox = whole image).
    #[arg(long)]
    assume_cropped: bool,
    /// Print JSON Lines: `{"file": ..., "faces": [...]}` per image.
    #[arg(long)]
    json: bool,
    /// A neutral picture of the same person: its (first) face becomes the AU estimator's
    /// neutral baseline instead of the population one (much better AU readings).
    #[arg(long, value_name = "FILE")]
    neutral: Option<PathBuf>,
    /// Compute device.
    #[arg(long, value_enum, default_value = "auto")]
    device: DeviceChoice,
    /// Image files or directories.
    #[arg(required = true)]
    paths: Vec<PathBuf>,
}

#[derive(clap::Args)]
struct GenerateArgs {
    /// Model folder in diffusers layout.
    #[arg(long)]
    model: Option<PathBuf>,
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
    /// Override the model's scheduler: ddim, dpm++, euler or pndm (plms).
    #[arg(long, value_parser = parse_scheduler)]
    scheduler: Option<SchedulerKind>,
    /// Skip final CLIP layers.
    #[arg(long)]
    clip_skip: Option<usize>,
    /// Target expression: AU prototype + prompt wording (neutral, happy, sad, angry, fearful,
    /// disgusted, surprised, contempt).
    #[arg(long)]
    expression: Option<Expression>,
    /// Action units over the expression prototype, e.g. `AU12=4,AU6=3` (needs an AU adapter).
    #[arg(long)]
    au: Option<String>,
    /// Weight of the AU branch (default: the adapter's, usually 1).
    #[arg(long)]
    au_scale: Option<f64>,
    /// Semantic guidance strength λ toward `--expression` (SynFER; 0.1 is the paper's scale).
    #[arg(long)]
    semantic_guidance: Option<f64>,
    /// Guided part of the schedule as fractions `FROM:TO` (default 0.4:1.0, the last 60 %).
    #[arg(long, requires = "semantic_guidance")]
    sg_window: Option<String>,
    /// Classifier whose gradient guides: face-api (default), mini-xception, or trained
    /// (the `--sg-model` one; the default when `--sg-model` is given).
    #[arg(long, requires = "semantic_guidance")]
    sg_classifier: Option<String>,
    /// A classifier trained with `synfer fer train` (model folder) to guide with.
    #[arg(long, requires = "semantic_guidance")]
    sg_model: Option<PathBuf>,
    /// Normalise the guidance gradient per token instead of per image.
    #[arg(long, requires = "semantic_guidance")]
    sg_per_token: bool,
    /// AU adapter: an `au_adapter` folder (config.json + safetensors), or FineFace's released
    /// files (a folder holding them, or a comma-separated list).
    #[arg(long)]
    adapter: Option<String>,
    /// LoRA weights merged into the model, `FILE[:scale]` (repeatable).
    #[arg(long)]
    lora: Vec<String>,
    /// Compute device.
    #[arg(long, value_enum, default_value = "auto")]
    device: DeviceChoice,
    /// Float precision: f16 halves memory and uses tensor cores on GPUs (not on the CPU).
    #[arg(long, value_enum, default_value = "f32")]
    precision: Precision,
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
        Command::Generate(args) => generate(*args),
        Command::Aus { set } => list_aus(&set),
        Command::Analyze(args) => analyze(&args),
        Command::Data(cmd) => data::run(cmd),
        Command::Bench(args) => bench::run(args),
        Command::Train(cmd) => train::run(cmd),
        Command::Eval(args) => eval::run(*args),
        Command::Synth(args) => synth::run_cli(*args),
        Command::Fer(cmd) => fer::run(cmd),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn list_aus(set: &str) -> Result<()> {
    use std::fmt::Write as _;
    let set = synfer::au::AuSet::by_name(set).ok_or_else(|| {
        Error::request("set", format!("{set:?}: expected fineface or opengraphau"))
    })?;
    let range = if set.binary {
        "0/1".to_string()
    } else {
        format!("0–{}", set.max)
    };
    let mut out = format!(
        "{} set: {} action units, values {range}\n\n",
        set.name,
        set.codes.len()
    );
    for unit in set.units() {
        let _ = writeln!(
            out,
            "{:<6} {:<22} {:<48} {}",
            unit.code, unit.name, unit.muscle, unit.description
        );
    }
    out.push_str("\nexpression prototypes (--expression):\n");
    for e in Expression::EIGHT {
        let spec = e.prototype(set).to_spec();
        let _ = writeln!(
            out,
            "{:<10} {}",
            e.name(),
            if spec.is_empty() {
                "(all zero)".into()
            } else {
                spec
            }
        );
    }
    // A closed pipe (`synfer aus | head`) is not an error worth a panic.
    let _ = std::io::Write::write_all(&mut std::io::stdout(), out.as_bytes());
    Ok(())
}

/// Files named on the command line as given; directories walked recursively, sorted, keeping
/// image extensions only.
fn collect_files(paths: &[PathBuf]) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let mut entries: Vec<PathBuf> = match std::fs::read_dir(dir) {
            Ok(rd) => rd.filter_map(|e| e.ok().map(|e| e.path())).collect(),
            Err(_) => {
                // Unreadable directory: report it as a file error.
                out.push(dir.to_path_buf());
                return;
            }
        };
        entries.sort();
        for path in entries {
            if path.is_dir() {
                walk(&path, out);
            } else if path
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
            {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    for path in paths {
        if path.is_dir() {
            walk(path, &mut out);
        } else {
            out.push(path.clone());
        }
    }
    out
}

fn analyze_file(
    analyzer: &FaceAnalyzer,
    path: &Path,
    assume_cropped: bool,
) -> Result<Vec<FaceReport>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let img = image::load_from_memory(&bytes)
        .map_err(|e| Error::Image {
            file: path.display().to_string(),
            message: e.to_string(),
        })?
        .to_rgb8();
    let view = RgbView::new(img.width() as usize, img.height() as usize, img.as_raw())?;
    if assume_cropped {
        Ok(vec![analyzer.analyze_cropped(view)?])
    } else {
        analyzer.analyze(view)
    }
}

fn table_row(file: &str, index: usize, face: &FaceReport) -> String {
    let [x, y, w, h] = face.bbox;
    let e = &face.expression;
    let mut aus: Vec<(&str, f32)> = face.aus.active().into_iter().collect();
    aus.sort_by(|a, b| b.1.total_cmp(&a.1));
    let top = aus
        .iter()
        .take(3)
        .map(|(c, v)| format!("{c}={v:.1}"))
        .collect::<Vec<_>>()
        .join(",");
    let score = face
        .detector_score
        .map_or_else(|| "-".into(), |s| format!("{s:.2}"));
    format!(
        "{file}\t{index}\t{x:.0},{y:.0},{w:.0},{h:.0}\t{score}\t{} {:.2}\t{}\t{}\t{}",
        e.ensemble.label,
        e.ensemble.confidence(),
        e.face_api.label,
        e.mini_xception.label,
        if top.is_empty() { "-".into() } else { top }
    )
}

fn analyze(args: &AnalyzeArgs) -> Result<()> {
    use std::io::Write as _;
    let selected = device::select(args.device)?;
    let mut analyzer = FaceAnalyzer::embedded(&selected.device)?;
    if let Some(neutral) = &args.neutral {
        let faces = analyze_file(&analyzer, neutral, args.assume_cropped)?;
        let face = faces.first().ok_or_else(|| {
            Error::request("neutral", format!("{}: no face found", neutral.display()))
        })?;
        analyzer.calibrate_aus(std::slice::from_ref(face))?;
    }
    let files = collect_files(&args.paths);
    if files.is_empty() {
        return Err(Error::request("paths", "no image files found"));
    }
    let mut stdout = std::io::stdout().lock();
    if !args.json {
        let _ = writeln!(
            stdout,
            "file\tface\tbbox(x,y,w,h)\tscore\tensemble\tface-api\tmini-xception\ttop AUs"
        );
    }
    let mut ok = 0usize;
    for path in &files {
        let file = path.display().to_string();
        match analyze_file(&analyzer, path, args.assume_cropped) {
            Ok(faces) => {
                ok += 1;
                if args.json {
                    // A struct, not `json!`: keeps the AU and class order of `FaceReport`.
                    #[derive(serde::Serialize)]
                    struct Line<'a> {
                        file: &'a str,
                        faces: &'a [FaceReport],
                    }
                    let line = serde_json::to_string(&Line {
                        file: &file,
                        faces: &faces,
                    })
                    .expect("serialisable");
                    let _ = writeln!(stdout, "{line}");
                } else if faces.is_empty() {
                    let _ = writeln!(stdout, "{file}\t-\tno face");
                } else {
                    for (i, face) in faces.iter().enumerate() {
                        let _ = writeln!(stdout, "{}", table_row(&file, i, face));
                    }
                }
            }
            Err(e) => {
                // I/O and decoding errors name the file already.
                let message = e.to_string();
                if message.contains(&file) {
                    eprintln!("error: {message}");
                } else {
                    eprintln!("error: {file}: {message}");
                }
                if args.json {
                    let line = json!({ "file": file, "error": message });
                    let _ = writeln!(stdout, "{line}");
                }
            }
        }
    }
    let _ = stdout.flush();
    if ok == 0 {
        return Err(Error::request(
            "paths",
            format!("none of the {} file(s) could be analysed", files.len()),
        ));
    }
    Ok(())
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

/// A model folder, or the built-in synfer-tiny when none is given.
pub fn load_pipeline(
    model: Option<&Path>,
    device: &burn::tensor::Device,
    options: LoadOptions,
) -> Result<Pipeline> {
    match model {
        Some(dir) => Pipeline::load_with(dir, device, options),
        None => Pipeline::from_source_with(&synfer::default_model::source(), device, options),
    }
}

/// The `--semantic-guidance` flags as request settings.
fn semantic_guidance(args: &GenerateArgs) -> Result<Option<SemanticGuidance>> {
    let Some(scale) = args.semantic_guidance else {
        return Ok(None);
    };
    let mut sg = SemanticGuidance {
        scale,
        per_token: args.sg_per_token,
        ..SemanticGuidance::default()
    };
    if let Some(w) = &args.sg_window {
        let parsed = w
            .split_once(':')
            .and_then(|(a, b)| Some([a.trim().parse().ok()?, b.trim().parse().ok()?]));
        sg.window = parsed.ok_or_else(|| {
            Error::request(
                "sg-window",
                format!("{w:?}: expected FROM:TO, e.g. 0.4:1.0"),
            )
        })?;
    }
    if args.sg_model.is_some() {
        sg.classifier = GuideClassifier::Trained;
    }
    if let Some(c) = &args.sg_classifier {
        sg.classifier = c.parse()?;
    }
    sg.validate()?;
    Ok(Some(sg))
}

fn generate(args: GenerateArgs) -> Result<()> {
    if args.out.extension().and_then(|e| e.to_str()) != Some("png") {
        return Err(Error::request(
            "out",
            format!("{} must end in .png", args.out.display()),
        ));
    }
    let start = Instant::now();
    let selected = device::select_with(args.device, args.precision)?;
    let mut options = LoadOptions::default();
    for spec in &args.lora {
        options.loras.push(read_lora(spec)?);
    }
    if let Some(spec) = &args.adapter {
        let paths: Vec<PathBuf> = spec.split(',').map(PathBuf::from).collect();
        let (adapter, loras) = read_adapter(&paths)?;
        options.adapter = Some(adapter);
        options.loras.extend(loras);
    }
    let mut pipeline = load_pipeline(args.model.as_deref(), &selected.device, options)?;
    pipeline.buffer_limit = selected.max_buffer;
    if args.semantic_guidance.is_some() {
        pipeline.enable_semantic_guidance()?;
    }
    if let Some(dir) = &args.sg_model {
        let (config, weights) = synfer::fer::FerClassifier::read_dir(dir)?;
        pipeline.enable_trained_guidance(&config, &weights)?;
    }
    let load_s = start.elapsed().as_secs_f64();
    let aus = match &args.au {
        Some(text) => {
            let set = pipeline
                .au_adapter
                .as_ref()
                .map_or(synfer::au::FINEFACE, |a| a.set);
            Some(
                AuVector::parse(set, text)?
                    .active()
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v))
                    .collect(),
            )
        }
        None => None,
    };

    let semantic_guidance = semantic_guidance(&args)?;
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
        expression: args.expression,
        aus,
        au_scale: args.au_scale,
        semantic_guidance,
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
        "prompt_used": output.prompt,
        "aus": output.aus,
        "au_scale": output.au_scale,
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
