//! Single-file checkpoints in the original Stable Diffusion layout: the tiny SD 1.x and 2.x
//! fixtures written as A1111-style files by `tools/make_single_file_fixtures.py` (which checks
//! that diffusers' `from_single_file(config=folder)` loads them to the folder's weights) give the
//! folder's images; `.ckpt` (EMA inside) and `.safetensors`; the prediction type from the file's
//! metadata or the caller; configs inferred from shapes; damaged files are typed errors.

mod common;

use std::path::{Path, PathBuf};

use common::fixture;
use synfer::pipeline::single_file::{SingleFileOptions, open};
use synfer::pipeline::source::FileSource;
use synfer::pipeline::{GenerateRequest, ModelSource, Pipeline};

fn single(name: &str) -> PathBuf {
    fixture(&format!("single/{name}"))
}

fn options(config: Option<&str>) -> SingleFileOptions {
    SingleFileOptions {
        config: config.map(fixture),
        ..Default::default()
    }
}

fn request() -> GenerateRequest {
    GenerateRequest {
        steps: 4,
        seed: 9,
        width: Some(32),
        height: Some(32),
        ..GenerateRequest::new("a photo of a face")
    }
}

fn image(source: ModelSource) -> Vec<u8> {
    let pipe = Pipeline::builder(source).build().unwrap();
    pipe.generate(&request()).unwrap().images.remove(0)
}

fn folder_image(name: &str) -> Vec<u8> {
    image(ModelSource::Dir(fixture(name)))
}

/// The largest per-byte difference.
fn max_diff(a: &[u8], b: &[u8]) -> u8 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| x.abs_diff(*y)).max().unwrap()
}

#[test]
fn sd1_safetensors_and_ckpt_reproduce_the_folder() {
    let want = folder_image("sd1-tiny");
    for file in ["sd1-tiny.safetensors", "sd1-tiny-ema.ckpt"] {
        let got = image(ModelSource::SingleFile(
            single(file),
            options(Some("sd1-tiny")),
        ));
        assert!(
            max_diff(&got, &want) <= 2,
            "{file}: {}",
            max_diff(&got, &want)
        );
    }
    // The EMA copy (every UNet weight + 0.01) only with `ema`.
    let ema = image(ModelSource::SingleFile(
        single("sd1-tiny-ema.ckpt"),
        SingleFileOptions {
            ema: true,
            ..options(Some("sd1-tiny"))
        },
    ));
    assert!(max_diff(&ema, &want) > 2, "the EMA weights changed nothing");
    let err = Pipeline::builder(ModelSource::SingleFile(
        single("sd1-tiny.safetensors"),
        SingleFileOptions {
            ema: true,
            ..options(Some("sd1-tiny"))
        },
    ))
    .build()
    .unwrap_err()
    .to_string();
    assert!(err.contains("model_ema.diffusion_model"), "{err}");
}

