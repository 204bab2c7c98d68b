//! LoRA weights merged into a base [`TensorStore`] at load: `W ← W + s · (α / r) · B A`.
//!
//! Key styles understood (each with an optional `unet.` / `text_encoder.` component prefix and
//! PEFT's `base_model.model.` prefix):
//! - PEFT / current diffusers: `<module>.lora_A.weight`, `<module>.lora_B.weight`;
//! - older diffusers: `<module>.lora.down.weight`, `<module>.lora.up.weight`;
//! - attention-processor LoRA: `<attn>.processor.to_q_lora.down.weight` (→ `<attn>.to_q`,
//!   `to_out_lora` → `to_out.0`);
//! - kohya / sd-scripts (LCM-LoRA and most shared files): `lora_unet_<module>.lora_down.weight`,
//!   `.lora_up.weight`, `.alpha`, the module path with `_` for `.` (`lora_te_` for the text
//!   encoder), matched against the model's own weight names;
//! - an optional `<module>.alpha` (or `.lora.alpha`) scalar; else `lora_alpha` from the
//!   `lora_adapter_metadata` header newer diffusers writes (`unet.lora_alpha`); else `α = r`.
//!
//! Linear (`[out, in]`) and convolution (`[out, in, kh, kw]`, with `B` of shape `[out, r, 1, 1]`)
//! targets are supported. Every LoRA key must land on a base weight of matching shape.

use std::collections::BTreeMap;

use super::TensorStore;
use crate::error::{Error, Result};

/// LoRA weights with their merge scale.
#[derive(Debug)]
pub struct LoraWeights {
    /// The LoRA tensors (any supported key style).
    pub store: TensorStore,
    /// User scale (1.0 = as trained).
    pub scale: f32,
}

/// Reads `FILE[:scale]` (scale defaults to 1).
#[cfg(not(target_family = "wasm"))]
pub fn read_lora(spec: &str) -> Result<LoraWeights> {
    let (path, scale) = match spec.rsplit_once(':') {
        Some((p, s)) if !p.is_empty() && s.parse::<f32>().is_ok() => {
            (p, s.parse::<f32>().expect("checked"))
        }
        _ => (spec, 1.0),
    };
    if !scale.is_finite() {
        return Err(Error::request(
            "lora",
            format!("scale {scale} must be finite"),
        ));
    }
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    Ok(LoraWeights {
        store: TensorStore::from_bytes(path, bytes)?,
        scale,
    })
}

/// One low-rank update, before merging.
#[derive(Debug, Clone)]
struct LoraPair {
    down: Option<String>,
    up: Option<String>,
    alpha: Option<String>,
}

/// The base module path and role (`down`, `up`, `alpha`) of a LoRA key, if it is one.
fn parse_key(key: &str) -> Option<(String, &'static str)> {
    const SUFFIXES: [(&str, &str); 9] = [
        (".lora_A.weight", "down"),
        (".lora_B.weight", "up"),
        (".lora.down.weight", "down"),
        (".lora.up.weight", "up"),
        (".lora_down.weight", "down"),
        (".lora_up.weight", "up"),
        (".lora.alpha", "alpha"),
        (".alpha", "alpha"),
        ("_lora.down.weight", "down"),
    ];
    for (suffix, role) in SUFFIXES {
        if let Some(stem) = key.strip_suffix(suffix) {
            return Some((processor_path(stem), role));
        }
    }
    key.strip_suffix("_lora.up.weight")
        .map(|stem| (processor_path(stem), "up"))
}

/// The kohya / sd-scripts module prefixes and the component each names.
const KOHYA_PREFIXES: [(&str, &str); 3] = [
    ("lora_unet_", "unet"),
    ("lora_te_", "text_encoder"),
    ("lora_te1_", "text_encoder"),
];

/// `attn1.processor.to_q` → `attn1.to_q`; `attn1.processor.to_out` → `attn1.to_out.0`.
fn processor_path(stem: &str) -> String {
    match stem.rsplit_once(".processor.") {
        Some((attn, "to_out")) => format!("{attn}.to_out.0"),
        Some((attn, proj)) => format!("{attn}.{proj}"),
        None => stem.to_string(),
    }
}

