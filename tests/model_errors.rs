//! Bad model folders give typed errors that name the file, key, shape or value — never a panic.

mod common;

use burn::tensor::Device;
use common::{fixture, rewrite_safetensors};
use safetensors::Dtype;
use synfer::Error;
use synfer::GenerateOptions;
use synfer::pipeline::Pipeline;
use synfer::pipeline::source::MemorySource;

const UNET: &str = "unet/diffusion_pytorch_model.safetensors";

/// The sd1-tiny folder in memory.
fn folder() -> MemorySource {
    let root = fixture("sd1-tiny");
    let mut src = MemorySource::new("sd1-tiny (edited)");
    for dir in ["", "scheduler", "text_encoder", "tokenizer", "unet", "vae"] {
        for entry in std::fs::read_dir(root.join(dir)).unwrap() {
            let path = entry.unwrap().path();
            if path.is_file() {
                let rel = path
                    .strip_prefix(&root)
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .to_string();
                src.insert(&rel, std::fs::read(&path).unwrap());
            }
        }
    }
    src
}

fn keep(_: &str, s: Vec<usize>, d: Vec<u8>) -> Option<(Vec<usize>, Vec<u8>)> {
    Some((s, d))
}

fn load(src: &MemorySource) -> Error {
    match Pipeline::from_source(src, &Device::flex()) {
        Ok(_) => panic!("loading must fail"),
        Err(e) => e,
    }
}

fn unet_bytes(src: &MemorySource) -> Vec<u8> {
    use synfer::pipeline::source::FileSource;
    src.read(UNET).unwrap().unwrap()
}

#[test]
fn truncated_safetensors() {
    let mut src = folder();
    let bytes = unet_bytes(&src);
    src.insert(UNET, bytes[..bytes.len() / 2].to_vec());
    let err = load(&src);
    assert!(
        matches!(err, Error::SafeTensors { ref file, .. } if file == UNET),
        "{err}"
    );
    src.insert(UNET, bytes[..5].to_vec());
    assert!(matches!(load(&src), Error::SafeTensors { .. }));
}

#[test]
fn missing_key() {
    let mut src = folder();
    let key = "mid_block.attentions.0.transformer_blocks.0.attn2.to_k.weight";
    let edited = rewrite_safetensors(
        &unet_bytes(&src),
        |n, s, d| (n != key).then_some((s, d)),
        vec![],
    );
    src.insert(UNET, edited);
    let err = load(&src);
    assert!(
        matches!(err, Error::MissingKey { ref file, key: ref k } if file == UNET && k == key),
        "{err}"
    );
    assert!(err.to_string().contains(key));
}

#[test]
fn unused_key() {
    let mut src = folder();
    let extra = vec![("not_a_weight", Dtype::F32, vec![2], vec![0u8; 8])];
    src.insert(UNET, rewrite_safetensors(&unet_bytes(&src), keep, extra));
    let err = load(&src);
    assert!(
        matches!(err, Error::UnusedKeys { ref file, ref keys } if file == UNET && keys == &["not_a_weight".to_string()]),
        "{err}"
    );
}

#[test]
fn wrong_shape() {
    let mut src = folder();
    let edited = rewrite_safetensors(
        &unet_bytes(&src),
        |n, s, d| {
            // Same number of bytes is not enough: the shape itself must match.
            let s = if n == "conv_out.bias" {
                vec![1, s[0]]
            } else {
                s
            };
            keep(n, s, d)
        },
        vec![],
    );
    src.insert(UNET, edited);
    let err = load(&src);
    match err {
        Error::ShapeMismatch {
            ref key,
            ref expected,
            ref found,
            ..
        } => {
            assert_eq!(key, "conv_out.bias");
            assert_eq!(expected, &vec![4]);
            assert_eq!(found, &vec![1, 4]);
        }
        other => panic!("expected ShapeMismatch, got {other}"),
    }
}

