//! `cargo bench --bench unet`: one forward of an SD-1.5-shaped UNet (random weights, batch 2,
//! 32×32 latent, 77×768 context) on flex, and the same in diffusers (PyTorch fp32 CPU) in the
//! same run, then the ratio.
//!
//! Python: `$SYNFER_PYTHON`, else `.venv/bin/python`, else `python3` (needs the packages of
//! `tools/requirements.txt`). Iterations: `$SYNFER_BENCH_ITERS` (default 3).

mod common;

use std::process::Command;
use std::time::Instant;

use burn::tensor::{Device, Tensor, TensorData};
use synfer::unet::{UNet2DConditionModel, UNetConfig};
use synfer::weights::TensorStore;

const SD15_UNET: &str = r#"{
  "block_out_channels": [320, 640, 1280, 1280], "layers_per_block": 2,
  "attention_head_dim": 8, "cross_attention_dim": 768, "norm_num_groups": 32,
  "in_channels": 4, "out_channels": 4, "sample_size": 32
}"#;

fn main() {
    let iters: usize = std::env::var("SYNFER_BENCH_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let device = Device::flex();
    let cfg = UNetConfig::from_json(SD15_UNET.as_bytes(), "bench").expect("valid config");
    let store = TensorStore::synthetic("bench", 0);
    let unet = UNet2DConditionModel::load(&store, &cfg, &device).expect("builds");

    let noise = synfer::pipeline::seeded_noise(1, &[2, 4, 32, 32]).data;
    let ctx = synfer::pipeline::seeded_noise(2, &[2, 77, 768]).data;
    let run = || {
        let x = Tensor::<4>::from_data(TensorData::new(noise.clone(), [2, 4, 32, 32]), &device);
        let c = Tensor::<3>::from_data(TensorData::new(ctx.clone(), [2, 77, 768]), &device);
        let start = Instant::now();
        let out = unet.forward(x, &[500.0], c);
        let _ = out.into_data();
        start.elapsed().as_secs_f64()
    };
    run();
    let times: Vec<f64> = (0..iters).map(|_| run()).collect();
    let ours = times.iter().sum::<f64>() / iters as f64;
    let ours_min = times.iter().cloned().fold(f64::INFINITY, f64::min);
    println!(
        "synfer flex: mean {ours:.3} s, min {ours_min:.3} s over {iters} forwards ({threads} threads)"
    );

    let python = std::env::var("SYNFER_PYTHON").unwrap_or_else(|_| {
        if std::path::Path::new(".venv/bin/python").exists() {
            ".venv/bin/python".into()
        } else {
            "python3".into()
        }
    });
    let mut cmd = Command::new(&python);
    cmd.args([
        "tools/bench_unet.py",
        &threads.to_string(),
        &iters.to_string(),
    ]);
    let what = format!("diffusers reference ({python})");
    let Some(v) = common::run_json(&mut cmd, &what, "see tools/README.md") else {
        return;
    };
    match v.get("mean_s").and_then(|m| m.as_f64()) {
        Some(theirs) => println!(
            "diffusers (torch {} fp32 CPU): mean {theirs:.3} s\nratio synfer/diffusers: {:.2}× (lower is better)",
            v.get("torch").and_then(|t| t.as_str()).unwrap_or("?"),
            ours / theirs
        ),
        None => println!("diffusers reference printed no timing: {v}"),
    }
}
