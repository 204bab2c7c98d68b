//! `synfer bench`: SD-1.5-shaped UNet steps on a device against diffusers in the same run.

use std::path::PathBuf;

use serde_json::json;
use synfer::bench::{Reference, sd15_unet, time_step};
use synfer::device::{self, DeviceChoice, Precision};
use synfer::{Error, Result};

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Device of synfer's side.
    #[arg(long, value_enum, default_value = "auto")]
    device: DeviceChoice,
    /// Float precision: f16 halves memory and uses tensor cores on GPUs (not on the CPU).
    #[arg(long, value_enum, default_value = "f32")]
    precision: Precision,
    /// Image side in pixels (SD 1.5: 512; a 2-core CPU wants 256).
    #[arg(long, default_value_t = 512)]
    size: usize,
    /// Images per step, comma-separated (each is one classifier-free-guidance step).
    #[arg(long, value_delimiter = ',', default_value = "1,4")]
    batch: Vec<usize>,
    /// Timed steps per configuration (after one warm-up).
    #[arg(long, default_value_t = 3)]
    iters: usize,
    /// torch device of the diffusers reference (`cpu`, `cuda`); `none` skips it.
    #[arg(long, default_value = "cpu")]
    reference: String,
    /// Precisions of the reference, comma-separated (fp32, fp16).
    #[arg(long, value_delimiter = ',', default_value = "fp32")]
    reference_dtype: Vec<String>,
    /// Python with torch and diffusers (default: $SYNFER_PYTHON, .venv/bin/python, python3).
    #[arg(long)]
    python: Option<String>,
    /// Also write the results as JSON here.
    #[arg(long)]
    out: Option<PathBuf>,
}

pub fn run(args: BenchArgs) -> Result<()> {
    if let Some(bad) = args
        .reference_dtype
        .iter()
        .find(|d| !matches!(d.as_str(), "fp32" | "fp16"))
    {
        return Err(Error::request(
            "reference_dtype",
            format!("{bad:?}: use fp32 or fp16"),
        ));
    }
    let selected = device::select_with(args.device, args.precision)?;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    eprintln!(
        "SD-1.5-shaped UNet (random weights), {}², one CFG step per timing, on {}",
        args.size, selected.description
    );
    let python = args
        .python
        .clone()
        .unwrap_or_else(Reference::default_python);
    let unet = sd15_unet(&selected.device)?;
    let mut rows: Vec<serde_json::Value> = Vec::new();
    // Written after every measurement, so a run stopped by a time limit keeps the rest.
    let save = |rows: &[serde_json::Value]| -> Result<()> {
        let Some(path) = &args.out else {
            return Ok(());
        };
        let doc = json!({
            "device": selected.description,
            "size": args.size,
            "threads": threads,
            "results": rows,
        });
        let text = serde_json::to_string_pretty(&doc).map_err(|e| Error::json("bench", e))?;
        std::fs::write(path, text).map_err(|e| Error::io(path, e))
    };
    for &batch in &args.batch {
        let ours = time_step(&unet, &selected.device, batch, args.size, args.iters)?;
        println!(
            "synfer   batch {batch}: {:.4} s/step (min {:.4})",
            ours.mean_s, ours.min_s
        );
        rows.push(json!({"synfer": ours, "diffusers": []}));
        save(&rows)?;
        let mut refs = Vec::new();
        if args.reference != "none" {
            for dtype in &args.reference_dtype {
                let reference = Reference {
                    python: python.clone(),
                    device: args.reference.clone(),
                    dtype: dtype.clone(),
                    threads,
                };
                match reference.time_step(batch, args.size, args.iters) {
                    Ok(v) => {
                        let theirs = v.get("mean_s").and_then(|m| m.as_f64()).unwrap_or(f64::NAN);
                        println!(
                            "diffusers batch {batch} {dtype} on {}: {theirs:.4} s/step → synfer/diffusers {:.2}×",
                            v.get("device").and_then(|d| d.as_str()).unwrap_or("?"),
                            ours.mean_s / theirs
                        );
                        refs.push(
                            json!({"dtype": dtype, "result": v, "ratio": ours.mean_s / theirs}),
                        );
                    }
                    Err(e) => {
                        println!("diffusers batch {batch} {dtype}: {e}");
                        refs.push(json!({"dtype": dtype, "error": e.to_string()}));
                    }
                }
                if let Some(row) = rows.last_mut() {
                    row["diffusers"] = json!(refs);
                }
                save(&rows)?;
            }
        }
    }
    Ok(())
}
