//! The browser API: a thin `wasm-bindgen` layer over [`crate::pipeline`] for the page's Web
//! Worker (`www/worker.js`). Requests and results cross the boundary with
//! `serde-wasm-bindgen`; model files arrive as `Blob`s read in place ([`blob_source`]; nothing
//! is fetched or uploaded here).
//!
//! ```js
//! const pipe = await WebPipeline.load(files /* Map<"unet/config.json", File> */, null, { webgpu: true });
//! const out = await pipe.generate({ prompt: "a surprised child", steps: 20 }, (e) => {});
//! // out.images[i]: Uint8Array RGB, out.records[i]: the image's labels and request
//! ```

use std::collections::BTreeMap;

use serde::Serialize;
use wasm_bindgen::prelude::*;

pub mod blob_source;

use crate::au::adapter::adapter_from_files;
use crate::au::catalog::{ACTION_UNITS, AuSet, FINEFACE, OPENGRAPHAU};
use crate::device::{Precision, SelectedDevice, select_web};
use crate::error::Error;
use crate::expression::Expression;
use crate::face::analyzer::{FaceAnalyzer, FaceReport};
use crate::guidance::semantic::SemanticGuider;
use crate::image::RgbView;
use crate::pipeline::builder::ModelSource;
use crate::pipeline::source::FileSource;
use crate::pipeline::{
    GenerateOptions, GenerateRequest, ImageRecord, ModelInfo, Pipeline, Timings,
};
use crate::tensor::HostTensor;
use blob_source::{BlobSource, JsBlob};
use burn::tensor::Device;

#[wasm_bindgen(start)]
fn start() {
    console_error_panic_hook::set_once();
}

#[wasm_bindgen]
extern "C" {
    #[wasm_bindgen(js_namespace = performance, js_name = now)]
    fn performance_now() -> f64;
}

fn js_error(e: Error) -> JsError {
    JsError::new(&e.to_string())
}

fn to_js<T: Serialize>(value: &T) -> Result<JsValue, JsError> {
    value
        .serialize(&serde_wasm_bindgen::Serializer::json_compatible())
        .map_err(|e| JsError::new(&format!("serialising a result: {e}")))
}

/// A plain JS object with these properties (setting a property of a fresh plain object cannot
/// fail).
fn object(fields: &[(&str, JsValue)]) -> js_sys::Object {
    let o = js_sys::Object::new();
    for (k, v) in fields {
        let _ = js_sys::Reflect::set(&o, &JsValue::from_str(k), v);
    }
    o
}

/// One action unit of the catalogue, as the page's sliders need it.
#[derive(Serialize)]
struct UnitEntry {
    code: &'static str,
    number: u16,
    name: &'static str,
    muscle: &'static str,
    description: &'static str,
    /// Slider range and default when the unit belongs to the set, per set name.
    sets: BTreeMap<&'static str, [f32; 3]>,
}

/// The AU catalogue for the page: every unit (code, FACS number, name, muscle, description and
/// per-set range), the sets, and the expression presets with their prototypes per set.
#[wasm_bindgen(js_name = auCatalogue)]
pub fn au_catalogue() -> Result<JsValue, JsError> {
    let sets = [FINEFACE, OPENGRAPHAU];
    let units: Vec<UnitEntry> = ACTION_UNITS
        .iter()
        .map(|u| UnitEntry {
            code: u.code,
            number: u.number,
            name: u.name,
            muscle: u.muscle,
            description: u.description,
            sets: sets
                .iter()
                .filter_map(|s| {
                    s.index_of(u.code)
                        .map(|_| (s.name, [s.min, s.max, s.default]))
                })
                .collect(),
        })
        .collect();
    let presets: BTreeMap<&str, BTreeMap<&str, BTreeMap<&str, f32>>> = Expression::EIGHT
        .iter()
        .map(|e| {
            let per_set = sets
                .iter()
                .map(|s| (s.name, e.prototype(*s).active()))
                .collect();
            (e.name(), per_set)
        })
        .collect();
    #[derive(Serialize)]
    struct Catalogue<'a> {
        units: Vec<UnitEntry>,
        sets: Vec<SetEntry>,
        expressions: Vec<&'a str>,
        presets: BTreeMap<&'a str, BTreeMap<&'a str, BTreeMap<&'a str, f32>>>,
    }
    #[derive(Serialize)]
    struct SetEntry {
        name: &'static str,
        codes: &'static [&'static str],
    }
    to_js(&Catalogue {
        units,
        sets: sets
            .iter()
            .map(|s: &AuSet| SetEntry {
                name: s.name,
                codes: s.codes,
            })
            .collect(),
        expressions: Expression::EIGHT.iter().map(|e| e.name()).collect(),
        presets,
    })
}

