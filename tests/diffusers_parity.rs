//! Per-component and end-to-end parity with diffusers/transformers on the tiny SD-1.x and
//! SD-2.x fixtures made by `tools/make_fixtures.py` (CPU, flex backend).

mod common;

use burn::tensor::{Device, Int, Tensor, TensorData};
use common::{assert_close, e2e_request, fixture, load_refs, max_abs};
use synfer::GenerateOptions;
use synfer::pipeline::source::{DirSource, MemorySource};
use synfer::pipeline::{GenerateRequest, Pipeline};
use synfer::scheduler::SchedulerKind;

const TOL: f64 = 1e-4;

fn pipeline(name: &str) -> Pipeline {
    let src = DirSource::new(fixture(name)).unwrap();
    Pipeline::from_source(&src, &Device::flex()).unwrap()
}

fn text_encoder(name: &str, refs: &str) {
    let p = pipeline(name);
    let r = load_refs(refs);
    let ids = &r["te.input_ids"];
    let ids_i: Vec<i64> = ids.data.iter().map(|&v| v as i64).collect();
    let t = Tensor::<2, Int>::from_data(
        TensorData::new(ids_i, [ids.shape[0], ids.shape[1]]),
        p.device(),
    );
    assert_close(
        &format!("{name} text encoder"),
        p.text_encoder().forward(t),
        &r["te.last_hidden_state"],
        TOL,
    );
}

fn unet(name: &str, refs: &str) {
    let p = pipeline(name);
    let r = load_refs(refs);
    let ts = &r["unet.timestep"].data;
    let out = p.unet().forward(
        r["unet.sample"].tensor(p.device()),
        ts,
        r["unet.encoder_hidden_states"].tensor(p.device()),
    );
    assert_close(&format!("{name} unet"), out, &r["unet.out"], TOL);
}

fn vae(name: &str, refs: &str) {
    let p = pipeline(name);
    let r = load_refs(refs);
    let dist = p.vae().encode(r["vae.image"].tensor(p.device()));
    assert_close(
        &format!("{name} vae encode mean"),
        dist.mean,
        &r["vae.enc_mean"],
        TOL,
    );
    assert_close(
        &format!("{name} vae encode logvar"),
        dist.logvar,
        &r["vae.enc_logvar"],
        TOL,
    );
    let dec = p.vae().decode(r["vae.latents"].tensor(p.device()));
    assert_close(&format!("{name} vae decode"), dec, &r["vae.dec_out"], TOL);
}

fn end_to_end(name: &str, refs: &str, image_key: &str, guidance_key: Option<&str>) {
    let p = pipeline(name);
    let r = load_refs(refs);
    let meta: serde_json::Value = serde_json::from_slice(
        &std::fs::read(fixture(&refs.replace(".safetensors", ".json"))).unwrap(),
    )
    .unwrap();
    let e = &meta["e2e"];
    let mut req = e2e_request(&meta);
    let latents = r["e2e.latents"].host_tensor();
    if let Some(k) = guidance_key {
        req.guidance_scale = e[k]["guidance_scale"].as_f64().unwrap();
    }
    let out = p
        .generate_with(&req, &GenerateOptions::with_latents(&latents), |_| {})
        .unwrap();
    let reference = &r[image_key];
    let err = max_abs(&out.images_f32[0], &reference.data);
    eprintln!(
        "{name} end to end ({image_key}): max abs = {err:.3e} ({:.3}/255)",
        err * 255.0
    );
    assert!(
        err <= 2.0 / 255.0,
        "{name} {image_key}: max abs {err} > 2/255"
    );
}

#[test]
fn sd1_text_encoder() {
    text_encoder("sd1-tiny", "reference/sd1.safetensors");
}

#[test]
fn sd2_text_encoder() {
    text_encoder("sd2-tiny", "reference/sd2.safetensors");
}

#[test]
fn sd1_unet() {
    unet("sd1-tiny", "reference/sd1.safetensors");
}

#[test]
fn sd2_unet() {
    unet("sd2-tiny", "reference/sd2.safetensors");
}

#[test]
fn sd1_vae() {
    vae("sd1-tiny", "reference/sd1.safetensors");
}

#[test]
fn sd2_vae() {
    vae("sd2-tiny", "reference/sd2.safetensors");
}

#[test]
fn sd1_end_to_end_ddim_with_guidance() {
    end_to_end("sd1-tiny", "reference/sd1.safetensors", "e2e.image", None);
}

#[test]
fn sd1_end_to_end_ddim_without_guidance() {
    end_to_end(
        "sd1-tiny",
        "reference/sd1.safetensors",
        "e2e.image_noguide",
        Some("noguide"),
    );
}

#[test]
fn sd2_end_to_end_dpm_solver_v_prediction() {
    end_to_end("sd2-tiny", "reference/sd2.safetensors", "e2e.image", None);
}

/// The fixture folder `name` in memory.
fn memory_folder(name: &str) -> MemorySource {
    let root = fixture(name);
    let mut src = MemorySource::new(format!("{name} (in memory)"));
    for dir in ["", "scheduler", "text_encoder", "tokenizer", "unet", "vae"] {
        for entry in std::fs::read_dir(root.join(dir)).unwrap() {
            let path = entry.unwrap().path();
            if path.is_file() {
                let rel = path.strip_prefix(&root).unwrap().to_str().unwrap();
                src.insert(rel, std::fs::read(&path).unwrap());
            }
        }
    }
    src
}

