//! Loading a diffusers-layout Stable Diffusion folder: `model_index.json` and the component
//! folders, with weights from (possibly sharded or fp16-variant) safetensors files.

use serde_json::Value;

use super::source::FileSource;
use crate::error::{Error, Result};
use crate::weights::TensorStore;

/// The component classes we can run, per `model_index.json` entry.
const EXPECTED: &[(&str, &[&str])] = &[
    ("text_encoder", &["CLIPTextModel"]),
    ("tokenizer", &["CLIPTokenizer", "CLIPTokenizerFast"]),
    ("unet", &["UNet2DConditionModel"]),
    ("vae", &["AutoencoderKL"]),
    (
        "scheduler",
        &[
            "DDIMScheduler",
            "DPMSolverMultistepScheduler",
            "EulerDiscreteScheduler",
            "PNDMScheduler",
            "LMSDiscreteScheduler",
            "EulerAncestralDiscreteScheduler",
            "DDPMScheduler",
            "UniPCMultistepScheduler",
            "HeunDiscreteScheduler",
            "KDPM2DiscreteScheduler",
            "DEISMultistepScheduler",
        ],
    ),
];

/// Checks `model_index.json`: every component we need is present with a class we support.
/// Optional components (`safety_checker`, `feature_extractor`, `image_encoder`) are not run.
pub fn check_model_index(src: &dyn FileSource) -> Result<Value> {
    let file = "model_index.json";
    let bytes = src.require(file)?;
    let index: Value = serde_json::from_slice(&bytes).map_err(|e| Error::json(file, e))?;
    for (component, classes) in EXPECTED {
        let entry = index.get(*component).ok_or_else(|| {
            Error::config(file, *component, "missing", "this component is required")
        })?;
        let class = entry
            .as_array()
            .and_then(|a| a.get(1))
            .and_then(Value::as_str)
            .ok_or_else(|| {
                Error::config(file, *component, entry, "expected [library, class_name]")
            })?;
        if !classes.contains(&class) {
            return Err(Error::config(
                file,
                *component,
                entry,
                format!("unsupported class; supported: {}", classes.join(", ")),
            ));
        }
    }
    Ok(index)
}

/// Loads the weights of `component` (e.g. `unet`) whose file stem is `stem`
/// (`diffusion_pytorch_model` or `model`): a single file, a sharded index, or an fp16 variant.
pub fn load_store(src: &dyn FileSource, component: &str, stem: &str) -> Result<TensorStore> {
    let single = format!("{component}/{stem}.safetensors");
    if let Some(bytes) = src.read(&single)? {
        return TensorStore::from_bytes(single, bytes);
    }
    let index_name = format!("{component}/{stem}.safetensors.index.json");
    if let Some(bytes) = src.read(&index_name)? {
        let index: Value =
            serde_json::from_slice(&bytes).map_err(|e| Error::json(&index_name, e))?;
        let map = index
            .get("weight_map")
            .and_then(Value::as_object)
            .ok_or_else(|| {
                Error::config(&index_name, "weight_map", "missing", "expected an object")
            })?;
        let mut shards: Vec<&str> = map.values().filter_map(Value::as_str).collect();
        shards.sort_unstable();
        shards.dedup();
        let mut store: Option<TensorStore> = None;
        for shard in shards {
            let bytes = src.require(&format!("{component}/{shard}"))?;
            match store.as_mut() {
                Some(s) => s.add_bytes(bytes)?,
                None => store = Some(TensorStore::from_bytes(index_name.clone(), bytes)?),
            }
        }
        return store
            .ok_or_else(|| Error::config(&index_name, "weight_map", "{}", "no shards listed"));
    }
    let variant = format!("{component}/{stem}.fp16.safetensors");
    if let Some(bytes) = src.read(&variant)? {
        return TensorStore::from_bytes(variant, bytes);
    }
    let pickle = format!("{component}/{stem}.bin");
    if src.read(&pickle)?.is_some() {
        return Err(Error::SafeTensors {
            file: pickle,
            message: "PyTorch pickle weights are not loaded; convert the folder to safetensors \
                      (diffusers: pipe.save_pretrained(dir, safe_serialization=True))"
                .into(),
        });
    }
    Err(Error::Io {
        path: format!("{}/{single}", src.describe()).into(),
        source: std::io::Error::new(std::io::ErrorKind::NotFound, "weights file not found"),
    })
}
