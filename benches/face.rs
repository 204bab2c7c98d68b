//! `cargo bench --bench face`: faces analysed per second by [`FaceAnalyzer::analyze`]
//! (BlazeFace, crop, FER A, FER B, FaceMesh, AU estimate) on flex, over the 11 franck video
//! frames of `tests/fixtures/face/franck/` (360×288, one face each), and the same four original
//! models chained the same way in tfjs 4.22.0 (pure-JS CPU backend in Node,
//! `tools/face/bench_face.js`) in the same run, then the ratio.
//!
//! Node: `$SYNFER_NODE`, else `node`; needs `npm ci` in `tools/face`. Passes:
//! `$SYNFER_BENCH_ITERS` (default 3) after one warm-up pass. flex uses every core
//! (`RAYON_NUM_THREADS=1` for one); tfjs's CPU backend uses one.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use burn::tensor::Device;
use synfer::face::analyzer::FaceAnalyzer;
use synfer::image::RgbView;

fn main() {
    let iters: usize = std::env::var("SYNFER_BENCH_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/face/franck");
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .expect("tests/fixtures/face/franck")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "png"))
        .collect();
    names.sort();
    let frames: Vec<image::RgbImage> = names
        .iter()
        .map(|p| image::open(p).expect("png").to_rgb8())
        .collect();
    let (w, h) = (frames[0].width() as usize, frames[0].height() as usize);
    assert!(
        frames
            .iter()
            .all(|f| (f.width(), f.height()) == (w as u32, h as u32))
    );

    let device = Device::flex();
    let analyzer = FaceAnalyzer::embedded(&device).expect("embedded face models");
    let pass = || -> usize {
        frames
            .iter()
            .map(|f| {
                let view = RgbView::new(w, h, f.as_raw()).expect("frame");
                analyzer.analyze(view).expect("analysis").len()
            })
            .sum()
    };
    pass();
    let start = Instant::now();
    let faces: usize = (0..iters).map(|_| pass()).sum();
    let secs = start.elapsed().as_secs_f64();
    let ours = faces as f64 / secs;
    let threads = std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    println!(
        "synfer flex: {ours:.2} faces/s ({faces} faces in {secs:.2} s, {} frames {w}×{h}, {threads} threads)",
        frames.len()
    );

    let raw = std::env::temp_dir().join(format!("synfer-bench-face-{}.rgb", std::process::id()));
    let bytes: Vec<u8> = frames
        .iter()
        .flat_map(|f| f.as_raw().iter().copied())
        .collect();
    std::fs::write(&raw, bytes).expect("temp frames");
    let node = std::env::var("SYNFER_NODE").unwrap_or_else(|_| "node".into());
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/face/bench_face.js");
    let mut cmd = Command::new(&node);
    cmd.arg(&script)
        .arg(&raw)
        .args([w, h, frames.len(), iters].map(|v| v.to_string()));
    let what = format!("tfjs reference ({node})");
    let v = common::run_json(&mut cmd, &what, "run `npm ci` in tools/face");
    let _ = std::fs::remove_file(&raw);
    let Some(v) = v else { return };
    match v.get("faces_per_s").and_then(|m| m.as_f64()) {
        Some(theirs) => println!(
            "tfjs {} ({} backend, Node, 1 thread): {theirs:.2} faces/s\n\
             ratio synfer/tfjs: {:.2}× faces per second (higher is better)",
            v.get("tfjs").and_then(|t| t.as_str()).unwrap_or("?"),
            v.get("backend").and_then(|t| t.as_str()).unwrap_or("?"),
            ours / theirs
        ),
        None => println!("tfjs reference printed no timing: {v}"),
    }
}
