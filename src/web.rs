//! The browser API: a thin `wasm-bindgen` layer over [`crate::pipeline`] for the page's Web
//! Worker (`www/worker.js`). Requests and results cross the boundary with
//! `serde-wasm-bindgen`; model files arrive as bytes (nothing is fetched or uploaded here).
//!
//! ```js
//! const pipe = await WebPipeline.load(files /* Map<"unet/config.json", Uint8Array> */, true);
//! const out = await pipe.generate({ prompt: "a surprised child", steps: 20 }, (e) => {});
//! // out.images[i]: Uint8Array RGB, out.records[i]: the image's labels and request
//! ```

use std::collections::BTreeMap;

use serde::Serialize;
use wasm_bindgen::prelude::*;

use crate::au::catalog::{ACTION_UNITS, AuSet, FINEFACE, OPENGRAPHAU};
use crate::device::{SelectedDevice, select_web};
use crate::error::Error;
use crate::expression::Expression;
use crate::face::analyzer::{FaceAnalyzer, FaceReport};
use crate::guidance::semantic::SemanticGuider;
use crate::image::RgbView;
use crate::pipeline::source::MemorySource;
use crate::pipeline::{
    GenerateOptions, GenerateRequest, ImageRecord, ModelInfo, Pipeline, Timings,
};
use crate::tensor::HostTensor;
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
    /// Largest weight tensor, bytes (f32).
    largest_tensor_bytes: u64,
}

/// A model loaded in the browser, on WebGPU or on flex (CPU).
#[wasm_bindgen]
pub struct WebPipeline {
    pipeline: Pipeline,
    /// The semantic-guidance classifiers, once `enableSemanticGuidance` loaded them.
    guider: Option<SemanticGuider>,
    device: SelectedDevice,
    largest_tensor_bytes: u64,
}

/// Elements of the largest tensor in a safetensors file, read from its header only
/// (`bytes` is a JS array: nothing else is copied).
fn largest_tensor_elements(path: &str, bytes: &js_sys::Uint8Array) -> Result<u64, Error> {
    let bad = |m: &str| Error::request("files", format!("{path}: {m}"));
    if bytes.length() < 8 {
        return Err(bad("too short for a safetensors file"));
    }
    let mut len = [0u8; 8];
    bytes.subarray(0, 8).copy_to(&mut len);
    let len = u64::from_le_bytes(len);
    if len > u64::from(bytes.length()) - 8 || len > 100_000_000 {
        return Err(bad("the header length exceeds the file"));
    }
    let header = bytes.subarray(8, 8 + len as u32).to_vec();
    let header: BTreeMap<String, serde_json::Value> =
        serde_json::from_slice(&header).map_err(|e| bad(&format!("header: {e}")))?;
    Ok(header
        .values()
        .filter_map(|v| v.get("shape")?.as_array().cloned())
        .map(|shape| shape.iter().filter_map(|d| d.as_u64()).product::<u64>())
        .max()
        .unwrap_or(0))
}

#[wasm_bindgen]
impl WebPipeline {
    /// Loads a diffusers-layout model from `files` (`Map` of relative path → `Uint8Array`),
    /// on WebGPU when `webgpu` is true, else on flex. `max_binding` is the adapter's
    /// `maxStorageBufferBindingSize` (bytes): a model with a larger weight tensor is refused
    /// with a message naming the limit, and so is a generation whose largest buffer exceeds it.
    pub async fn load(
        files: js_sys::Map,
        webgpu: bool,
        max_binding: Option<f64>,
    ) -> Result<WebPipeline, JsError> {
        let mut src = MemorySource::new("browser files");
        let mut failed = None;
        let mut largest = 0u64;
        files.for_each(&mut |value, key| {
            if failed.is_some() {
                return;
            }
            let Some(path) = key.as_string() else {
                failed = Some(Error::request("files", "a file name is not a string"));
                return;
            };
            let Ok(bytes) = value.dyn_into::<js_sys::Uint8Array>() else {
                failed = Some(Error::request(
                    "files",
                    format!("{path}: contents are not a Uint8Array"),
                ));
                return;
            };
            if path.ends_with(".safetensors") {
                match largest_tensor_elements(&path, &bytes) {
                    Ok(n) => largest = largest.max(n * 4),
                    Err(e) => failed = Some(e),
                }
            }
            src.insert(&path, bytes.to_vec());
        });
        if let Some(e) = failed {
            return Err(js_error(e));
        }
        if let Some(limit) = max_binding.filter(|_| webgpu)
            && largest as f64 > limit
        {
            return Err(js_error(Error::Device(format!(
                "the model's largest weight tensor needs {largest} bytes, more than this \
                 GPU's maxStorageBufferBindingSize ({limit} bytes); use the CPU backend"
            ))));
        }
        let device = select_web(webgpu).await.map_err(js_error)?;
        // Generations whose largest buffer would pass the page's limit are refused up front.
        let pipeline = Pipeline::builder(src)
            .device(&device.device)
            .buffer_limit(max_binding.filter(|_| webgpu).map(|limit| limit as u64))
            .build()
            .map_err(js_error)?;
        Ok(WebPipeline {
            pipeline,
            guider: None,
            device,
            largest_tensor_bytes: largest,
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
