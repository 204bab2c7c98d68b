//! AU adapter (FineFace layout and our `au_adapter/` folder format) and LoRA merging, against
//! the PyTorch reference of `tools/make_au_fixtures.py` (`tests/fixtures/au/`).
//!
//! The model is assembled in memory: `sd1-tiny`'s tokenizer, text encoder, VAE and scheduler +
//! the AU fixture's SD-2.x-shaped UNet. Adapters and LoRAs go through
//! [`read_adapter`] and [`Pipeline::builder`], the paths the CLI uses.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use common::{Ref, assert_close, fixture, load_refs, max_abs, rel_l2};
use synfer::Error;
use synfer::GenerateOptions;
use synfer::au::AdapterWeights;
use synfer::au::adapter::read_adapter;
use synfer::au::{AuVector, FINEFACE};
use synfer::pipeline::source::MemorySource;
use synfer::pipeline::{GenerateOutput, GenerateRequest, Pipeline};
use synfer::unet::attention::AuContext;
use synfer::weights::lora::LoraWeights;

const TOL: f64 = 1e-4;
const E2E_TOL: f64 = 2.0 / 255.0;
const REFS: &str = "au/reference.safetensors";
/// The two AU rows of the UNet references (batch order).
const AU_ROWS: [&str; 2] = ["AU12=4,AU6=3", "AU1=2,AU26=5"];
/// `au_scale` values with a reference, and their key tags.
const AU_SCALES: [(f64, &str); 3] = [(0.0, "au0p0"), (1.0, "au1p0"), (2.5, "au2p5")];

fn au(rel: &str) -> PathBuf {
    fixture("au").join(rel)
}

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

/// sd1-tiny's model_index, tokenizer, text encoder, VAE and scheduler + the AU UNet; with
/// `folder_adapter`, that fixture folder becomes the model's own `au_adapter/`.
fn source(folder_adapter: Option<&str>) -> MemorySource {
    let sd1 = fixture("sd1-tiny");
    let mut src = MemorySource::new("sd1-tiny + au/unet");
    src.insert(
        "model_index.json",
        std::fs::read(sd1.join("model_index.json")).unwrap(),
    );
    for dir in ["tokenizer", "text_encoder", "vae", "scheduler"] {
        insert_dir(&mut src, &sd1, dir);
    }
    insert_dir(&mut src, &fixture("au"), "unet");
    if let Some(dir) = folder_adapter {
        for file in ["config.json", "diffusion_pytorch_model.safetensors"] {
            src.insert(
                &format!("au_adapter/{file}"),
                std::fs::read(au(dir).join(file)).unwrap(),
            );
        }
    }
    src
}

fn load(
    src: &MemorySource,
    adapter: Option<AdapterWeights>,
    loras: Vec<LoraWeights>,
) -> Result<Pipeline, Error> {
    let builder = Pipeline::builder(src).loras(loras);
    match adapter {
        Some(a) => builder.adapter(a),
        None => builder,
    }
    .build()
}

/// The pipeline with FineFace's three files (adapter + LoRA at `lora_scale`).
fn fineface(lora_scale: f32) -> Pipeline {
    let (adapter, mut loras) = read_adapter(&[au("fineface")]).unwrap();
    assert_eq!(loras.len(), 1, "the FineFace folder has one LoRA");
    loras[0].scale = lora_scale;
    load(&source(None), Some(adapter), loras).unwrap()
}

fn au_rows() -> [AuVector; 2] {
    AU_ROWS.map(|s| AuVector::parse(FINEFACE, s).unwrap())
}

/// The reference's AU rows are the parsed ones (guards the AU order on both sides).
fn check_au_rows(r: &std::collections::HashMap<String, Ref>) {
    let values: Vec<f32> = au_rows().iter().flat_map(|v| v.values().to_vec()).collect();
    assert_eq!(
        values, r["unet.aus"].data,
        "AU vectors differ from unet.aus"
    );
}