/// sd1-tiny with its scheduler config replaced by Stable Diffusion 1.5's own `PNDMScheduler`
/// config, run without a scheduler override, against diffusers (`tools/make_pndm_fixture.py`).
#[test]
fn sd1_end_to_end_pndm_scheduler_from_folder() {
    let refs = "reference/sd1_pndm.safetensors";
    let r = load_refs(refs);
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixture("reference/sd1_pndm.json")).unwrap())
            .unwrap();
    let mut src = memory_folder("sd1-tiny");
    src.insert(
        "scheduler/scheduler_config.json",
        meta["scheduler_config_json"]
            .as_str()
            .unwrap()
            .as_bytes()
            .to_vec(),
    );
    let p = Pipeline::from_source(&src, &Device::flex()).unwrap();
    assert_eq!(p.info().scheduler_class, "PNDMScheduler");
    assert_eq!(p.scheduler_config().kind().unwrap(), SchedulerKind::Pndm);

    let e = &meta["e2e"];
    let steps = e["num_inference_steps"].as_u64().unwrap() as usize;
    let guidance = e["guidance_scale"].as_f64().unwrap();
    let want_t: Vec<f64> = e["timesteps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_f64().unwrap())
        .collect();

    // The scheduler alone, fed diffusers' own UNet outputs, reproduces its per-step latents.
    let mut sched = p.scheduler_config().build(steps).unwrap();
    assert_eq!(sched.timesteps(), want_t.as_slice());
    let unet_out = &r["e2e.unet_out"];
    let step_latents = &r["e2e.step_latents"];
    let mut x = r["e2e.latents"].tensor::<4>(p.device());
    for (i, t) in want_t.iter().enumerate() {
        let out = unet_out.index(i).tensor::<4>(p.device());
        let [b2, c, h, w] = out.dims();
        let uncond = out.clone().slice([0..b2 / 2, 0..c, 0..h, 0..w]);
        let cond = out.slice([b2 / 2..b2, 0..c, 0..h, 0..w]);
        let noise = uncond.clone() + (cond - uncond).mul_scalar(guidance);
        x = sched.step(noise, i, x).prev_sample;
        assert_close(
            &format!("sd1 PNDM step {i} (t = {t}) latents"),
            x.clone(),
            &step_latents.index(i),
            TOL,
        );
    }

    // The whole pipeline, with the folder's scheduler.
    let req = GenerateRequest {
        prompt: e["prompt"].as_str().unwrap().into(),
        negative_prompt: e["negative_prompt"].as_str().map(String::from),
        steps,
        guidance_scale: guidance,
        width: Some(e["width"].as_u64().unwrap() as usize),
        height: Some(e["height"].as_u64().unwrap() as usize),
        scheduler: None,
        ..Default::default()
    };
    let latents = r["e2e.latents"].host_tensor();
    let mut seen = Vec::new();
    let out = p
        .generate_with(&req, &GenerateOptions::with_latents(&latents), |ev| {
            assert_eq!(ev.total, want_t.len());
            seen.push(ev.timestep);
        })
        .unwrap();
    assert_eq!(
        seen, want_t,
        "the pipeline runs every PNDM timestep, repeats included"
    );
    let err = max_abs(&out.images_f32[0], &r["e2e.image"].data);
    eprintln!(
        "sd1-tiny + SD 1.5 PNDM config end to end: max abs = {err:.3e} ({:.3}/255)",
        err * 255.0
    );
    assert!(err <= 2.0 / 255.0, "sd1 PNDM e2e: max abs {err} > 2/255");
}

/// x̂0 previews: one per step but the last when asked for every step, each a whole RGB image,
/// never on the steps not asked for, and the result is the same as without previews.
#[test]
fn previews_leave_the_result_unchanged() {
    let p = pipeline("sd1-tiny");
    let req = GenerateRequest {
        prompt: "a face".into(),
        steps: 4,
        width: Some(32),
        height: Some(32),
        ..Default::default()
    };
    let plain = p
        .generate_with(&req, &GenerateOptions::default(), |e| {
            assert!(e.preview.is_none())
        })
        .unwrap();
    for every in [1, 2] {
        let mut seen = Vec::new();
        let out = p
            .generate_with(
                &req,
                &GenerateOptions {
                    preview_every: every,
                    ..GenerateOptions::default()
                },
                |e| {
                    if let Some(rgb) = &e.preview {
                        assert_eq!(rgb.len(), 32 * 32 * 3);
                        seen.push(e.step);
                    }
                },
            )
            .unwrap();
        let want: Vec<usize> = (1..4).filter(|s| s % every == 0).collect();
        assert_eq!(seen, want, "preview steps with every = {every}");
        assert_eq!(out.images, plain.images);
    }
}

#[test]
fn sliced_vae_decoding_gives_the_same_images() {
    let p = pipeline("sd1-tiny");
    let req = GenerateRequest {
        prompt: "a face".into(),
        steps: 2,
        num_images: 3,
        width: Some(32),
        height: Some(32),
        ..Default::default()
    };
    let whole = p.generate(&req).unwrap();
    // A budget below one image's activations: each image is decoded alone.
    let src = DirSource::new(fixture("sd1-tiny")).unwrap();
    let p = Pipeline::builder(&src).decode_budget(1).build().unwrap();
    assert_eq!(p.info().buffers.images_per_decode(32, 32), 1);
    let sliced = p.generate(&req).unwrap();
    assert_eq!(sliced.images.len(), 3);
    for (a, b) in whole.images_f32.iter().zip(&sliced.images_f32) {
        let err = max_abs(a, b);
        assert!(err <= 1e-5, "sliced decode differs by {err}");
    }
}