#[test]
fn malformed_configs() {
    let mut src = folder();
    src.insert("unet/config.json", b"{ not json".to_vec());
    assert!(matches!(load(&src), Error::Json { ref file, .. } if file == "unet/config.json"));

    let mut src = folder();
    src.insert("unet/config.json", br#"{"down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D", "SimpleCrossAttnDownBlock2D"], "up_block_types": ["UpBlock2D","UpBlock2D","UpBlock2D"], "block_out_channels": [8,16,16], "norm_num_groups": 4}"#.to_vec());
    let err = load(&src);
    assert!(
        matches!(err, Error::Config { ref key, .. } if key == "down_block_types"),
        "{err}"
    );
    assert!(err.to_string().contains("SimpleCrossAttnDownBlock2D"));

    let mut src = folder();
    let mut cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixture("sd1-tiny/unet/config.json")).unwrap())
            .unwrap();
    cfg["class_embed_type"] = serde_json::json!("timestep");
    src.insert("unet/config.json", serde_json::to_vec(&cfg).unwrap());
    assert!(matches!(load(&src), Error::Config { ref key, .. } if key == "class_embed_type"));

    let mut src = folder();
    src.insert(
        "scheduler/scheduler_config.json",
        br#"{"_class_name": "DDIMScheduler", "beta_schedule": "cubic"}"#.to_vec(),
    );
    let err = load(&src);
    assert!(err.to_string().contains("beta_schedule"), "{err}");

    let mut src = folder();
    src.insert(
        "text_encoder/config.json",
        br#"{"hidden_act": "swish", "hidden_size": 16}"#.to_vec(),
    );
    assert!(matches!(load(&src), Error::Config { ref key, .. } if key == "hidden_act"));
}

/// A config value edited in place, then loaded: the error must name the file and key.
fn config_error(file: &str, key: &str, value: serde_json::Value) -> Error {
    use synfer::pipeline::source::FileSource;
    let mut src = folder();
    let mut cfg: serde_json::Value = serde_json::from_slice(&src.require(file).unwrap()).unwrap();
    cfg[key] = value;
    src.insert(file, serde_json::to_vec(&cfg).unwrap());
    load(&src)
}

#[test]
fn config_numbers_outside_their_range_are_refused_at_load() {
    let unet = "unet/config.json";
    let cases = [
        // 0 panicked in GroupNorm, 1e9 overflowed, 5000 bypassed the size limit, "16" and −16
        // silently became 64.
        (unet, "sample_size", serde_json::json!(0)),
        (unet, "sample_size", serde_json::json!(1_000_000_000u64)),
        (unet, "sample_size", serde_json::json!(5000)),
        (unet, "sample_size", serde_json::json!("16")),
        (unet, "sample_size", serde_json::json!(-16)),
        (unet, "norm_eps", serde_json::json!(-1e-5)),
        (
            "text_encoder/config.json",
            "layer_norm_eps",
            serde_json::json!(-1e-5),
        ),
        ("vae/config.json", "scaling_factor", serde_json::json!(0.0)),
    ];
    for (file, key, value) in cases {
        let err = config_error(file, key, value.clone());
        assert!(
            matches!(err, Error::Config { file: ref f, key: ref k, .. } if f == file && k == key),
            "{file} {key} = {value}: {err}"
        );
    }
    // A square [n, n] is a size too.
    let mut src = folder();
    let mut cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixture("sd1-tiny/unet/config.json")).unwrap())
            .unwrap();
    cfg["sample_size"] = serde_json::json!([8, 8]);
    src.insert(unet, serde_json::to_vec(&cfg).unwrap());
    let p = Pipeline::from_source(&src, &Device::flex()).unwrap();
    assert_eq!(p.info().default_size, 8 * p.info().vae_scale_factor);
}

#[test]
fn missing_files() {
    let mut src = folder();
    src.insert(
        "model_index.json",
        br#"{"unet": ["diffusers", "UNet2DConditionModel"]}"#.to_vec(),
    );
    assert!(matches!(load(&src), Error::Config { ref key, .. } if key == "text_encoder"));

    let mut src = MemorySource::new("empty");
    src.insert("readme.txt", b"nothing".to_vec());
    assert!(matches!(load(&src), Error::Io { .. }));
}

#[test]
fn bad_requests_are_refused() {
    use synfer::pipeline::GenerateRequest;
    let p = Pipeline::from_source(&folder(), &Device::flex()).unwrap();
    for (req, field) in [
        (
            GenerateRequest {
                steps: 0,
                ..GenerateRequest::new("x")
            },
            "steps",
        ),
        (
            GenerateRequest {
                width: Some(30),
                ..GenerateRequest::new("x")
            },
            "width",
        ),
        (
            GenerateRequest {
                guidance_scale: f64::NAN,
                ..GenerateRequest::new("x")
            },
            "guidance_scale",
        ),
        (
            GenerateRequest {
                num_images: 0,
                ..GenerateRequest::new("x")
            },
            "num_images",
        ),
    ] {
        let err = p.generate(&req).unwrap_err();
        assert!(
            matches!(err, Error::InvalidRequest { field: ref f, .. } if f == field),
            "{err}"
        );
    }
    let wrong = synfer::tensor::HostTensor {
        shape: vec![1, 4, 3, 3],
        data: vec![0.0; 36],
    };
    let err = p
        .generate_with(
            &GenerateRequest::new("x"),
            &GenerateOptions::with_latents(&wrong),
            |_| {},
        )
        .unwrap_err();
    assert!(
        matches!(err, Error::InvalidRequest { field: ref f, .. } if f == "latents"),
        "{err}"
    );
}

