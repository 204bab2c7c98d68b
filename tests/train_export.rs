//! The diffusion stage's model plumbing: a trained model exports to a diffusers folder that
//! the strict loader reads back weight for weight, adapter-only training leaves everything
//! else untouched, and the latent scaling factor follows its formula.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::tensor::Device;
use synfer::Pipeline;
use synfer::dataset::metadata::Record;
use synfer::tensor::HostTensor;
use synfer::train::adamw::AdamWConfig;
use synfer::train::data::Dataset;
use synfer::train::denoiser::{Denoiser, Trainable};
use synfer::train::diffusion::{DiffusionStage, LatentCache, train_diffusion};
use synfer::train::folder::export_folder;
use synfer::train::model_files::ModelFiles;
use synfer::train::params;
use synfer::train::run::{LoopConfig, RunDir};
use synfer::train::vae::{TINY_VAE_CONFIG, init_vae};
use synfer::vae::VaeConfig;
use synfer::weights::TensorStore;
use synfer::weights::lora::LoraWeights;

const TOKENIZER: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/sd1-tiny/tokenizer"
);

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("synfer-export-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn tiny_files() -> ModelFiles {
    let vae = TINY_VAE_CONFIG.replace("\"scaling_factor\": 1.0", "\"scaling_factor\": 0.75");
    ModelFiles::tiny(Path::new(TOKENIZER), &vae).unwrap()
}

/// Every value rounded through f16, as the shipped files store it.
fn as_f16(values: &BTreeMap<String, HostTensor>) -> BTreeMap<String, HostTensor> {
    values
        .iter()
        .map(|(k, t)| {
            let data = t
                .data
                .iter()
                .map(|v| half::f16::from_f32(*v).to_f32())
                .collect();
            (
                k.clone(),
                HostTensor {
                    shape: t.shape.clone(),
                    data,
                },
            )
        })
        .collect()
}

#[test]
fn an_exported_model_loads_strictly_with_its_weights() {
    let device = Device::flex();
    let files = tiny_files();
    let denoiser = Denoiser::init(&files, 7, &device).unwrap();
    let vae_cfg = files.vae().unwrap();
    let vae = init_vae(&vae_cfg, 3, &device).unwrap();
    let out = temp_dir("folder");
    export_folder(&out, &files, &params::read(&denoiser), &params::read(&vae)).unwrap();
    for rel in [
        "model_index.json",
        "text_encoder/model.safetensors",
        "unet/diffusion_pytorch_model.safetensors",
        "vae/diffusion_pytorch_model.safetensors",
        "au_adapter/diffusion_pytorch_model.safetensors",
        "au_adapter/config.json",
        "tokenizer/vocab.json",
    ] {
        assert!(out.join(rel).is_file(), "{rel} missing");
    }
    // Pipeline::load is strict: a missing, unused or mis-shaped key fails here.
    let pipe = Pipeline::load(&out, &device).unwrap();
    assert_eq!(pipe.tokenizer().max_length(), 32);
    assert_eq!(pipe.info().default_size, 64);
    assert!(pipe.unet().has_au_adapter());
    let loaded_vae: VaeConfig =
        VaeConfig::from_json(&std::fs::read(out.join("vae/config.json")).unwrap(), "vae").unwrap();
    assert_eq!(loaded_vae.scaling_factor, 0.75);
    assert_eq!(params::read(pipe.vae()), as_f16(&params::read(&vae)));
    let reloaded = Denoiser::from_pipeline(pipe, &files, 0).unwrap();
    let (got, want) = (params::read(&reloaded), as_f16(&params::read(&denoiser)));
    assert_eq!(got.len(), want.len());
    for (k, v) in &want {
        assert_eq!(got.get(k), Some(v), "{k}");
    }
    let _ = std::fs::remove_dir_all(&out);
}

fn record(caption: &str, au12: f32) -> Record {
    serde_json::from_value(serde_json::json!({
        "file_name": "x.png", "caption": caption, "aus": {"AU12": au12},
        "expression": "happy", "probs": {}, "source": "test", "provenance": {}
    }))
    .unwrap()
}