/// What the page shows about a loaded model.
#[derive(Serialize)]
struct WebModelInfo<'a> {
    #[serde(flatten)]
    info: &'a ModelInfo,
    device: &'a str,
    /// The AU set of the model's adapter (`null`: no AU control).
    au_set: Option<&'static str>,
    /// Pixel multiple for width and height.
    size_multiple: usize,
    /// Largest weight tensor on the device, bytes.
    largest_tensor_bytes: u64,
    /// All weights on the device, bytes.
    weight_bytes: u64,
    /// The largest single read from the model's files while loading (the window weights
    /// passed through wasm memory in), bytes.
    largest_read_bytes: u64,
    /// wasm linear memory after loading (its high-water mark), bytes.
    wasm_memory_bytes: f64,
}

/// A model loaded in the browser, on WebGPU or on flex (CPU).
#[wasm_bindgen]
pub struct WebPipeline {
    pipeline: Pipeline,
    /// The semantic-guidance classifiers, once `enableSemanticGuidance` loaded them.
    guider: Option<SemanticGuider>,
    device: SelectedDevice,
    largest_tensor_bytes: u64,
    weight_bytes: u64,
    largest_read_bytes: u64,
}

/// Largest f32 weight set the CPU backend takes in a tab: flex keeps every weight in wasm
/// memory, a 4 GiB address space that also holds activations.
const CPU_WEIGHT_LIMIT: u64 = 3 << 29;

/// How [`WebPipeline::load`] loads (`options` object of the page).
#[derive(serde::Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct LoadOptions {
    /// WebGPU (else flex, the CPU backend compiled to wasm).
    webgpu: bool,
    /// The adapter's `maxStorageBufferBindingSize` (bytes).
    max_binding: Option<f64>,
    /// The adapter's `maxBufferSize` (bytes).
    max_buffer: Option<f64>,
    /// Compute in f16 where the adapter has `shader-f16` (default true).
    f16: Option<bool>,
}

/// `files` (a `Map` of relative path → `Blob`/`File` or `Uint8Array`) as a [`BlobSource`].
fn blob_source(name: &str, files: &js_sys::Map) -> Result<BlobSource, Error> {
    let mut src = BlobSource::new(name);
    let mut failed = None;
    files.for_each(&mut |value, key| {
        if failed.is_some() {
            return;
        }
        let Some(path) = key.as_string() else {
            failed = Some(Error::request("files", "a file name is not a string"));
            return;
        };
        match as_blob(value) {
            Some(blob) => src.insert(&path, blob),
            None => {
                failed = Some(Error::request(
                    "files",
                    format!("{path}: contents are neither a Blob nor a Uint8Array"),
                ))
            }
        }
    });
    failed.map_or(Ok(src), Err)
}

/// A `Blob` as it is, or a `Uint8Array` wrapped in one.
fn as_blob(value: JsValue) -> Option<JsBlob> {
    if value.is_instance_of::<js_sys::Uint8Array>() {
        return Some(JsBlob::of(&js_sys::Array::of1(&value)));
    }
    value
        .is_instance_of::<JsBlob>()
        .then(|| value.unchecked_into())
}

/// Weight counts read from the headers of every `.safetensors` file of a source.
#[derive(Default)]
struct WeightElements {
    /// The largest tensor: `file: key` and its elements.
    largest: (String, u64),
    /// Every tensor together.
    total: u64,
}

/// [`WeightElements`] of `src`, from the safetensors headers alone.
fn weight_elements(src: &BlobSource) -> Result<WeightElements, Error> {
    let mut counts = WeightElements::default();
    for path in src.paths().filter(|p| p.ends_with(".safetensors")) {
        let store = src.require_tensors(path)?;
        for key in store.keys() {
            let n = store.shape(key).map_or(0, |s| s.iter().product::<usize>()) as u64;
            if n > counts.largest.1 {
                counts.largest = (format!("{path}: {key}"), n);
            }
            counts.total += n;
        }
    }
    Ok(counts)
}

/// Bytes of wasm linear memory now: its high-water mark, since it never shrinks.
#[wasm_bindgen(js_name = wasmMemoryBytes)]
pub fn wasm_memory_bytes() -> f64 {
    wasm_bindgen::memory()
        .unchecked_into::<js_sys::WebAssembly::Memory>()
        .buffer()
        .unchecked_into::<js_sys::ArrayBuffer>()
        .byte_length() as f64
}

