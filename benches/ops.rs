//! `cargo bench --bench ops`: the UNet's heaviest ops at SD-1.5 shapes on flex vs PyTorch fp32
//! CPU (`tools/bench_ops.py`) in the same run, to see where the UNet ratio comes from.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Instant;

use burn::tensor::module::{attention, conv2d, linear};
use burn::tensor::ops::{AttentionModuleOptions, ConvOptions};
use burn::tensor::{Device, Distribution, Tensor};

fn time_ms<const D: usize>(mut f: impl FnMut() -> Tensor<D>) -> f64 {
    let _ = f().into_data();
    let start = Instant::now();
    for _ in 0..5 {
        let _ = f().into_data();
    }
    start.elapsed().as_secs_f64() * 200.0
}

fn main() {
    let d = Device::flex();
    let normal = |shape: [usize; 4], std: f64| {
        Tensor::<4>::random(shape, Distribution::Normal(0.0, std), &d)
    };
    let x = normal([2, 320, 32, 32], 1.0);
    let w3 = normal([320, 320, 3, 3], 0.02);
    let w1 = normal([320, 320, 1, 1], 0.02);
    let x8 = normal([2, 1280, 8, 8], 1.0);
    let w8 = normal([1280, 1280, 3, 3], 0.02);
    let q = normal([2, 8, 1024, 40], 1.0);
    let tokens = Tensor::<3>::random([2, 1024, 320], Distribution::Normal(0.0, 1.0), &d);
    let lw = Tensor::<2>::random([320, 2560], Distribution::Normal(0.0, 0.02), &d);
    let gn = synfer::nn::GroupNorm {
        weight: burn::module::Param::from_tensor(Tensor::ones([320], &d)),
        bias: burn::module::Param::from_tensor(Tensor::zeros([320], &d)),
        groups: 32,
        eps: 1e-5,
    };
    let opts = |pad| ConvOptions::new([1, 1], [pad, pad], [1, 1], 1);
    let no_mask = AttentionModuleOptions {
        scale: None,
        softcap: None,
        is_causal: false,
    };
    let mut ours = BTreeMap::new();
    ours.insert(
        "conv3x3_320_32x32",
        time_ms(|| conv2d(x.clone(), w3.clone(), None, opts(1))),
    );
    ours.insert(
        "conv1x1_320_32x32",
        time_ms(|| conv2d(x.clone(), w1.clone(), None, opts(0))),
    );
    ours.insert(
        "conv3x3_1280_8x8",
        time_ms(|| conv2d(x8.clone(), w8.clone(), None, opts(1))),
    );
    ours.insert(
        "attention_8x1024x40",
        time_ms(|| attention(q.clone(), q.clone(), q.clone(), None, None, no_mask)),
    );
    ours.insert("groupnorm_320_32x32", time_ms(|| gn.forward(x.clone())));
    ours.insert(
        "linear_2048x320x2560",
        time_ms(|| linear(tokens.clone(), lw.clone(), None)),
    );

    let python = synfer::bench::Reference::default_python();
    let theirs: BTreeMap<String, f64> = Command::new(&python)
        .arg("tools/bench_ops.py")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| serde_json::from_slice(&o.stdout).ok())
        .unwrap_or_default();
    println!(
        "{:<24} {:>10} {:>10} {:>7}",
        "op (batch 2, fp32)", "flex ms", "torch ms", "ratio"
    );
    for (op, ms) in &ours {
        match theirs.get(*op) {
            Some(t) => println!("{op:<24} {ms:>10.1} {t:>10.1} {:>6.2}×", ms / t),
            None => println!("{op:<24} {ms:>10.1} {:>10} {:>7}", "-", "-"),
        }
    }
}
