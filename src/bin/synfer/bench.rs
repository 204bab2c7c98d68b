//! `synfer bench`: SD-1.5-shaped UNet steps on a device against diffusers in the same run.

use std::path::PathBuf;

use synfer::Result;
use synfer::bench::{Comparison, Reference};

#[derive(clap::Args)]
pub struct BenchArgs {
    /// synfer's side.
    #[command(flatten)]
    device: crate::DeviceArgs,
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
    /// Instead of timing: write an SD-1.5-shaped diffusers folder with random fp16 weights
    /// (2.1 GB; loading, memory and parity tests of real-size models) into this folder.
    #[arg(long, value_name = "DIR")]
    write_model: Option<PathBuf>,
}

pub fn run(args: BenchArgs) -> Result<()> {
    if let Some(dir) = &args.write_model {
        let written = synfer::bench::sd15_model::write(dir, 0)?;
        for (component, n) in &written.parameters {
            eprintln!("{component}: {n} parameters");
        }
        crate::print(&format!(
            "{}: {:.2} GB (SD-1.5 shapes, random fp16 weights)\n",
            dir.display(),
            written.bytes as f64 / 1e9
        ));
        return Ok(());
    }
    let selected = args.device.select()?;
    eprintln!(
        "SD-1.5-shaped UNet (random weights), {}², one CFG step per timing, on {}",
        args.size, selected.description
    );
    let comparison = Comparison {
        size: args.size,
        batches: args.batch,
        iters: args.iters,
        reference: args.reference,
        dtypes: args.reference_dtype,
        python: args.python.unwrap_or_else(Reference::default_python),
        out: args.out,
    };
    comparison.run(&selected.device, &selected.description, |line| {
        crate::print(&format!("{line}\n"))
    })?;
    Ok(())
}
