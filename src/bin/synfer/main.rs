//! `synfer` command line: argument parsing, one call into the library per command, printing.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

mod bench;
mod data;
mod eval;
mod fer;
mod generate;
mod synth;
mod train;

use clap::{Parser, Subcommand};

use synfer::device::{self, DeviceChoice, Precision, SelectedDevice};
use synfer::face::analyzer::{FaceAnalyzer, FaceReport};
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
    Generate(Box<generate::GenerateArgs>),
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

/// The compute device and float precision of a command.
#[derive(clap::Args)]
pub struct DeviceArgs {
    /// Compute device.
    #[arg(long, value_enum, default_value = "auto")]
    device: DeviceChoice,
    /// Float precision: f16 halves memory and uses tensor cores on GPUs (not on the CPU).
    #[arg(long, value_enum, default_value = "f32")]
    precision: Precision,
}

impl DeviceArgs {
    /// The device these flags select.
    pub fn select(&self) -> Result<SelectedDevice> {
        device::select_with(self.device, self.precision)
    }
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

fn main() -> ExitCode {
    device::quiet_vulkan_loader();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Generate(args) => generate::run(*args),
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

/// Prints to stdout; a closed pipe (`synfer aus | head`) is not an error worth a panic.
pub fn print(text: &str) {
    let _ = std::io::Write::write_all(&mut std::io::stdout(), text.as_bytes());
}

fn list_aus(set: &str) -> Result<()> {
    let set = synfer::au::AuSet::by_name(set).ok_or_else(|| {
        Error::request("set", format!("{set:?}: expected fineface or opengraphau"))
    })?;
    print(&synfer::au::describe(set));
    Ok(())
}

fn analyze(args: &AnalyzeArgs) -> Result<()> {
    let selected = device::select(args.device)?;
    let mut analyzer = FaceAnalyzer::embedded(&selected.device)?;
    if let Some(neutral) = &args.neutral {
        let faces = analyzer.analyze_file(neutral, args.assume_cropped)?;
        let face = faces.first().ok_or_else(|| {
            Error::request("neutral", format!("{}: no face found", neutral.display()))
        })?;
        analyzer.calibrate_aus(std::slice::from_ref(face))?;
    }
    let header = format!("{}\n", FaceReport::TABLE_HEADER);
    each_file(&args.paths, args.json, &header, |path, file| {
        let faces = analyzer.analyze_file(path, args.assume_cropped)?;
        if args.json {
            // A struct, not `json!`: keeps the AU and class order of `FaceReport`.
            #[derive(serde::Serialize)]
            struct Line<'a> {
                file: &'a str,
                faces: &'a [FaceReport],
            }
            let line = serde_json::to_string(&Line {
                file,
                faces: &faces,
            });
            return Ok(format!("{}\n", line.unwrap_or_default()));
        }
        if faces.is_empty() {
            return Ok(format!("{file}\t-\tno face\n"));
        }
        Ok(faces
            .iter()
            .enumerate()
            .map(|(i, face)| format!("{}\n", face.table_row(file, i)))
            .collect())
    })
}

/// Runs `each` on every image file of `paths` (folders walked), printing the lines it returns
/// (after `header`, without `json`); a file that fails is reported and the run goes on. An
/// error only when no file could be read.
pub fn each_file(
    paths: &[PathBuf],
    json: bool,
    header: &str,
    mut each: impl FnMut(&Path, &str) -> Result<String>,
) -> Result<()> {
    let files = synfer::files::image_files(paths);
    if files.is_empty() {
        return Err(Error::request("paths", "no image files found"));
    }
    if !json {
        print(header);
    }
    let mut ok = 0usize;
    for path in &files {
        let file = path.display().to_string();
        match each(path, &file) {
            Ok(lines) => {
                ok += 1;
                print(&lines);
            }
            Err(e) => {
                let message = e.to_string();
                if message.contains(&file) {
                    eprintln!("error: {message}");
                } else {
                    eprintln!("error: {file}: {message}");
                }
                if json {
                    let line = serde_json::json!({ "file": file, "error": message });
                    print(&format!("{line}\n"));
                }
            }
        }
    }
    if ok == 0 {
        return Err(Error::request(
            "paths",
            format!("none of the {} file(s) could be read", files.len()),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
