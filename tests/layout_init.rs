//! Layout initialisation (SynFER's partial DDIM inversion of a real face) and img2img against
//! diffusers 0.42.1 (`tools/make_layout_fixtures.py`: `DDIMInverseScheduler`, the DDIM
//! denoising of the last k timesteps, `StableDiffusionImg2ImgPipeline` semantics) on the tiny
//! SD1 (ε, DDIM) and SD2 (v-prediction, DPM-Solver++ config) fixtures, on flex; the VAE round
//! trip at strength 0; and the request errors.

mod common;

use burn::tensor::Device;
use common::{assert_close, fixture, load_refs, max_abs};
use synfer::pipeline::source::DirSource;
use synfer::pipeline::start::LAYOUT_PROMPT;
use synfer::pipeline::{GenerateOptions, GenerateRequest, ImageStart, Pipeline, StartMode};
use synfer::scheduler::SchedulerKind;

fn pipeline(name: &str, device: &Device) -> Pipeline {
    let src = DirSource::new(fixture(name)).unwrap();
    Pipeline::builder(&src).device(device).build().unwrap()
}

fn face() -> image::RgbImage {
    synfer::image::read(&fixture("layout/face32.png")).unwrap()
}

fn meta(family: &str) -> serde_json::Value {
    let path = fixture(&format!("reference/layout_{family}.json"));
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// The fixture's request: prompt, negative prompt, guidance, steps, 32×32.
fn request(settings: &serde_json::Value, start: ImageStart) -> GenerateRequest {
    GenerateRequest {
        prompt: settings["prompt"].as_str().unwrap().into(),
        negative_prompt: Some(settings["negative_prompt"].as_str().unwrap().into()),
        guidance_scale: settings["guidance_scale"].as_f64().unwrap(),
        steps: settings["num_inference_steps"].as_u64().unwrap() as usize,
        width: Some(32),
        height: Some(32),
        start: Some(start),
        ..Default::default()
    }
}

fn layout(strength: f64, prompt: Option<&str>) -> ImageStart {
    ImageStart {
        mode: StartMode::Layout,
        strength,
        prompt: prompt.map(str::to_string),
        source: Some("tests/fixtures/layout/face32.png".into()),
    }
}

/// Generates `req` from the face (and, for img2img, the fixture's noise as latents).
fn generate(p: &Pipeline, req: &GenerateRequest, noise: Option<&common::Ref>) -> Vec<f32> {
    let images = [face()];
    let latents = noise.map(common::Ref::host_tensor);
    let options = GenerateOptions {
        images: Some(&images),
        latents: latents.as_ref(),
        ..GenerateOptions::default()
    };
    p.generate_with(req, &options, |_| {})
        .unwrap()
        .images_f32
        .remove(0)
}

fn check_image(what: &str, ours: &[f32], reference: &common::Ref) {
    let err = max_abs(ours, &reference.data);
    eprintln!("{what}: max abs {err:.3e} ({:.3}/255)", err * 255.0);
    assert!(err <= 2.0 / 255.0, "{what}: {err} > 2/255");
}

fn layout_matches_diffusers(family: &str, device: &Device) {
    let p = pipeline(&format!("{family}-tiny"), device);
    let r = load_refs(&format!("reference/layout_{family}.safetensors"));
    let m = meta(family);
    let settings = &m["layout"];
    // The encoded image and the inversion, step by step as diffusers' DDIMInverseScheduler.
    let x0 = p.encode_images(&[face()], 32, 32).unwrap();
    assert_close(&format!("{family} x0"), x0.clone(), &r["x0"], 1e-4);
    let strength = settings["strength"].as_f64().unwrap();
    let steps = settings["num_inference_steps"].as_u64().unwrap() as usize;
    let k = synfer::pipeline::start::layout_steps(strength, steps);
    assert_eq!(k, settings["k"].as_u64().unwrap() as usize);
    let start = layout(strength, None);
    let cfg = p.scheduler_config().clone().with_kind(SchedulerKind::Ddim);
    let inverse = cfg.build_inverse(steps).unwrap();
    let want: Vec<f64> = settings["inverse_timesteps_all"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_f64().unwrap())
        .collect();
    assert_eq!(inverse.timesteps(), &want[..]);
    let inverted = p
        .invert(x0, &cfg, steps, k, LAYOUT_PROMPT, 0, None, |_, _| {})
        .unwrap();
    assert_close(
        &format!("{family} inverted"),
        inverted,
        &r["inv.inverted"],
        1e-4,
    );
    // The whole generation.
    let ours = generate(&p, &request(settings, start), None);
    check_image(&format!("{family} layout"), &ours, &r["layout.image"]);
}

#[test]
fn sd1_layout_initialisation_matches_diffusers() {
    layout_matches_diffusers("sd1", &Device::flex());
}

#[test]
fn sd2_v_prediction_layout_initialisation_matches_diffusers() {
    layout_matches_diffusers("sd2", &Device::flex());
}

/// The same on a wgpu device (lavapipe in CI): layout initialisation on both families and
/// v-prediction img2img with DPM-Solver++.
#[test]
fn layout_and_img2img_on_wgpu_match_diffusers() {
    let gpu = Device::wgpu_options()
        .graphics_api(burn::tensor::wgpu::WgpuBackend::Vulkan)
        .init()
        .expect("a Vulkan adapter (install mesa-vulkan-drivers for lavapipe)");
    layout_matches_diffusers("sd1", &gpu);
    layout_matches_diffusers("sd2", &gpu);
    img2img_matches_diffusers_on("sd2", "img2img_dpm", None, &gpu);
}

#[test]
fn strength_zero_is_the_vae_round_trip_and_one_reconstructs() {
    for family in ["sd1", "sd2"] {
        let p = pipeline(&format!("{family}-tiny"), &Device::flex());
        let r = load_refs(&format!("reference/layout_{family}.safetensors"));
        let m = meta(family);
        let settings = &m["layout"];
        let zero = generate(&p, &request(settings, layout(0.0, None)), None);
        check_image(&format!("{family} S = 0"), &zero, &r["roundtrip.image"]);
        // S = 1, guidance 1, the layout prompt as prompt: invert everything and come back.
        let recon = GenerateRequest {
            prompt: LAYOUT_PROMPT.into(),
            negative_prompt: None,
            guidance_scale: 1.0,
            ..request(settings, layout(1.0, None))
        };
        let ours = generate(&p, &recon, None);
        check_image(&format!("{family} S = 1"), &ours, &r["reconstruct.image"]);
        let input: Vec<f32> = r["input.image_u8"].data.iter().map(|v| v / 255.0).collect();
        let mse = ours
            .iter()
            .zip(&input)
            .map(|(a, b)| f64::from(a - b).powi(2))
            .sum::<f64>()
            / input.len() as f64;
        eprintln!(
            "{family}: reconstruction PSNR {:.2} dB (random weights)",
            -10.0 * mse.log10()
        );
    }
}

fn img2img_matches_diffusers(family: &str, case: &str, scheduler: Option<SchedulerKind>) {
    img2img_matches_diffusers_on(family, case, scheduler, &Device::flex());
}

fn img2img_matches_diffusers_on(
    family: &str,
    case: &str,
    scheduler: Option<SchedulerKind>,
    device: &Device,
) {
    let p = pipeline(&format!("{family}-tiny"), device);
    let r = load_refs(&format!("reference/layout_{family}.safetensors"));
    let m = meta(family);
    let settings = &m["img2img"];
    let start = ImageStart {
        mode: StartMode::Img2img,
        strength: settings["strength"].as_f64().unwrap(),
        prompt: None,
        source: None,
    };
    let req = GenerateRequest {
        scheduler,
        ..request(settings, start)
    };
    let ours = generate(&p, &req, Some(&r["img2img.noise"]));
    check_image(
        &format!("{family} {case}"),
        &ours,
        &r[&format!("{case}.image")],
    );
}

#[test]
fn img2img_matches_diffusers_with_ddim_euler_and_dpm() {
    img2img_matches_diffusers("sd1", "img2img_ddim", None);
    img2img_matches_diffusers("sd1", "img2img_euler", Some(SchedulerKind::EulerDiscrete));
    img2img_matches_diffusers("sd2", "img2img_dpm", None);
}

#[test]
fn bad_starts_are_refused_with_what_is_wrong() {
    let p = pipeline("sd1-tiny", &Device::flex());
    let m = meta("sd1");
    let settings = &m["layout"];
    let images = [face()];
    let with_images = GenerateOptions {
        images: Some(&images),
        ..GenerateOptions::default()
    };
    let err = |req: &GenerateRequest, options: &GenerateOptions| {
        p.generate_with(req, options, |_| {})
            .unwrap_err()
            .to_string()
    };
    // No image given.
    let req = request(settings, layout(0.7, None));
    let e = err(&req, &GenerateOptions::default());
    assert!(e.contains("start") && e.contains("images"), "{e}");
    // Strength outside [0, 1].
    for s in [-0.1, 1.5, f64::NAN] {
        let e = err(&request(settings, layout(s, None)), &with_images);
        assert!(e.contains("strength"), "{e}");
    }
    // Layout initialisation runs DDIM.
    let euler = GenerateRequest {
        scheduler: Some(SchedulerKind::EulerDiscrete),
        ..request(settings, layout(0.7, None))
    };
    let e = err(&euler, &with_images);
    assert!(e.contains("DDIM") && e.contains("euler"), "{e}");
    // Fewer images than the batch needs.
    let two = GenerateRequest {
        num_images: 2,
        ..request(settings, layout(0.7, None))
    };
    let e = err(&two, &with_images);
    assert!(
        e.contains("1 start images") && e.contains("2 images"),
        "{e}"
    );
}

/// A model folder's `synfer.json` names a default layout and guidance scale: `generate
/// --expression` starts from it (a relative source is taken from the folder) with that scale
/// unless `--guidance` says otherwise, and bad values are refused naming the key.
#[test]
fn a_model_folder_names_its_default_layout() {
    let parts: &[&str] = &[
        "model_index.json",
        "scheduler",
        "text_encoder",
        "tokenizer",
        "unet",
        "vae",
    ];
    let dir = common::linked_model("layout-default", &[("sd1-tiny", parts)]);
    std::fs::copy(fixture("layout/face32.png"), dir.join("face.png")).unwrap();
    let write = |json: &str| std::fs::write(dir.join("synfer.json"), json).unwrap();
    write(r#"{"layout": {"source": "face.png", "strength": 1.5}}"#);
    let err = Pipeline::load(&dir, &Device::flex())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("synfer.json") && err.contains("layout.strength"),
        "{err}"
    );
    write(r#"{"guidance_scale": -1, "layout": {"source": "face.png", "strength": 0.5}}"#);
    let err = Pipeline::load(&dir, &Device::flex())
        .unwrap_err()
        .to_string();
    assert!(err.contains("guidance_scale"), "{err}");
    write(r#"{"guidance_scale": 3.5, "layout": {"source": "face.png", "strength": 0.5}}"#);
    let out = dir.join("out.png");
    let generate = |extra: &[&str]| {
        let status = std::process::Command::new(env!("CARGO_BIN_EXE_synfer"))
            .args([
                "generate",
                "--device",
                "cpu",
                "--steps",
                "4",
                "--expression",
                "happy",
            ])
            .args(extra)
            .args(["--prompt", "a face", "--model"])
            .arg(&dir)
            .arg("--out")
            .arg(&out)
            .output()
            .unwrap();
        assert!(
            status.status.success(),
            "{}",
            String::from_utf8_lossy(&status.stderr)
        );
        serde_json::from_slice::<serde_json::Value>(
            &std::fs::read(out.with_extension("json")).unwrap(),
        )
        .unwrap()
    };
    assert_eq!(
        generate(&["--guidance", "5"])["request"]["guidance_scale"],
        5.0
    );
    let record = generate(&[]);
    assert_eq!(record["request"]["guidance_scale"], 3.5);
    let start = &record["request"]["start"];
    assert_eq!(start["mode"], "layout");
    assert_eq!(start["strength"], 0.5);
    assert!(
        start["source"].as_str().unwrap().ends_with("face.png"),
        "{start}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_missing_or_undecodable_start_image_is_named() {
    let device = Device::flex();
    let missing = synfer::layout::StartFlags {
        init_image: Some("/nonexistent/face.png".into()),
        ..Default::default()
    };
    let err = missing.resolve(1, 0, &device).unwrap_err().to_string();
    assert!(err.contains("/nonexistent/face.png"), "{err}");
    let bad = std::env::temp_dir().join(format!("synfer-not-an-image-{}.png", std::process::id()));
    std::fs::write(&bad, b"not an image").unwrap();
    let flags = synfer::layout::StartFlags {
        layout: Some(bad.display().to_string()),
        ..Default::default()
    };
    let err = flags.resolve(1, 0, &device).unwrap_err().to_string();
    assert!(err.contains(&bad.display().to_string()), "{err}");
    let _ = std::fs::remove_file(&bad);
    // A layout folder with fewer images than the batch.
    let dir = std::env::temp_dir().join(format!("synfer-layout-folder-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(fixture("layout/face32.png"), dir.join("a.png")).unwrap();
    let flags = synfer::layout::StartFlags {
        layout: Some(dir.display().to_string()),
        ..Default::default()
    };
    assert_eq!(flags.resolve(1, 0, &device).unwrap().unwrap().1.len(), 1);
    let err = flags.resolve(2, 0, &device).unwrap_err().to_string();
    assert!(
        err.contains(&dir.display().to_string()) && err.contains("holds 1 images"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