#[test]
fn sd2_v_prediction_from_the_file_metadata() {
    let want = folder_image("sd2-tiny");
    let got = image(ModelSource::SingleFile(
        single("sd2-tiny.safetensors"),
        options(Some("sd2-tiny")),
    ));
    assert!(max_diff(&got, &want) <= 2, "{}", max_diff(&got, &want));
    // A config folder whose scheduler says epsilon: the file's `modelspec.prediction_type = v`
    // still decides, unless the caller says otherwise.
    let parts: &[&str] = &[
        "model_index.json",
        "text_encoder",
        "tokenizer",
        "unet",
        "vae",
    ];
    let dir = common::linked_model("sd2-eps", &[("sd2-tiny", parts)]);
    std::fs::create_dir_all(dir.join("scheduler")).unwrap();
    let text = std::fs::read_to_string(fixture("sd2-tiny/scheduler/scheduler_config.json"))
        .unwrap()
        .replace("\"v_prediction\"", "\"epsilon\"");
    std::fs::write(dir.join("scheduler/scheduler_config.json"), text).unwrap();
    let eps_config = SingleFileOptions {
        config: Some(dir.clone()),
        ..Default::default()
    };
    let got = image(ModelSource::SingleFile(
        single("sd2-tiny.safetensors"),
        eps_config.clone(),
    ));
    assert!(max_diff(&got, &want) <= 2, "{}", max_diff(&got, &want));
    let eps = image(ModelSource::SingleFile(
        single("sd2-tiny.safetensors"),
        SingleFileOptions {
            prediction_type: Some("epsilon".into()),
            ..eps_config
        },
    ));
    assert!(
        max_diff(&eps, &want) > 2,
        "--prediction-type epsilon changed nothing"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn json(src: &dyn FileSource, rel: &str) -> serde_json::Value {
    serde_json::from_slice(&src.require(rel).unwrap()).unwrap()
}

#[test]
fn configs_are_inferred_from_the_weights() {
    // Without --config: what the shapes say matches the folder's config; the rest (heads,
    // group norm) takes SD 1.x's standard values, and CLIP's BPE is the tokenizer.
    for (file, folder) in [
        ("sd1-tiny.safetensors", "sd1-tiny"),
        ("sd2-tiny.safetensors", "sd2-tiny"),
    ] {
        let src = open(&single(file), &SingleFileOptions::default()).unwrap();
        let folder_src = synfer::pipeline::source::DirSource::new(fixture(folder)).unwrap();
        for (rel, keys) in [
            (
                "unet/config.json",
                &[
                    "block_out_channels",
                    "layers_per_block",
                    "down_block_types",
                    "up_block_types",
                    "cross_attention_dim",
                    "in_channels",
                    "out_channels",
                    "use_linear_projection",
                ][..],
            ),
            (
                "vae/config.json",
                &[
                    "block_out_channels",
                    "layers_per_block",
                    "latent_channels",
                    "down_block_types",
                ][..],
            ),
            (
                "text_encoder/config.json",
                &[
                    "hidden_size",
                    "intermediate_size",
                    "vocab_size",
                    "max_position_embeddings",
                    "hidden_act",
                ][..],
            ),
        ] {
            let (got, want) = (json(&src, rel), json(&folder_src, rel));
            for key in keys {
                let want = match (&want[*key], key) {
                    (serde_json::Value::Null, &"use_linear_projection") => serde_json::json!(false),
                    (v, _) => v.clone(),
                };
                assert_eq!(got[*key], want, "{file}: {rel} {key}");
            }
        }
        // SD 2.x runs the penultimate text layer: one layer fewer than the file holds.
        let layers = json(&src, "text_encoder/config.json")["num_hidden_layers"].clone();
        let folder_layers = json(&folder_src, "text_encoder/config.json")["num_hidden_layers"]
            .as_u64()
            .unwrap();
        let expected = if folder == "sd2-tiny" {
            folder_layers - 1
        } else {
            folder_layers
        };
        assert_eq!(layers, expected, "{file}");
        assert!(src.read("tokenizer/vocab.json").unwrap().unwrap().len() > 900_000);
        let scheduler = json(&src, "scheduler/scheduler_config.json");
        let (class, prediction) = if folder == "sd2-tiny" {
            ("DDIMScheduler", "v_prediction")
        } else {
            ("PNDMScheduler", "epsilon")
        };
        assert_eq!(scheduler["_class_name"], class);
        assert_eq!(scheduler["prediction_type"], prediction);
    }
}

/// `bytes` with its safetensors key `from` renamed to `to` (same length, so offsets hold).
fn rename_key(bytes: &[u8], from: &str, to: &str) -> Vec<u8> {
    assert_eq!(from.len(), to.len());
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header = std::str::from_utf8(&bytes[8..8 + header_len]).unwrap();
    assert!(header.contains(from));
    let mut out = bytes[..8].to_vec();
    out.extend_from_slice(header.replacen(from, to, 1).as_bytes());
    out.extend_from_slice(&bytes[8 + header_len..]);
    out
}

fn load_err(path: &Path) -> String {
    Pipeline::builder(ModelSource::SingleFile(
        path.to_path_buf(),
        options(Some("sd1-tiny")),
    ))
    .build()
    .unwrap_err()
    .to_string()
}

#[test]
fn damaged_or_foreign_files_are_typed_errors() {
    let dir = std::env::temp_dir().join(format!("synfer-single-bad-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let bytes = std::fs::read(single("sd1-tiny.safetensors")).unwrap();
    // Truncated.
    let cut = dir.join("cut.safetensors");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let err = load_err(&cut);
    assert!(err.contains("cut.safetensors"), "{err}");
    // A key of no known layout.
    let odd = dir.join("odd.safetensors");
    let key = "model.diffusion_model.out.2.weight";
    std::fs::write(
        &odd,
        rename_key(&bytes, key, "model.diffusion_model.zzz.2.weight"),
    )
    .unwrap();
    let err = load_err(&odd);
    assert!(err.contains("model.diffusion_model.zzz.2.weight"), "{err}");
    // A missing weight: the pipeline names the diffusers key it needs.
    let gone = dir.join("gone.safetensors");
    std::fs::write(
        &gone,
        rename_key(&bytes, key, "model_ema.diffusion_model_out.2.wt"),
    )
    .unwrap();
    let err = load_err(&gone);
    assert!(err.contains("conv_out.weight"), "{err}");
    // Not a checkpoint of this layout at all (a diffusers UNet file).
    let err = load_err(&fixture(
        "sd1-tiny/unet/diffusion_pytorch_model.safetensors",
    ));
    assert!(err.contains("cond_stage_model"), "{err}");
    // Another extension.
    let txt = dir.join("model.bin");
    std::fs::write(&txt, b"x").unwrap();
    let err = load_err(&txt);
    assert!(err.contains(".safetensors or .ckpt"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
