//! `cargo bench --bench unet`: one CFG step of an SD-1.5-shaped UNet (random weights, 1 image →
//! UNet batch 2, 32×32 latent, 77×768 context) on flex, and the same in diffusers (PyTorch fp32
//! CPU) in the same run, then the ratio. `synfer bench` does the same for any device and size.
//!
//! Python: `$SYNFER_PYTHON`, else `.venv/bin/python`, else `python3` (needs the packages of
//! `tools/requirements.txt`). Iterations: `$SYNFER_BENCH_ITERS` (default 3).

use burn::tensor::Device;
use synfer::bench::{Reference, sd15_unet, time_step};

fn main() {
    let iters: usize = std::env::var("SYNFER_BENCH_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let device = Device::flex();
    let unet = sd15_unet(&device).expect("builds");
    let ours = time_step(&unet, &device, 1, 256, iters).expect("runs");
    println!(
        "synfer flex: mean {:.3} s, min {:.3} s over {iters} forwards ({threads} threads)",
        ours.mean_s, ours.min_s
    );
    let reference = Reference {
        python: Reference::default_python(),
        device: "cpu".into(),
        dtype: "fp32".into(),
        threads,
    };
    match reference.time_step(1, 256, iters) {
        Ok(v) => match v.get("mean_s").and_then(|m| m.as_f64()) {
            Some(theirs) => println!(
                "diffusers (torch {} fp32 CPU): mean {theirs:.3} s\nratio synfer/diffusers: {:.2}× (lower is better)",
                v.get("torch").and_then(|t| t.as_str()).unwrap_or("?"),
                ours.mean_s / theirs
            ),
            None => println!("diffusers reference printed no timing: {v}"),
        },
        Err(e) => println!("{e}; see tools/README.md"),
    }
}
