//! In the browser (`wasm-bindgen-test` in headless Chromium, WebGPU on SwiftShader): the whole
//! pipeline on the committed sd1-tiny model with diffusers' initial latents gives diffusers'
//! image within 2/255, on WebGPU and on the CPU fallback (flex compiled to wasm).
//!
//! The tests run in a dedicated Web Worker, as the page runs the pipeline: on the main thread,
//! SwiftShader's first-use kernel compilation blocks the renderer long enough (> 30 s) for
//! chromedriver to give up on it.
//!
//! Run with `bash tools/web.sh test` (it installs what is missing).
#![cfg(target_family = "wasm")]

use safetensors::SafeTensors;
use synfer::pipeline::source::MemorySource;
use synfer::pipeline::{GenerateOptions, GenerateRequest, Pipeline};
use synfer::tensor::HostTensor;
use wasm_bindgen::prelude::wasm_bindgen;
use wasm_bindgen_test::{wasm_bindgen_test, wasm_bindgen_test_configure};

wasm_bindgen_test_configure!(run_in_dedicated_worker);

#[wasm_bindgen]
extern "C" {
    #[wasm_bindgen(js_namespace = console)]
    fn log(s: &str);
}

macro_rules! model_files {
    ($($rel:literal),* $(,)?) => {
        [$(($rel, include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/sd1-tiny/", $rel)) as &[u8])),*]
    };
}

/// The sd1-tiny folder's files.
const SD1_TINY: [(&str, &[u8]); 12] = model_files![
    "model_index.json",
    "scheduler/scheduler_config.json",
    "text_encoder/config.json",
    "text_encoder/model.safetensors",
    "tokenizer/merges.txt",
    "tokenizer/special_tokens_map.json",
    "tokenizer/tokenizer_config.json",
    "tokenizer/vocab.json",
    "unet/config.json",
    "unet/diffusion_pytorch_model.safetensors",
    "vae/config.json",
    "vae/diffusion_pytorch_model.safetensors",
];

fn sd1_tiny() -> MemorySource {
    let mut src = MemorySource::new("sd1-tiny (embedded in the test)");
    for (rel, bytes) in SD1_TINY {
        src.insert(rel, bytes.to_vec());
    }
    src
}

const REFS: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/reference/sd1.safetensors"
));
const META: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/reference/sd1.json"
));

fn f32s(st: &SafeTensors, key: &str) -> (Vec<usize>, Vec<f32>) {
    let t = st.tensor(key).unwrap();
    let data = t
        .data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    (t.shape().to_vec(), data)
}

/// Max abs difference between our image and diffusers' for the fixture's e2e request.
async fn end_to_end(webgpu: bool) -> f32 {
    let device = synfer::device::select_web(webgpu, synfer::device::Precision::F32)
        .await
        .unwrap();
    let pipeline = Pipeline::from_source(&sd1_tiny(), &device.device).unwrap();
    let meta: serde_json::Value = serde_json::from_slice(META).unwrap();
    let e = &meta["e2e"];
    let req = GenerateRequest {
        prompt: e["prompt"].as_str().unwrap().into(),
        steps: e["num_inference_steps"].as_u64().unwrap() as usize,
        guidance_scale: e["guidance_scale"].as_f64().unwrap(),
        width: Some(e["width"].as_u64().unwrap() as usize),
        height: Some(e["height"].as_u64().unwrap() as usize),
        ..Default::default()
    };
    let st = SafeTensors::deserialize(REFS).unwrap();
    let (shape, data) = f32s(&st, "e2e.latents");
    let latents = HostTensor { shape, data };
    let mut steps = 0;
    let out = pipeline
        .generate_async(&req, &GenerateOptions::with_latents(&latents), |_| {
            steps += 1
        })
        .await
        .unwrap();
    assert_eq!(steps, req.steps);
    let (_, want) = f32s(&st, "e2e.image");
    assert_eq!(out.images_f32[0].len(), want.len());
    let err = out.images_f32[0]
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    log(&format!(
        "{}: max abs vs diffusers {err:.3e} ({:.4}/255)",
        device.description,
        err * 255.0
    ));
    err
}

#[wasm_bindgen_test]
async fn sd1_tiny_on_webgpu_matches_diffusers() {
    let err = end_to_end(true).await;
    assert!(err <= 2.0 / 255.0, "WebGPU: max abs {err}");
}

#[wasm_bindgen_test]
async fn sd1_tiny_on_cpu_fallback_matches_diffusers() {
    let err = end_to_end(false).await;
    assert!(err <= 2.0 / 255.0, "flex (wasm): max abs {err}");
}

#[wasm_bindgen_test]
fn au_catalogue_reaches_js() {
    let value = synfer::web::au_catalogue().unwrap();
    let units = js_sys::Reflect::get(&value, &"units".into()).unwrap();
    assert_eq!(js_sys::Array::from(&units).length(), 41);
    let presets = js_sys::Reflect::get(&value, &"presets".into()).unwrap();
    let happy = js_sys::Reflect::get(&presets, &"happy".into()).unwrap();
    let fineface = js_sys::Reflect::get(&happy, &"fineface".into()).unwrap();
    let au12 = js_sys::Reflect::get(&fineface, &"AU12".into()).unwrap();
    assert!(au12.as_f64().unwrap() > 0.0);
}

