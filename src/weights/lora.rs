//! LoRA weights merged into a base [`TensorStore`] at load: `W ← W + s · (α / r) · B A`.
//!
//! Key styles understood (each with an optional `unet.` / `text_encoder.` component prefix and
//! PEFT's `base_model.model.` prefix):
//! - PEFT / current diffusers: `<module>.lora_A.weight`, `<module>.lora_B.weight`;
//! - older diffusers: `<module>.lora.down.weight`, `<module>.lora.up.weight`;
//! - attention-processor LoRA: `<attn>.processor.to_q_lora.down.weight` (→ `<attn>.to_q`,
//!   `to_out_lora` → `to_out.0`);
//! - an optional `<module>.alpha` (or `.lora.alpha`) scalar; without it `α = r` (scale 1).
//!
//! Linear (`[out, in]`) and convolution (`[out, in, kh, kw]`, with `B` of shape `[out, r, 1, 1]`)
//! targets are supported. Every LoRA key must land on a base weight of matching shape.

use std::collections::BTreeMap;

use super::TensorStore;
use crate::error::{Error, Result};

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

/// `attn1.processor.to_q` → `attn1.to_q`; `attn1.processor.to_out` → `attn1.to_out.0`.
fn processor_path(stem: &str) -> String {
    match stem.rsplit_once(".processor.") {
        Some((attn, "to_out")) => format!("{attn}.to_out.0"),
        Some((attn, proj)) => format!("{attn}.{proj}"),
        None => stem.to_string(),
    }
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
        let mut pairs: BTreeMap<String, LoraPair> = BTreeMap::new();
        for key in lora.keys() {
            let Some((module, role)) = parse_key(key) else {
                continue;
            };
            let module = module
                .strip_prefix("base_model.model.")
                .unwrap_or(&module)
                .to_string();
            let module = match module.split_once('.') {
                Some((first, rest)) if first == "unet" || first == "text_encoder" => {
                    if first != component {
                        continue;
                    }
                    rest.to_string()
                }
                _ if component == "unet" => module,
                _ => continue,
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
                None => rank as f32,
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
}
