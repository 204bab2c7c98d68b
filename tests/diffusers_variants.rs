//! Parity with diffusers on the randomly varied UNet/VAE/scheduler configs of
//! `tests/fixtures/variants/` (made by `tools/make_variant_fixtures.py`). Each variant folder
//! holds `model_index.json`, `unet/`, `vae/`, `scheduler/` and its references; the tokenizer and
//! text encoder come from `sd1-tiny`, joined in memory. `SYNFER_VARIANTS_DIR` points the test at
//! another folder of variants (`tools/make_variant_fixtures.py --random N --out DIR`).

mod common;

use std::path::Path;

use burn::tensor::{Device, Tensor};
use common::{e2e_request, fixture, host, load_refs, max_abs, rel_l2};
use synfer::GenerateOptions;
use synfer::pipeline::Pipeline;
use synfer::pipeline::source::MemorySource;

const TOL: f64 = 1e-4;
const E2E_TOL: f64 = 2.0 / 255.0;

/// Adds every file of `root/dir` to `src` under `dir/`.
fn insert_dir(src: &mut MemorySource, root: &Path, dir: &str) {
    for entry in std::fs::read_dir(root.join(dir)).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            let name = path.file_name().unwrap().to_str().unwrap();
            src.insert(&format!("{dir}/{name}"), std::fs::read(&path).unwrap());
        }
    }
}

/// sd1-tiny's tokenizer and text encoder + the variant's model_index, unet, vae and scheduler.
fn assemble(variant: &Path) -> MemorySource {
    let mut src = MemorySource::new(variant.display().to_string());
    let sd1 = fixture("sd1-tiny");
    insert_dir(&mut src, &sd1, "tokenizer");
    insert_dir(&mut src, &sd1, "text_encoder");
    for dir in ["unet", "vae", "scheduler"] {
        insert_dir(&mut src, variant, dir);
    }
    src.insert(
        "model_index.json",
        std::fs::read(variant.join("model_index.json")).unwrap(),
    );
    src
}

/// Relative L2 of `ours` against reference `key`, or a shape-mismatch message.
fn compare<const D: usize>(
    ours: Tensor<D>,
    refs: &std::collections::HashMap<String, common::Ref>,
    key: &str,
) -> Result<f64, String> {
    let (shape, data) = host(ours);
    let r = &refs[key];
    if shape != r.shape {
        return Err(format!("{key}: shape {shape:?} != reference {:?}", r.shape));
    }
    Ok(rel_l2(&data, &r.data))
}

/// Runs every check of one variant; returns the measured errors, or what failed.
fn check(dir: &Path, meta: &serde_json::Value) -> Result<String, String> {
    let p = Pipeline::from_source(&assemble(dir), &Device::flex())
        .map_err(|e| format!("loading failed: {e}"))?;
    // An absolute path replaces the fixture root (`SYNFER_VARIANTS_DIR`).
    let r = load_refs(dir.join("reference.safetensors").to_str().unwrap());
    let mut failures = Vec::new();
    let mut report = Vec::new();
    let mut judge = |what: &str, err: Result<f64, String>, tol: f64| match err {
        Ok(e) => {
            report.push(format!("{what} {e:.2e}"));
            if e.is_nan() || e > tol {
                failures.push(format!("{what} = {e:.3e} > {tol:.1e}"));
            }
        }
        Err(m) => failures.push(m),
    };

    let unet = p.unet().forward(
        r["unet.sample"].tensor(p.device()),
        &r["unet.timestep"].data,
        r["unet.encoder_hidden_states"].tensor(p.device()),
    );
    judge("unet rel L2", compare(unet, &r, "unet.out"), TOL);

    let dec = p.vae().decode(r["vae.latents"].tensor(p.device()));
    judge("vae decode rel L2", compare(dec, &r, "vae.dec_out"), TOL);
    let dist = p.vae().encode(r["vae.image"].tensor(p.device()));
    judge(
        "vae enc mean rel L2",
        compare(dist.mean, &r, "vae.enc_mean"),
        TOL,
    );
    judge(
        "vae enc logvar rel L2",
        compare(dist.logvar, &r, "vae.enc_logvar"),
        TOL,
    );

    let req = e2e_request(meta);
    let latents = r["e2e.latents"].host_tensor();
    match p.generate_with(&req, &GenerateOptions::with_latents(&latents), |_| {}) {
        Ok(out) => {
            let reference = &r["e2e.image"];
            let err = if out.images_f32[0].len() == reference.data.len() {
                Ok(max_abs(&out.images_f32[0], &reference.data))
            } else {
                Err(format!(
                    "e2e image: {} values != reference {:?}",
                    out.images_f32[0].len(),
                    reference.shape
                ))
            };
            judge("e2e max abs", err, E2E_TOL);
        }
        Err(err) => failures.push(format!("generate failed: {err}")),
    }

    if failures.is_empty() {
        Ok(report.join(", "))
    } else {
        Err(format!(
            "{} (measured: {})",
            failures.join("; "),
            report.join(", ")
        ))
    }
}

/// Every folder of `tests/fixtures/variants/`, or of `$SYNFER_VARIANTS_DIR` when set (e.g. the
/// output of `tools/make_variant_fixtures.py --random N --out DIR`).
#[test]
fn every_variant_matches_diffusers() {
    let root = std::env::var_os("SYNFER_VARIANTS_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| fixture("variants"));
    let mut dirs: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    assert!(!dirs.is_empty(), "no variant folders in {root:?}");
    let mut failed = Vec::new();
    for dir in &dirs {
        let name = dir.file_name().unwrap().to_str().unwrap().to_string();
        let meta: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("reference.json")).unwrap()).unwrap();
        match check(dir, &meta) {
            Ok(report) => eprintln!("{name}: ok ({report})"),
            Err(why) => {
                eprintln!("{name}: FAILED: {why}");
                failed.push(format!(
                    "variant {name}: {why}\n  covers: {}\n  config: {}",
                    meta["covers"].as_str().unwrap_or("?"),
                    meta["config"]
                ));
            }
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {} variants disagree with diffusers:\n{}",
        failed.len(),
        dirs.len(),
        failed.join("\n")
    );
}