#[test]
fn unavailable_devices_and_precisions_are_errors() {
    use synfer::device::{DeviceChoice, Precision, select, select_with};
    let cuda = select(DeviceChoice::Cuda).map(|d| d.description);
    if cfg!(feature = "cuda") {
        // A CUDA build works where the driver is, and says what is missing elsewhere.
        if let Err(e) = cuda {
            assert!(e.to_string().contains("libcuda"), "{e}");
        }
    } else {
        // A build without the `cuda` feature says how to get one.
        let msg = cuda.unwrap_err().to_string();
        assert!(msg.contains("--features cuda"), "{msg}");
    }
    // `gpu` never settles for a software rasteriser (nor wgpu's GL fallback, which can hang):
    // where every adapter is a CPU one, it is refused at once and points at the alternatives.
    let hardware = synfer::device::wgpu_adapter_names()
        .iter()
        .any(|name| !name.ends_with("(Cpu)") && !name.ends_with("(Other)"));
    let t0 = std::time::Instant::now();
    match select(DeviceChoice::Gpu) {
        Ok(d) => assert!(hardware, "took {} without a hardware GPU", d.description),
        Err(e) => {
            assert!(!hardware, "{e}");
            let msg = e.to_string();
            assert!(
                msg.contains("--device software") && msg.contains("--device cpu"),
                "{msg}"
            );
        }
    }
    assert!(
        t0.elapsed().as_secs() < 30,
        "device selection took {:?}",
        t0.elapsed()
    );
    let err = select_with(DeviceChoice::Cpu, Precision::F16).unwrap_err();
    assert!(matches!(err, Error::Device(_)), "{err:?}");
    assert!(err.to_string().contains("f16 compute is for GPUs"), "{err}");
}

#[test]
fn a_generation_larger_than_the_buffer_limit_is_refused_before_it_starts() {
    let src = folder();
    // sd1-tiny at 64×64, 2 images with guidance: its largest buffer is far above 1 KiB.
    let p = Pipeline::builder(&src)
        .buffer_limit(Some(1024))
        .build()
        .unwrap();
    let req = synfer::pipeline::GenerateRequest {
        prompt: "a face".into(),
        steps: 1,
        num_images: 2,
        width: Some(64),
        height: Some(64),
        ..Default::default()
    };
    let err = p.generate(&req).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::Device(_)), "{err:?}");
    assert!(
        msg.contains("MiB buffer for 2 images at 64×64") && msg.contains("per buffer"),
        "{msg}"
    );
    let p = Pipeline::builder(&src)
        .buffer_limit(Some(u64::MAX))
        .build()
        .unwrap();
    assert!(p.generate(&req).is_ok());
}

/// `bytes` with tensor `key` filled with NaN (f32 or f16 as stored).
fn with_nan(bytes: &[u8], key: &str) -> Vec<u8> {
    let st = safetensors::SafeTensors::deserialize(bytes).unwrap();
    let dtype = st.tensor(key).unwrap().dtype();
    rewrite_safetensors(
        bytes,
        |n, s, d| {
            if n != key {
                return Some((s, d));
            }
            let nan: Vec<u8> = match dtype {
                Dtype::F32 => f32::NAN.to_le_bytes().to_vec(),
                Dtype::F16 => 0x7e00u16.to_le_bytes().to_vec(),
                other => panic!("{other:?}"),
            };
            let count = d.len() / nan.len();
            Some((s, nan.repeat(count)))
        },
        vec![],
    )
}