/// Encodes the two AU rows, checks the tokens against `tokens_key`, runs the UNet at every
/// `au_scale` and checks `{prefix}.{tag}.out`.
fn check_unet(p: &Pipeline, prefix: &str, tokens_key: &str) {
    let r = load_refs(REFS);
    check_au_rows(&r);
    assert!(p.unet().has_au_adapter(), "{prefix}: no AU branch attached");
    let adapter = p.au_adapter().expect("AU adapter");
    let [v1, v2] = au_rows();
    let tokens = adapter.encoder.encode(&[&v1, &v2], p.device());
    assert_close(
        &format!("{prefix} AU tokens"),
        tokens.clone(),
        &r[tokens_key],
        1e-6,
    );
    for (scale, tag) in AU_SCALES {
        let out = p.unet().forward_au(
            r["unet.sample"].tensor(p.device()),
            &r["unet.timestep"].data,
            r["unet.encoder_hidden_states"].tensor(p.device()),
            Some(&AuContext {
                tokens: tokens.clone(),
                scale,
            }),
        );
        assert_close(
            &format!("{prefix} unet au_scale {scale}"),
            out,
            &r[&format!("{prefix}.{tag}.out")],
            TOL,
        );
    }
}

#[test]
fn fineface_unet_with_lora_and_aus() {
    // A successful load is the proof that every key of the three files was used: the adapter
    // store and the LoRA store are both checked with `finish()`.
    let p = fineface(1.0);
    check_unet(&p, "unet.lora", "unet.au_tokens");
    // Without AU tokens the branch is skipped: the LoRA-merged UNet alone.
    let r = load_refs(REFS);
    let out = p.unet().forward(
        r["unet.sample"].tensor(p.device()),
        &r["unet.timestep"].data,
        r["unet.encoder_hidden_states"].tensor(p.device()),
    );
    assert_close("fineface unet, no AU tokens", out, &r["unet.lora.out"], TOL);
}

#[test]
fn fineface_lora_merge_scale() {
    let p = fineface(0.5);
    let r = load_refs(REFS);
    let [v1, v2] = au_rows();
    let tokens = p
        .au_adapter()
        .unwrap()
        .encoder
        .encode(&[&v1, &v2], p.device());
    let out = p.unet().forward_au(
        r["unet.sample"].tensor(p.device()),
        &r["unet.timestep"].data,
        r["unet.encoder_hidden_states"].tensor(p.device()),
        Some(&AuContext { tokens, scale: 1.0 }),
    );
    assert_close(
        "fineface, LoRA merged at 0.5, au_scale 1",
        out,
        &r["unet.lora0p5.au1p0.out"],
        TOL,
    );
}

#[test]
fn lora_in_older_diffusers_key_style() {
    // Same update as FineFace's PEFT-style file, written with `lora.down` / `lora.up` keys.
    let files = [
        au("fineface/attn_processors.ckpt"),
        au("fineface/au_encoder.ckpt"),
        au("lora_diffusers/pytorch_lora_weights.safetensors"),
    ];
    let (adapter, loras) = read_adapter(&files).unwrap();
    assert_eq!(loras.len(), 1);
    let p = load(&source(None), Some(adapter), loras).unwrap();
    check_unet(&p, "unet.lora", "unet.au_tokens");
}

#[test]
fn lora_in_kohya_key_style() {
    // Same update again, kohya / sd-scripts keys (`lora_unet_<module>.lora_down.weight`, `.alpha`
    // = r/2 with `lora_up` doubled), written by tools/make_kohya_lora_fixture.py, which checks
    // that diffusers reads it as the same update.
    let files = [
        au("fineface/attn_processors.ckpt"),
        au("fineface/au_encoder.ckpt"),
        au("lora_kohya/pytorch_lora_weights.safetensors"),
    ];
    let (adapter, loras) = read_adapter(&files).unwrap();
    assert_eq!(loras.len(), 1);
    let p = load(&source(None), Some(adapter), loras).unwrap();
    check_unet(&p, "unet.lora", "unet.au_tokens");
}