/// Two steps of the diffusion stage on two flat images, training `trainable`.
fn train_two_steps(
    model: Denoiser,
    files: &ModelFiles,
    trainable: Trainable,
    name: &str,
) -> Denoiser {
    let device = Device::flex().autodiff();
    let records = vec![record("a smiling woman", 3.0), record("a calm man", 0.0)];
    let mut aus = vec![0.0; 24];
    aus[6] = 3.0; // AU12 is the 7th FineFace AU
    let data = Dataset {
        side: 64,
        pixels: vec![128; 2 * 64 * 64 * 3],
        records,
        aus,
    };
    let per = 4 * 16 * 16;
    let cache = LatentCache {
        shape: [4, 16, 16],
        mean: (0..4 * per).map(|i| ((i % 7) as f32 - 3.0) / 3.0).collect(),
        std: vec![0.1; 4 * per],
    };
    let stage = DiffusionStage {
        batch: 2,
        seed: 0,
        caption_dropout: 0.5,
        au_dropout: 0.5,
        scaling_factor: cache.scaling_factor(),
        trainable,
        min_snr_gamma: Some(5.0),
        lora_rank: None,
    };
    let cfg = LoopConfig {
        steps: 2,
        lr: 1e-3,
        warmup: 1,
        ema_decay: 0.0,
        checkpoint_every: 2,
        adamw: AdamWConfig::default(),
        cosine: false,
    };
    let dir = temp_dir(name);
    let run = RunDir::open(&dir).unwrap();
    let tokenizer = files.tokenizer().unwrap();
    let (trained, _) = train_diffusion(
        &run,
        &data,
        &cache,
        &tokenizer,
        model,
        &stage,
        &cfg,
        &device,
        |_| {},
    )
    .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    trained
}

fn is_adapter(path: &str) -> bool {
    path.starts_with("au_encoder.") || path.contains(".au.")
}

#[test]
fn adapter_training_moves_only_the_adapter() {
    let files = tiny_files();
    let model = Denoiser::init(&files, 1, &Device::flex().autodiff()).unwrap();
    let before = params::read(&model);
    let after = params::read(&train_two_steps(
        model,
        &files,
        Trainable::Adapter,
        "adapter",
    ));
    let mut adapter = 0;
    for (path, v) in &before {
        if is_adapter(path) {
            adapter += 1;
            assert_ne!(after[path], *v, "{path} did not train");
        } else {
            assert_eq!(after[path], *v, "{path} changed");
        }
    }
    // The encoder's weight and bias plus au_to_k/au_to_v of the 7 cross-attention layers
    // (2 down, 1 mid, 4 up).
    assert_eq!(adapter, 2 + 7 * 2);
}

/// LoRA training changes only the LoRA factors and the adapter; the exported folder (LoRA
/// merged) equals the base folder with the exported PEFT LoRA file merged by the loader.
#[test]
fn lora_training_exports_a_merged_folder_and_a_peft_file() {
    let device = Device::flex();
    let files = tiny_files();
    let vae = init_vae(&files.vae().unwrap(), 3, &device).unwrap();
    let mut model = Denoiser::init(&files, 2, &device.clone().autodiff()).unwrap();
    let base = params::read(&model);
    model.attach_lora(4, 9, &device.clone().autodiff());
    let trained = train_two_steps(model, &files, Trainable::Lora, "lora");
    let after = params::read(&trained);
    let mut ups = 0;
    for (path, v) in &after {
        if path.ends_with(".lora.up") {
            ups += 1;
            assert!(v.data.iter().any(|x| *x != 0.0), "{path} did not train");
        } else if !path.contains(".lora.") && !is_adapter(path) {
            assert_eq!(base[path], *v, "{path} changed");
        }
    }
    // to_q, to_k, to_v, to_out of attn1 and attn2 in 7 transformer blocks.
    assert_eq!(ups, 4 * 2 * 7);

    let base_dir = temp_dir("lora-base");
    export_folder(&base_dir, &files, &base, &params::read(&vae)).unwrap();
    let merged_dir = temp_dir("lora-merged");
    export_folder(&merged_dir, &files, &after, &params::read(&vae)).unwrap();
    let lora_file = merged_dir.join("lora/pytorch_lora_weights.safetensors");
    let lora = LoraWeights {
        store: TensorStore::from_bytes("lora", std::fs::read(&lora_file).unwrap()).unwrap(),
        scale: 1.0,
    };
    let with_file = params::read(
        Pipeline::builder(&base_dir)
            .device(&device)
            .lora(lora)
            .build()
            .unwrap()
            .unet(),
    );
    let merged = params::read(Pipeline::load(&merged_dir, &device).unwrap().unet());
    let mut compared = 0;
    for (path, want) in &merged {
        if is_adapter(path) {
            continue; // the base folder carries the untrained adapter
        }
        let got = &with_file[path];
        for (a, b) in got.data.iter().zip(&want.data) {
            // Both sides went through f16 once (merged then rounded vs rounded then merged).
            assert!(
                (a - b).abs() <= 2e-3 * (1.0 + b.abs()),
                "{path}: {a} vs {b}"
            );
        }
        compared += 1;
    }
    assert!(compared > 100);
    let _ = std::fs::remove_dir_all(&base_dir);
    let _ = std::fs::remove_dir_all(&merged_dir);
}

#[test]
fn scaling_factor_is_one_over_the_latent_standard_deviation() {
    // Means 1 and 3 (variance 1) plus sampling noise of variance 0.25 + 2.25 / 2:
    // σ² = 1 + 1.25, factor 1/1.5.
    let cache = LatentCache {
        shape: [1, 1, 1],
        mean: vec![1.0, 3.0],
        std: vec![0.5, 1.5],
    };
    assert!((cache.scaling_factor() - 1.0 / 1.5).abs() < 1e-9);
}