/// `lora_alpha` for `component` from the safetensors header's `lora_adapter_metadata` JSON
/// (`unet.lora_alpha`, or unprefixed), as diffusers' LoRA loader reads it.
fn metadata_alpha(lora: &TensorStore, component: &str) -> Result<Option<f32>> {
    let Some(raw) = lora.metadata().get("lora_adapter_metadata") else {
        return Ok(None);
    };
    let file = format!("{} (lora_adapter_metadata)", lora.name());
    let meta: serde_json::Value = serde_json::from_str(raw).map_err(|e| Error::json(&file, e))?;
    let get = |key: &str| {
        meta.get(format!("{component}.{key}"))
            .or_else(|| meta.get(key))
    };
    for pattern in ["alpha_pattern", "rank_pattern"] {
        if get(pattern)
            .and_then(|v| v.as_object())
            .is_some_and(|o| !o.is_empty())
        {
            return Err(lora_err(
                &file,
                format!("per-module `{pattern}` is not supported"),
            ));
        }
    }
    Ok(get("lora_alpha").and_then(|v| v.as_f64()).map(|a| a as f32))
}

fn lora_err(file: &str, message: impl Into<String>) -> Error {
    Error::SafeTensors {
        file: file.to_string(),
        message: message.into(),
    }
}