#[test]
fn au_adapter_folder_padded_tokens() {
    // Our own format, AU encoder hidden 2: 12 + 2 = 14 values zero-padded to 16.
    let (adapter, loras) = read_adapter(&[au("au_adapter")]).unwrap();
    assert!(loras.is_empty());
    assert_eq!(adapter.config.hidden_dim, 2);
    let p = load(&source(None), Some(adapter), loras).unwrap();
    check_unet(&p, "unet.adapter", "unet.adapter.au_tokens");
}

#[test]
fn au_adapter_as_model_component() {
    // The same folder as the model's own `au_adapter/` component.
    let p = load(&source(Some("au_adapter")), None, Vec::new()).unwrap();
    check_unet(&p, "unet.adapter", "unet.adapter.au_tokens");
}

#[test]
fn au_adapter_two_tokens() {
    // Two AU tokens (hidden 3 each, padded 15 -> 16): the softmax over AU keys is no longer
    // trivially 1, so `au_to_k` matters.
    let (adapter, loras) = read_adapter(&[au("au_adapter_2tok")]).unwrap();
    assert_eq!(adapter.config.num_tokens, 2);
    let p = load(&source(None), Some(adapter), loras).unwrap();
    check_unet(&p, "unet.adapter2tok", "unet.adapter2tok.au_tokens");
}

fn e2e_request(au_scale: Option<f64>) -> GenerateRequest {
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(au("reference.json")).unwrap()).unwrap();
    let e = &meta["e2e"];
    let aus = au_scale.map(|_| {
        let v = AuVector::parse(FINEFACE, e["aus"].as_str().unwrap()).unwrap();
        v.active()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect::<BTreeMap<_, _>>()
    });
    GenerateRequest {
        aus,
        au_scale,
        ..common::e2e_request(&meta)
    }
}

fn generate(p: &Pipeline, req: &GenerateRequest) -> GenerateOutput {
    let latents = load_refs(REFS)["e2e.latents"].host_tensor();
    p.generate_with(req, &GenerateOptions::with_latents(&latents), |_| {})
        .unwrap()
}

fn check_image(what: &str, out: &GenerateOutput, reference: &Ref) {
    let err = max_abs(&out.images_f32[0], &reference.data);
    eprintln!(
        "{what}: max abs = {err:.3e} ({:.3}/255), relative L2 = {:.3e}",
        err * 255.0,
        rel_l2(&out.images_f32[0], &reference.data)
    );
    assert!(err <= E2E_TOL, "{what}: max abs {err} > 2/255");
}

#[test]
fn end_to_end_fineface() {
    let p = fineface(1.0);
    let r = load_refs(REFS);
    // The unconditional half gets all-zero AUs, the conditional half the requested ones.
    let (aus, ctx) = p.au_conditioning(&e2e_request(Some(1.0)), 1, true).unwrap();
    assert_eq!(
        aus.unwrap().to_spec(),
        AuVector::parse(FINEFACE, "AU12=4,AU6=3").unwrap().to_spec()
    );
    let ctx = ctx.unwrap();
    assert_eq!(ctx.scale, 1.0);
    assert_close(
        "e2e AU tokens [uncond, cond]",
        ctx.tokens,
        &r["e2e.au_tokens"],
        1e-6,
    );

    let out = generate(&p, &e2e_request(Some(1.0)));
    assert_eq!(out.au_scale, Some(1.0));
    check_image("fineface end to end, au_scale 1", &out, &r["e2e.image"]);
}

