//! LCM-distilled UNets (`time_cond_proj_dim`): the guidance-scale embedding, the UNet with it,
//! and a one-step LCM generation (no noise drawn) against diffusers 0.42.1
//! (`tests/fixtures/lcm-tiny`, written by `tools/make_lcm_fixture.py`).

mod common;

use std::path::PathBuf;

use burn::tensor::{Device, Tensor};
use common::{fixture, host, load_refs, max_abs};
use synfer::pipeline::{GenerateOptions, GenerateRequest, Pipeline};
use synfer::unet::config::UNetConfig;
use synfer::unet::{UNet2DConditionModel, guidance_scale_embedding};
use synfer::weights::TensorStore;

#[test]
fn guidance_scale_embedding_matches_diffusers() {
    let refs = load_refs("lcm-tiny/reference.safetensors");
    let got = guidance_scale_embedding(&[0.5, 7.0], 8, &Device::flex());
    let (shape, values) = host(got);
    assert_eq!(shape, refs["embedding"].shape);
    let err = max_abs(&values, &refs["embedding"].data);
    assert!(err < 1e-5, "{err}");
}

#[test]
fn lcm_unet_takes_the_guidance_embedding() {
    let refs = load_refs("lcm-tiny/reference.safetensors");
    let device = Device::flex();
    let bytes = std::fs::read(fixture("lcm-tiny/unet/config.json")).unwrap();
    let cfg = UNetConfig::from_json(&bytes, "unet/config.json").unwrap();
    let weights =
        std::fs::read(fixture("lcm-tiny/unet/diffusion_pytorch_model.safetensors")).unwrap();
    let store = TensorStore::from_bytes("unet", weights).unwrap();
    let unet = UNet2DConditionModel::load(&store, &cfg, &device).unwrap();
    store.finish().unwrap();
    assert_eq!(unet.guidance_embedding_dim(), Some(8));
    let latents: Tensor<4> = refs["latents"].tensor(&device);
    let ehs: Tensor<3> = refs["encoder_hidden_states"].tensor(&device);
    let (w15, w8) = (&refs["unet.w1.5"], &refs["unet.w8.0"]);
    let apart = max_abs(&w15.data, &w8.data);
    for (g, want) in [(1.5f32, w15), (8.0, w8)] {
        let emb = guidance_scale_embedding(&[g - 1.0], 8, &device);
        let out = unet.forward_guided(latents.clone(), &[999.0], ehs.clone(), None, Some(&emb));
        let err = max_abs(&host(out).1, &want.data);
        // Far closer to its own reference than the two guidance scales are to each other.
        assert!(
            err < 1e-4 && err < apart / 100.0,
            "w {g}: {err} (outputs apart {apart})"
        );
    }
}

/// sd1-tiny's text encoder, tokenizer and VAE with the LCM UNet and scheduler, as one folder.
fn lcm_model() -> PathBuf {
    common::linked_model(
        "lcm",
        &[
            ("sd1-tiny", &["text_encoder", "tokenizer", "vae"]),
            ("lcm-tiny", &["unet", "scheduler", "model_index.json"]),
        ],
    )
}

#[test]
fn one_lcm_step_matches_diffusers() {
    let refs = load_refs("lcm-tiny/reference.safetensors");
    let dir = lcm_model();
    let pipe = Pipeline::load(&dir, &Device::flex()).unwrap();
    let latents = refs["latents"].host_tensor();
    for g in [1.5, 8.0] {
        let req = GenerateRequest {
            steps: 1,
            guidance_scale: g,
            width: Some(16),
            height: Some(16),
            ..GenerateRequest::new("a photo of a face")
        };
        let options = GenerateOptions {
            latents: Some(&latents),
            ..GenerateOptions::default()
        };
        let out = pipe.generate_with(&req, &options, |_| {}).unwrap();
        let err = max_abs(&out.images_f32[0], &refs[&format!("image.w{g:.1}")].data);
        assert!(err <= 2.0 / 255.0, "guidance {g}: {err}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