#[wasm_bindgen]
impl WebPipeline {
    /// Loads a diffusers-layout model from `files` (`Map` of relative path → `Blob`/`File`
    /// or `Uint8Array`), streaming: config files are read whole, weights in pieces of at most
    /// 16 MiB ([`crate::weights::PIECE_ELEMENTS`]) straight into their device buffers, so wasm
    /// memory holds one piece at a time whatever the model's size
    /// (the CPU backend keeps every weight in wasm memory and is refused for models over
    /// 1.5 GiB of f32 weights). `adapter` (a `Map` of file name → `Blob`/`Uint8Array`, may be
    /// absent) is an AU adapter: FineFace's files or our `au_adapter/` folder's.
    /// `options`: `{webgpu, maxBinding, maxBuffer, f16}` (see the page): a model whose
    /// largest weight tensor exceeds the adapter's limits is refused naming it, and so is a
    /// generation whose largest buffer would; `f16: false` computes in f32 on an adapter with
    /// `shader-f16`.
    pub async fn load(
        files: js_sys::Map,
        adapter: Option<js_sys::Map>,
        options: JsValue,
    ) -> Result<WebPipeline, JsError> {
        let options: LoadOptions = if options.is_undefined() || options.is_null() {
            LoadOptions::default()
        } else {
            serde_wasm_bindgen::from_value(options)
                .map_err(|e| js_error(Error::request("options", e.to_string())))?
        };
        let src = blob_source("browser files", &files).map_err(js_error)?;
        let counts = weight_elements(&src).map_err(js_error)?;
        let (largest_key, largest) = counts.largest;
        let total = counts.total;
        if !options.webgpu && total * 4 > CPU_WEIGHT_LIMIT {
            return Err(js_error(Error::Device(format!(
                "the model's weights need {:.2} GiB as f32 on the CPU backend, more than a tab's \
                 wasm memory holds ({:.1} GiB); use a browser with WebGPU",
                (total * 4) as f64 / f64::from(1 << 30),
                CPU_WEIGHT_LIMIT as f64 / f64::from(1 << 30)
            ))));
        }
        let precision = if options.f16.unwrap_or(true) {
            Precision::F16
        } else {
            Precision::F32
        };
        let device = select_web(options.webgpu, precision)
            .await
            .map_err(js_error)?;
        let limit = options
            .webgpu
            .then(|| match (options.max_binding, options.max_buffer) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            })
            .flatten();
        let element = if device.precision == Precision::F16 {
            2
        } else {
            4
        };
        if let Some(limit) = limit
            && (largest * element) as f64 > limit
        {
            return Err(js_error(Error::Device(format!(
                "weight tensor `{largest_key}` needs {} bytes, more than this GPU's buffer limit \
                 ({limit} bytes: maxStorageBufferBindingSize, maxBufferSize); use the CPU backend",
                largest * element
            ))));
        }
        let mut builder = Pipeline::builder(ModelSource::Files(&src))
            .device(&device.device)
            // Generations whose largest buffer would pass the page's limit are refused up front.
            .buffer_limit(limit.map(|l| l as u64));
        if let Some(adapter) = adapter {
            let files = blob_source("AU adapter", &adapter).map_err(js_error)?;
            let read = files
                .paths()
                .map(|p| Ok((p.to_string(), files.require(p)?)))
                .collect::<Result<Vec<_>, Error>>()
                .map_err(js_error)?;
            let (weights, loras) = adapter_from_files(&read, "AU adapter").map_err(js_error)?;
            builder = builder.adapter(weights).loras(loras);
        }
        let pipeline = builder.build().map_err(js_error)?;
        Ok(WebPipeline {
            pipeline,
            guider: None,
            device,
            largest_tensor_bytes: largest * element,
            weight_bytes: total * element,
            largest_read_bytes: src.largest_read(),
        })
    }

    /// Loads the semantic-guidance classifiers (FER A and FER B safetensors bytes, as in
    /// `assets/face/`), so that requests may carry `semantic_guidance`.
    #[wasm_bindgen(js_name = enableSemanticGuidance)]
    pub fn enable_semantic_guidance(&mut self, fer_a: &[u8], fer_b: &[u8]) -> Result<(), JsError> {
        let guider =
            SemanticGuider::from_bytes(fer_a, fer_b, self.pipeline.device()).map_err(js_error)?;
        self.guider = Some(guider);
        Ok(())
    }

    /// Adds a classifier trained by `synfer fer train` (`fer.json` and `model.safetensors`
    /// bytes) as the `"trained"` semantic-guidance classifier; call after
    /// `enableSemanticGuidance`.
    #[wasm_bindgen(js_name = enableTrainedGuidance)]
    pub fn enable_trained_guidance(
        &mut self,
        config: &[u8],
        weights: &[u8],
    ) -> Result<(), JsError> {
        let guider = self.guider.take().ok_or_else(|| {
            JsError::new("call enableSemanticGuidance before enableTrainedGuidance")
        })?;
        match guider.with_trained(config, weights, self.pipeline.device()) {
            Ok(g) => {
                self.guider = Some(g);
                Ok(())
            }
            Err(e) => Err(js_error(e)),
        }
    }

    /// Model facts: sizes, scheduler, device, AU set (`null` without an adapter).
    pub fn info(&self) -> Result<JsValue, JsError> {
        to_js(&WebModelInfo {
            info: self.pipeline.info(),
            device: &self.device.description,
            au_set: self.pipeline.au_adapter().map(|a| a.set.name),
            size_multiple: self.pipeline.size_multiple(),
            largest_tensor_bytes: self.largest_tensor_bytes,
            weight_bytes: self.weight_bytes,
            largest_read_bytes: self.largest_read_bytes,
            wasm_memory_bytes: wasm_memory_bytes(),
        })
    }

    /// Runs `request` (a [`GenerateRequest`] object; unknown keys are errors). `on_step` gets
    /// `{step, total, timestep, preview?}` after every denoising step, `preview` being the
    /// first image's decoded `x̂0` (RGB bytes, output size) every `preview_every` steps (0 or
    /// absent: never). `latents` (flat f32, the request's latent shape) replaces the seeded
    /// noise. `start_images` (an array of RGB `Uint8Array`s of the output size, one per image)
    /// are the images of a request with a `start` (layout initialisation or img2img). Returns
    /// `{width, height, images, records}`: RGB bytes per image and one metadata record per
    /// image.
    pub async fn generate(
        &self,
        request: JsValue,
        on_step: Option<js_sys::Function>,
        latents: Option<Vec<f32>>,
        preview_every: Option<u32>,
        start_images: Option<js_sys::Array>,
    ) -> Result<JsValue, JsError> {
        let req: GenerateRequest = serde_wasm_bindgen::from_value(request)
            .map_err(|e| js_error(Error::request("request", e.to_string())))?;
        let latents = match latents {
            Some(data) => {
                let (w, h) = self.pipeline.output_size(&req);
                let f = self.pipeline.info().vae_scale_factor;
                let shape = vec![
                    req.num_images,
                    self.pipeline.info().latent_channels,
                    h / f,
                    w / f,
                ];
                if data.len() != shape.iter().product::<usize>() {
                    return Err(js_error(Error::request(
                        "latents",
                        format!("{} values do not fill the shape {shape:?}", data.len()),
                    )));
                }
                Some(HostTensor { shape, data })
            }
            None => None,
        };
        let start = performance_now();
        let (w, h) = self.pipeline.output_size(&req);
        let images = match start_images {
            Some(list) => Some(
                list.iter()
                    .map(|v| {
                        let bytes = v.dyn_into::<js_sys::Uint8Array>().map_err(|_| {
                            js_error(Error::request("start_images", "not a Uint8Array"))
                        })?;
                        ::image::RgbImage::from_raw(w as u32, h as u32, bytes.to_vec()).ok_or_else(
                            || {
                                js_error(Error::request(
                                    "start_images",
                                    format!("an image is not {w}×{h} RGB"),
                                ))
                            },
                        )
                    })
                    .collect::<Result<Vec<_>, JsError>>()?,
            ),
            None => None,
        };
        let options = GenerateOptions {
            guider: self.guider.as_ref(),
            latents: latents.as_ref(),
            preview_every: preview_every.unwrap_or(0) as usize,
            images: images.as_deref(),
        };
        let out = self
            .pipeline
            .generate_async(&req, &options, |e| {
                if let Some(f) = &on_step {
                    let mut fields = vec![
                        ("step", JsValue::from(e.step as f64)),
                        ("total", JsValue::from(e.total as f64)),
                        ("timestep", JsValue::from(e.timestep)),
                    ];
                    if let Some(rgb) = &e.preview {
                        fields.push(("preview", js_sys::Uint8Array::from(rgb.as_slice()).into()));
                    }
                    let _ = f.call1(&JsValue::NULL, &object(&fields));
                }
            })
            .await
            .map_err(js_error)?;
        let generate_s = (performance_now() - start) / 1000.0;
        let images = js_sys::Array::new();
        for image in &out.images {
            images.push(&js_sys::Uint8Array::from(image.as_slice()));
        }
        let records = js_sys::Array::new();
        for record in out.records(
            &req,
            &self.pipeline.info().source,
            Some(&self.device.description),
            Some(Timings::of(generate_s, req.steps)),
        ) {
            records.push(&to_js(&record)?);
        }
        Ok(object(&[
            ("width", JsValue::from(out.width as f64)),
            ("height", JsValue::from(out.height as f64)),
            ("images", images.into()),
            ("records", records.into()),
        ])
        .into())
    }
}