#[test]
fn non_finite_values_are_errors_not_black_images() {
    use synfer::pipeline::GenerateRequest;
    use synfer::pipeline::source::FileSource;
    let stage = |err: Error| match err {
        Error::NonFinite { stage, .. } => stage,
        other => panic!("expected a non-finite error, got {other}"),
    };
    let req = GenerateRequest {
        steps: 2,
        ..GenerateRequest::new("a face")
    };
    // NaN in a UNet weight: caught in the final latents.
    let mut src = folder();
    src.insert(UNET, with_nan(&unet_bytes(&src), "conv_out.bias"));
    let p = Pipeline::from_source(&src, &Device::flex()).unwrap();
    assert!(stage(p.generate(&req).unwrap_err()).contains("final latents"));
    // NaN in the VAE decoder: the latents are fine, the decode is not.
    let mut src = folder();
    let vae = "vae/diffusion_pytorch_model.safetensors";
    src.insert(
        vae,
        with_nan(&src.require(vae).unwrap(), "decoder.conv_out.bias"),
    );
    let p = Pipeline::from_source(&src, &Device::flex()).unwrap();
    assert!(stage(p.generate(&req).unwrap_err()).contains("VAE decode"));
    // One NaN in given latents, and a guidance scale that overflows.
    let p = Pipeline::from_source(&folder(), &Device::flex()).unwrap();
    let side = p.info().default_size / p.info().vae_scale_factor;
    let mut latents = synfer::tensor::HostTensor {
        shape: vec![1, p.info().latent_channels, side, side],
        data: vec![0.1; p.info().latent_channels * side * side],
    };
    latents.data[5] = f32::NAN;
    let err = p
        .generate_with(&req, &GenerateOptions::with_latents(&latents), |_| {})
        .unwrap_err();
    assert!(stage(err).contains("given latents"));
    let huge = GenerateRequest {
        guidance_scale: 1e300,
        ..req.clone()
    };
    assert!(matches!(
        p.generate(&huge).unwrap_err(),
        Error::NonFinite { .. }
    ));
    // The same latents as a file are refused when read, naming the file.
    let dir = std::env::temp_dir().join(format!("synfer-nan-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("latents.npy");
    let mut npy = b"\x93NUMPY\x01\x00".to_vec();
    let mut header = "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }".to_string();
    while !(10 + header.len() + 1).is_multiple_of(64) {
        header.push(' ');
    }
    header.push('\n');
    npy.extend((header.len() as u16).to_le_bytes());
    npy.extend(header.bytes());
    npy.extend(1.0f32.to_le_bytes());
    npy.extend(f32::INFINITY.to_le_bytes());
    std::fs::write(&file, npy).unwrap();
    let err = synfer::tensor::read_latents_file(&file).unwrap_err();
    assert!(stage(err).contains("latents.npy"));
    std::fs::remove_dir_all(&dir).unwrap();
    // A FER model with a NaN weight gives an error, not "neutral" with null probabilities.
    let fer = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/fer-synfer-tiny");
    let (config, weights) = synfer::fer::FerClassifier::read_dir(&fer).unwrap();
    let st = safetensors::SafeTensors::deserialize(&weights).unwrap();
    let key = st.names().into_iter().min().unwrap().to_string();
    let weights = with_nan(&weights, &key);
    let device = Device::flex();
    let model = synfer::fer::FerClassifier::from_bytes("nan", &config, &weights, &device).unwrap();
    let grey = vec![128u8; 64 * 64 * 3];
    let view = synfer::image::RgbView::new(64, 64, &grey).unwrap();
    assert!(stage(model.classify(&[view], &device).unwrap_err()).contains("FER"));
}

#[test]
fn small_request_mistakes_are_named_not_ignored() {
    use synfer::pipeline::GenerateRequest;
    let p = Pipeline::from_source(&folder(), &Device::flex()).unwrap();
    let req = GenerateRequest {
        steps: 1,
        ..GenerateRequest::new("a face")
    };
    // clip_skip beyond the text encoder's layers.
    let err = p
        .generate(&GenerateRequest {
            clip_skip: Some(100),
            ..req.clone()
        })
        .unwrap_err();
    assert!(
        matches!(err, Error::InvalidRequest { ref field, .. } if field == "clip_skip"),
        "{err}"
    );
    // An expression on a model without an AU adapter is said to act through the prompt only.
    let out = p
        .generate(&GenerateRequest {
            expression: Some(synfer::Expression::Happy),
            ..req.clone()
        })
        .unwrap();
    assert!(
        out.warnings.iter().any(|w| w.contains("no AU adapter")),
        "{:?}",
        out.warnings
    );
    // A long prompt's warning shows the start of what was dropped, not all of it.
    let long = format!("a face {}", "with many freckles and ".repeat(200));
    let out = p
        .generate(&GenerateRequest {
            prompt: long.clone(),
            ..req.clone()
        })
        .unwrap();
    let w = out
        .warnings
        .iter()
        .find(|w| w.contains("truncated"))
        .unwrap();
    assert!(w.len() < 200 && w.contains("dropped words"), "{w}");
    // AU lists that name nothing, or a unit twice.
    use synfer::au::vector::parse_spec;
    for (text, field) in [(",,,", "aus"), ("AU12=1,AU12=2", "aus.AU12")] {
        let err = parse_spec(text).unwrap_err();
        assert!(
            matches!(err, Error::InvalidRequest { field: ref f, .. } if f == field),
            "{text}: {err}"
        );
    }
}