impl TensorStore {
    /// Merges the LoRA keys of `lora` whose module path starts with `component` (`unet`,
    /// `text_encoder`; unprefixed keys count as `unet`) into this store, scaled by `scale`.
    /// Returns the number of weights updated; keys of other components are left unmarked.
    pub fn merge_lora(&mut self, lora: &TensorStore, component: &str, scale: f32) -> Result<usize> {
        let file = lora.name().to_string();
        let header_alpha = metadata_alpha(lora, component)?;
        let mut pairs: BTreeMap<String, LoraPair> = BTreeMap::new();
        // kohya names: this store's weight paths with `_` for `.`.
        let mut kohya_names: Option<BTreeMap<String, String>> = None;
        for key in lora.keys() {
            let Some((module, role)) = parse_key(key) else {
                continue;
            };
            let kohya = KOHYA_PREFIXES
                .iter()
                .find_map(|(prefix, c)| module.strip_prefix(prefix).map(|stem| (*c, stem)));
            let module = if let Some((c, stem)) = kohya {
                if c != component {
                    continue;
                }
                let names = kohya_names.get_or_insert_with(|| {
                    self.keys()
                        .filter_map(|k| k.strip_suffix(".weight"))
                        .map(|m| (m.replace('.', "_"), m.to_string()))
                        .collect()
                });
                match names.get(stem) {
                    Some(module) => module.clone(),
                    None => {
                        return Err(lora_err(
                            &file,
                            format!(
                                "`{key}`: the {component} has no weight named `{stem}` (kohya form)"
                            ),
                        ));
                    }
                }
            } else {
                let module = module.strip_prefix("base_model.model.").unwrap_or(&module);
                match module.split_once('.') {
                    Some((first, rest)) if first == "unet" || first == "text_encoder" => {
                        if first != component {
                            continue;
                        }
                        rest.to_string()
                    }
                    _ if component == "unet" => module.to_string(),
                    _ => continue,
                }
            };
            let pair = pairs.entry(module).or_insert(LoraPair {
                down: None,
                up: None,
                alpha: None,
            });
            let slot = match role {
                "down" => &mut pair.down,
                "up" => &mut pair.up,
                _ => &mut pair.alpha,
            };
            *slot = Some(key.to_string());
        }
        for (module, pair) in &pairs {
            let (Some(down_key), Some(up_key)) = (&pair.down, &pair.up) else {
                return Err(lora_err(
                    &file,
                    format!("`{module}`: LoRA needs both a down (A) and an up (B) weight"),
                ));
            };
            let target = format!("{module}.weight");
            let base_shape = self
                .shape(&target)
                .ok_or_else(|| {
                    lora_err(
                        &file,
                        format!("`{down_key}` targets `{target}`, which the model does not have"),
                    )
                })?
                .to_vec();
            let down_shape = lora.shape(down_key).expect("listed key").to_vec();
            let up_shape = lora.shape(up_key).expect("listed key").to_vec();
            let rank = down_shape[0];
            let (out, rest): (usize, usize) = (base_shape[0], base_shape[1..].iter().product());
            let shapes_ok = !down_shape.is_empty()
                && up_shape.len() >= 2
                && up_shape[0] == out
                && up_shape[1] == rank
                && up_shape[2..].iter().all(|&d| d == 1)
                && down_shape[1..].iter().product::<usize>() == rest
                && down_shape.len() == base_shape.len();
            if !shapes_ok {
                return Err(Error::ShapeMismatch {
                    file: file.clone(),
                    key: format!("{down_key} / {up_key}"),
                    expected: base_shape,
                    found: [up_shape, down_shape].concat(),
                });
            }
            let down = lora.read_f32(down_key, &down_shape)?;
            let up = lora.read_f32(up_key, &up_shape)?;
            let alpha = match &pair.alpha {
                Some(k) => {
                    let shape = lora.shape(k).expect("listed key").to_vec();
                    lora.read_f32(k, &shape)?
                        .first()
                        .copied()
                        .ok_or_else(|| lora_err(&file, format!("`{k}` is empty")))?
                }
                None => header_alpha.unwrap_or(rank as f32),
            };
            let factor = scale * alpha / rank as f32;
            let mut weight = self.read_f32(&target, &base_shape)?;
            for o in 0..out {
                for r in 0..rank {
                    let u = up[o * rank + r] * factor;
                    if u == 0.0 {
                        continue;
                    }
                    let row = &down[r * rest..(r + 1) * rest];
                    for (w, d) in weight[o * rest..(o + 1) * rest].iter_mut().zip(row) {
                        *w += u * d;
                    }
                }
            }
            self.replace_f32(&target, base_shape, weight);
        }
        Ok(pairs.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_styles() {
        let cases = [
            (
                "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.lora_A.weight",
                "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q",
                "down",
            ),
            (
                "mid_block.attentions.0.transformer_blocks.0.attn2.to_out.0.lora.up.weight",
                "mid_block.attentions.0.transformer_blocks.0.attn2.to_out.0",
                "up",
            ),
            (
                "up_blocks.1.attentions.0.transformer_blocks.0.attn1.processor.to_out_lora.down.weight",
                "up_blocks.1.attentions.0.transformer_blocks.0.attn1.to_out.0",
                "down",
            ),
            (
                "up_blocks.1.attentions.0.transformer_blocks.0.attn1.processor.to_k_lora.up.weight",
                "up_blocks.1.attentions.0.transformer_blocks.0.attn1.to_k",
                "up",
            ),
            ("unet.conv_in.alpha", "unet.conv_in", "alpha"),
        ];
        for (key, module, role) in cases {
            assert_eq!(parse_key(key), Some((module.to_string(), role)), "{key}");
        }
        assert_eq!(parse_key("conv_in.weight"), None);
    }

    fn f32_bytes(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    fn lora_file(metadata: Option<&str>) -> TensorStore {
        use safetensors::Dtype;
        use safetensors::tensor::TensorView;
        let a = f32_bytes(&[1.0, 2.0, 3.0, 0.5, -1.0, 2.0]); // down: r=2 × in=3
        let b = f32_bytes(&[1.0, 0.0, 0.0, 1.0]); // up: out=2 × r=2
        let views = [
            (
                "unet.proj.lora_A.weight",
                TensorView::new(Dtype::F32, vec![2, 3], &a).unwrap(),
            ),
            (
                "unet.proj.lora_B.weight",
                TensorView::new(Dtype::F32, vec![2, 2], &b).unwrap(),
            ),
        ];
        let meta = metadata.map(|m| {
            [("lora_adapter_metadata".to_string(), m.to_string())]
                .into_iter()
                .collect()
        });
        let bytes = safetensors::serialize(views, meta).unwrap();
        TensorStore::from_bytes("lora.safetensors", bytes).unwrap()
    }

    /// A base store with one zero `[2, 3]` weight, `proj.weight`.
    fn zero_base() -> TensorStore {
        let mut base = TensorStore::empty("base");
        let zeros = f32_bytes(&[0.0; 6]);
        base.insert("proj.weight", safetensors::Dtype::F32, vec![2, 3], zeros)
            .unwrap();
        base
    }

    fn merged(metadata: Option<&str>, scale: f32) -> Vec<f32> {
        let mut base = zero_base();
        base.merge_lora(&lora_file(metadata), "unet", scale)
            .unwrap();
        base.read_f32("proj.weight", &[2, 3]).unwrap()
    }

    #[test]
    fn alpha_from_the_diffusers_metadata_header() {
        // B·A = A here (B = I); W = scale · α / r · A.
        let a = [1.0, 2.0, 3.0, 0.5, -1.0, 2.0];
        let scaled = |f: f32| a.iter().map(|x| x * f).collect::<Vec<f32>>();
        assert_eq!(merged(None, 1.0), scaled(1.0));
        assert_eq!(merged(None, 0.5), scaled(0.5));
        let meta = r#"{"unet.lora_alpha": 8, "unet.r": 2, "unet.alpha_pattern": {}, "unet.rank_pattern": {}}"#;
        assert_eq!(merged(Some(meta), 1.0), scaled(4.0));
        assert_eq!(merged(Some(r#"{"lora_alpha": 1}"#), 1.0), scaled(0.5));
        let err = zero_base()
            .merge_lora(
                &lora_file(Some(r#"{"unet.alpha_pattern": {"proj": 3}}"#)),
                "unet",
                1.0,
            )
            .unwrap_err();
        assert!(err.to_string().contains("alpha_pattern"), "{err}");
    }

    /// A kohya-keyed file: `lora_<prefix>proj_x.lora_down/up.weight` and `.alpha` = 1 (r = 2).
    fn kohya_file(stem: &str) -> TensorStore {
        use safetensors::Dtype;
        use safetensors::tensor::TensorView;
        let a = f32_bytes(&[1.0, 2.0, 3.0, 0.5, -1.0, 2.0]);
        let b = f32_bytes(&[1.0, 0.0, 0.0, 1.0]);
        let alpha = f32_bytes(&[1.0]);
        let keys = [
            format!("{stem}.lora_down.weight"),
            format!("{stem}.lora_up.weight"),
            format!("{stem}.alpha"),
        ];
        let views = [
            (
                keys[0].as_str(),
                TensorView::new(Dtype::F32, vec![2, 3], &a).unwrap(),
            ),
            (
                keys[1].as_str(),
                TensorView::new(Dtype::F32, vec![2, 2], &b).unwrap(),
            ),
            (
                keys[2].as_str(),
                TensorView::new(Dtype::F32, vec![], &alpha).unwrap(),
            ),
        ];
        let bytes = safetensors::serialize(views, None).unwrap();
        TensorStore::from_bytes("kohya.safetensors", bytes).unwrap()
    }

    #[test]
    fn kohya_keys_find_the_module_by_its_underscored_path() {
        let mut base = TensorStore::empty("base");
        base.insert(
            "down_blocks.0.proj_x.weight",
            safetensors::Dtype::F32,
            vec![2, 3],
            f32_bytes(&[0.0; 6]),
        )
        .unwrap();
        // α / r = 1/2.
        let updated = base
            .merge_lora(&kohya_file("lora_unet_down_blocks_0_proj_x"), "unet", 1.0)
            .unwrap();
        assert_eq!(updated, 1);
        assert_eq!(
            base.read_f32("down_blocks.0.proj_x.weight", &[2, 3])
                .unwrap(),
            vec![0.5, 1.0, 1.5, 0.25, -0.5, 1.0]
        );
        // The text encoder's keys are not the UNet's, and an unknown module is named.
        let te = kohya_file("lora_te_text_model_proj");
        assert_eq!(base.merge_lora(&te, "unet", 1.0).unwrap(), 0);
        let err = base
            .merge_lora(&kohya_file("lora_unet_no_such_block"), "unet", 1.0)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("no_such_block") && err.contains("kohya"),
            "{err}"
        );
    }
}