/// The face analyser in the browser: FER A, FER B, FaceMesh, BlazeFace and the AU estimator,
/// loaded from the bytes of `assets/face/*.safetensors` (the page fetches them).
#[wasm_bindgen]
pub struct WebAnalyzer {
    analyzer: FaceAnalyzer,
}

/// What the gallery shows as "measured": the faces found, or the whole image read as one crop
/// when none is detected (`detected: false`).
#[derive(Serialize)]
struct Measured<'a> {
    detected: bool,
    faces: &'a [FaceReport],
}

#[wasm_bindgen]
impl WebAnalyzer {
    /// Loads the four face models from safetensors bytes (see [`FaceAnalyzer::from_bytes`]),
    /// on flex (they are small; the GPU stays free for the diffusion model).
    pub fn load(
        fer_a: &[u8],
        fer_b: &[u8],
        mesh: &[u8],
        detector: &[u8],
    ) -> Result<WebAnalyzer, JsError> {
        let analyzer = FaceAnalyzer::from_bytes(fer_a, fer_b, mesh, detector, &Device::flex())
            .map_err(js_error)?;
        Ok(WebAnalyzer { analyzer })
    }

    /// The most confident face of an RGB image (`width · height · 3` bytes) aligned and framed
    /// as the built-in model's training images, `side × side`: `{rgb, detected}`; without a
    /// detected face, the image's centre square resized (`detected: false`).
    pub fn align(
        &self,
        rgb: &[u8],
        width: usize,
        height: usize,
        side: usize,
    ) -> Result<JsValue, JsError> {
        let view = RgbView::new(width, height, rgb).map_err(js_error)?;
        let aligned =
            crate::facetext::build::align_face(&self.analyzer, view, side).map_err(js_error)?;
        let detected = aligned.is_some();
        let crop = match aligned {
            Some(crop) => crop,
            None => {
                let img = ::image::RgbImage::from_raw(width as u32, height as u32, rgb.to_vec())
                    .ok_or_else(|| JsError::new("the image does not fill its size"))?;
                crate::image::square_resize(&img, side)
            }
        };
        Ok(object(&[
            ("rgb", js_sys::Uint8Array::from(crop.as_slice()).into()),
            ("detected", JsValue::from(detected)),
        ])
        .into())
    }