#[test]
fn end_to_end_au_scale_zero_is_the_plain_pipeline() {
    let r = load_refs(REFS);
    let with_adapter = generate(&fineface(1.0), &e2e_request(Some(0.0)));
    check_image(
        "fineface end to end, au_scale 0",
        &with_adapter,
        &r["e2e.image_au0"],
    );
    // Same LoRA, no adapter, no AUs in the request.
    let (_, loras) = read_adapter(&[au("fineface")]).unwrap();
    let plain = load(&source(None), None, loras).unwrap();
    assert!(!plain.unet().has_au_adapter());
    let plain_out = generate(&plain, &e2e_request(None));
    check_image("LoRA only, no adapter", &plain_out, &r["e2e.image_au0"]);
    assert_eq!(
        with_adapter.images_f32, plain_out.images_f32,
        "au_scale 0 must reproduce the pipeline without the adapter exactly"
    );
}

#[test]
fn truncated_checkpoint_is_a_typed_error() {
    let bad = au("bad/truncated/attn_processors.ckpt");
    let files = [bad.clone(), au("fineface/au_encoder.ckpt")];
    let err = read_adapter(&files).expect_err("a truncated zip must not load");
    eprintln!("truncated ckpt: {err}");
    match &err {
        Error::TorchArchive { file, .. } => {
            assert_eq!(file, bad.to_str().unwrap(), "error must name the file")
        }
        other => panic!("expected TorchArchive, got {other:?}"),
    }
}

#[test]
fn lora_with_wrong_shape_is_a_typed_error() {
    let files = [
        au("fineface/attn_processors.ckpt"),
        au("fineface/au_encoder.ckpt"),
        au("bad/lora_shape/pytorch_lora_weights.safetensors"),
    ];
    let (adapter, loras) = read_adapter(&files).unwrap();
    let err = load(&source(None), Some(adapter), loras).expect_err("mis-shaped LoRA");
    eprintln!("mis-shaped LoRA: {err}");
    match &err {
        Error::ShapeMismatch { file, key, .. } => {
            assert!(file.contains("bad/lora_shape"), "{err}");
            assert!(
                key.contains(
                    "unet.down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.lora_A.weight"
                ),
                "{err}"
            );
        }
        other => panic!("expected ShapeMismatch, got {other:?}"),
    }
}

#[test]
fn lora_for_a_missing_module_is_a_typed_error() {
    // diffusers silently ignores this key; we refuse it (every LoRA key must land on a weight).
    let files = [
        au("fineface/attn_processors.ckpt"),
        au("fineface/au_encoder.ckpt"),
        au("bad/lora_unknown_module/pytorch_lora_weights.safetensors"),
    ];
    let (adapter, loras) = read_adapter(&files).unwrap();
    let err = load(&source(None), Some(adapter), loras).expect_err("LoRA for a missing module");
    let msg = err.to_string();
    eprintln!("LoRA for a missing module: {msg}");
    assert!(msg.contains("bad/lora_unknown_module"), "{msg}");
    assert!(
        msg.contains("mid_block.attentions.0.transformer_blocks.0.attn3.to_q"),
        "{msg}"
    );
}

#[test]
fn base_unet() {
    // The UNet alone (no LoRA, no adapter): isolates the SD-2.x-shaped base model.
    let p = load(&source(None), None, Vec::new()).unwrap();
    assert!(p.au_adapter().is_none() && !p.unet().has_au_adapter());
    let r = load_refs(REFS);
    let out = p.unet().forward(
        r["unet.sample"].tensor(p.device()),
        &r["unet.timestep"].data,
        r["unet.encoder_hidden_states"].tensor(p.device()),
    );
    assert_close("base unet", out, &r["unet.base.out"], TOL);
    // The fixture is sensitive to both extras (else the tests above could pass with one ignored).
    let base = &r["unet.base.out"].data;
    let lora = &r["unet.lora.out"].data;
    assert!(rel_l2(lora, base) > 1e-2);
    assert!(rel_l2(&r["unet.lora.au1p0.out"].data, lora) > 1e-2);
}