/// The page passes the adapter's `maxStorageBufferBindingSize` to `WebPipeline::load`: with a
/// limit just above the largest weight the model loads, and a generation whose largest buffer
/// would pass it (16 images at 512×512: the VAE decode alone needs far more) is refused before
/// any work, naming the limit.
#[wasm_bindgen_test]
async fn webgpu_generation_over_the_binding_limit_is_refused() {
    let (files, largest, _) = sd1_tiny_map();
    let limit = largest as f64 + 1.0;
    let pipeline = synfer::web::WebPipeline::load(files, None, options(true, Some(limit)))
        .await
        .unwrap_or_else(|_| panic!("the model loads under a {limit}-byte limit"));
    let request = js_sys::JSON::parse(
        r#"{"prompt": "a face", "num_images": 16, "width": 512, "height": 512, "steps": 1}"#,
    )
    .unwrap();
    let Err(err) = pipeline.generate(request, None, None, None, None).await else {
        panic!("a generation over the limit ran");
    };
    assert!(js_message(err).contains("per buffer"));
}

/// sd1-tiny as the page hands it over (a `Map` of path → `Blob`), its largest weight tensor
/// (f32 bytes) and its largest safetensors file (bytes).
fn sd1_tiny_map() -> (js_sys::Map, usize, usize) {
    let files = js_sys::Map::new();
    let (mut largest, mut largest_file) = (0usize, 0usize);
    for (rel, bytes) in SD1_TINY {
        if rel.ends_with(".safetensors") {
            let st = SafeTensors::deserialize(bytes).unwrap();
            for (_, t) in st.tensors() {
                largest = largest.max(t.shape().iter().product::<usize>() * 4);
            }
            largest_file = largest_file.max(bytes.len());
        }
        let parts = js_sys::Array::of1(&js_sys::Uint8Array::from(bytes).into());
        let blob = web_sys_blob(&parts);
        files.set(&rel.into(), &blob);
    }
    (files, largest, largest_file)
}

/// `new Blob(parts)`.
fn web_sys_blob(parts: &js_sys::Array) -> wasm_bindgen::JsValue {
    let ctor = js_sys::Reflect::get(&js_sys::global(), &"Blob".into()).unwrap();
    js_sys::Reflect::construct(&ctor.into(), &js_sys::Array::of1(parts)).unwrap()
}

fn options(webgpu: bool, max_binding: Option<f64>) -> wasm_bindgen::JsValue {
    let o = js_sys::Object::new();
    js_sys::Reflect::set(&o, &"webgpu".into(), &webgpu.into()).unwrap();
    if let Some(limit) = max_binding {
        js_sys::Reflect::set(&o, &"maxBinding".into(), &limit.into()).unwrap();
    }
    o.into()
}

fn js_message(err: wasm_bindgen::JsError) -> String {
    let message: String = js_sys::Error::from(wasm_bindgen::JsValue::from(err))
        .message()
        .into();
    log(&format!("refused: {message}"));
    message
}

fn info_number(info: &wasm_bindgen::JsValue, key: &str) -> f64 {
    js_sys::Reflect::get(info, &key.into())
        .unwrap()
        .as_f64()
        .unwrap_or_else(|| panic!("info.{key} is a number"))
}

/// The page's streaming load: the model arrives as `Blob`s and its weights are read tensor by
/// tensor (`FileReaderSync` over the safetensors offsets), never a whole file at once; the
/// image is diffusers' within 2/255 as through the in-memory path.
#[wasm_bindgen_test]
async fn blobs_load_tensor_by_tensor_and_match_diffusers() {
    let (files, largest, largest_file) = sd1_tiny_map();
    let pipeline = synfer::web::WebPipeline::load(files, None, options(true, None))
        .await
        .unwrap();
    let info = pipeline.info().unwrap();
    let read = info_number(&info, "largest_read_bytes");
    log(&format!(
        "largest read {read} bytes; largest file {largest_file}, largest tensor (f32) {largest}"
    ));
    assert!(
        read > 0.0 && read < largest_file as f64,
        "weights were read whole"
    );
    assert!(info_number(&info, "wasm_memory_bytes") > 0.0);
    let meta: serde_json::Value = serde_json::from_slice(META).unwrap();
    let e = &meta["e2e"];
    let request = serde_json::json!({
        "prompt": e["prompt"],
        "steps": e["num_inference_steps"],
        "guidance_scale": e["guidance_scale"],
        "width": e["width"],
        "height": e["height"],
    });
    let request = js_sys::JSON::parse(&request.to_string()).unwrap();
    let st = SafeTensors::deserialize(REFS).unwrap();
    let (_, latents) = f32s(&st, "e2e.latents");
    let out = pipeline
        .generate(request, None, Some(latents), None, None)
        .await
        .unwrap();
    let images = js_sys::Reflect::get(&out, &"images".into()).unwrap();
    let image: Vec<u8> = js_sys::Uint8Array::new(&js_sys::Array::from(&images).get(0)).to_vec();
    let (_, want) = f32s(&st, "e2e.image");
    assert_eq!(image.len(), want.len());
    let err = image
        .iter()
        .zip(&want)
        .map(|(&a, &b)| (f32::from(a) - (b * 255.0)).abs())
        .fold(0.0f32, f32::max);
    log(&format!("blob path: max |diff| vs diffusers {err:.2}/255"));
    assert!(err <= 2.0 + 0.5, "{err}/255");
}