    /// Analyses an RGB image (`width · height · 3` bytes): `{detected, faces: [FaceReport]}`
    /// (the `synfer analyze --json` face objects).
    pub fn analyze(&self, rgb: &[u8], width: usize, height: usize) -> Result<JsValue, JsError> {
        let view = RgbView::new(width, height, rgb).map_err(js_error)?;
        let faces = self.analyzer.analyze(view).map_err(js_error)?;
        if !faces.is_empty() {
            return to_js(&Measured {
                detected: true,
                faces: &faces,
            });
        }
        let face = self.analyzer.analyze_cropped(view).map_err(js_error)?;
        to_js(&Measured {
            detected: false,
            faces: std::slice::from_ref(&face),
        })
    }
}

/// PNG bytes of a generated image (`record.width · record.height · 3` RGB bytes) with its
/// record inside: A1111's `parameters` text and the JSON record (see [`ImageRecord::png`]).
#[wasm_bindgen(js_name = encodePngWithRecord)]
pub fn encode_png_with_record(rgb: &[u8], record: JsValue) -> Result<Vec<u8>, JsError> {
    let record: ImageRecord = serde_wasm_bindgen::from_value(record)
        .map_err(|e| JsError::new(&format!("image record: {e}")))?;
    record.png(rgb, "image").map_err(js_error)
}

/// PNG bytes of an RGB image (`width · height · 3` bytes).
#[wasm_bindgen(js_name = encodePng)]
pub fn encode_png(rgb: &[u8], width: u32, height: u32) -> Result<Vec<u8>, JsError> {
    crate::image::encode_png(rgb, width as usize, height as usize, "image").map_err(js_error)
}
