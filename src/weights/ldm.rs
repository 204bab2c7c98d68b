//! The original Stable Diffusion checkpoint layout (CompVis latent diffusion: the single
//! `.safetensors` / `.ckpt` files of A1111, ComfyUI and model-sharing sites) mapped to diffusers
//! names: the one table (`ldm_key`), as diffusers' `convert_ldm_unet_checkpoint`,
//! `convert_ldm_vae_checkpoint`, `convert_ldm_clip_checkpoint` and
//! `convert_open_clip_checkpoint` rename.
//!
//! Prefixes: `model.diffusion_model.` (UNet), `first_stage_model.` (VAE),
//! `cond_stage_model.transformer.` (SD 1.x, CLIP ViT-L) or `cond_stage_model.model.` (SD 2.x,
//! OpenCLIP ViT-H, whose fused `attn.in_proj_*` is split into `q/k/v_proj`). EMA weights
//! (`model_ema.<UNet key without dots>`) replace the UNet's with `ema`. Training buffers
//! (`betas`, `alphas_cumprod`, …) are skipped; any other key is an error naming it.

use std::collections::BTreeMap;

use super::TensorStore;
use crate::error::{Error, Result};

/// The text-encoder family of a checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// Stable Diffusion 1.x: CLIP ViT-L/14 (`cond_stage_model.transformer.*`).
    Sd1,
    /// Stable Diffusion 2.x: OpenCLIP ViT-H/14 (`cond_stage_model.model.*`).
    Sd2,
}

/// A checkpoint split into diffusers components.
#[derive(Debug)]
pub struct LdmComponents {
    /// The text-encoder family.
    pub family: Family,
    /// `unet/` weights.
    pub unet: TensorStore,
    /// `vae/` weights.
    pub vae: TensorStore,
    /// `text_encoder/` weights.
    pub text_encoder: TensorStore,
    /// Transformer layers of the text encoder in the file (SD 2.x files hold one more than
    /// the pipeline uses).
    pub text_layers: usize,
}

/// Where an LDM key goes.
#[derive(Debug, Clone, PartialEq)]
enum Target {
    /// `(component, diffusers key, shape)`.
    To(&'static str, String, Vec<usize>),
    /// OpenCLIP's fused `in_proj_{weight,bias}` of text layer `layer`: split into q, k, v.
    FusedQkv { layer: usize, bias: bool },
    /// Known, unused (training buffers, EMA copies, projections the pipeline does not run).
    Skip,
}

/// Training buffers of LDM checkpoints that no pipeline reads.
const LDM_BUFFERS: [&str; 16] = [
    "betas",
    "alphas_cumprod",
    "alphas_cumprod_prev",
    "sqrt_alphas_cumprod",
    "sqrt_one_minus_alphas_cumprod",
    "log_one_minus_alphas_cumprod",
    "sqrt_recip_alphas_cumprod",
    "sqrt_recipm1_alphas_cumprod",
    "posterior_variance",
    "posterior_log_variance_clipped",
    "posterior_mean_coef1",
    "posterior_mean_coef2",
    "logvar",
    "lvlb_weights",
    "cond_stage_model.model.text_projection",
    "cond_stage_model.model.logit_scale",
];

/// The layout facts the UNet renames need: layers per down block (from the keys).
#[derive(Debug, Clone, Copy)]
struct UnetLayout {
    layers: usize,
    up_levels: usize,
}

/// `(block, layer)` of LDM `input_blocks.{i}` / `output_blocks.{i}` with `layers` resnets per
/// down block (`layers + 1` output blocks per up block).
fn block_layer(i: usize, down: bool, layers: usize) -> (usize, usize) {
    if down {
        ((i - 1) / (layers + 1), (i - 1) % (layers + 1))
    } else {
        (i / (layers + 1), i % (layers + 1))
    }
}

/// LDM resnet names → diffusers' (`in_layers.0` → `norm1`, …).
fn resnet(rest: &str) -> Option<String> {
    const NAMES: [(&str, &str); 6] = [
        ("in_layers.0.", "norm1."),
        ("in_layers.2.", "conv1."),
        ("emb_layers.1.", "time_emb_proj."),
        ("out_layers.0.", "norm2."),
        ("out_layers.3.", "conv2."),
        ("skip_connection.", "conv_shortcut."),
    ];
    NAMES
        .iter()
        .find_map(|(from, to)| rest.strip_prefix(from).map(|r| format!("{to}{r}")))
}

/// VAE resnet names (`nin_shortcut` → `conv_shortcut`, the rest unchanged).
fn vae_resnet(rest: &str) -> String {
    match rest.strip_prefix("nin_shortcut.") {
        Some(r) => format!("conv_shortcut.{r}"),
        None => rest.to_string(),
    }
}

fn split_index(s: &str) -> Option<(usize, &str)> {
    let (i, rest) = s.split_once('.')?;
    Some((i.parse().ok()?, rest))
}

fn unet_key(key: &str, layout: UnetLayout) -> Option<String> {
    const TOP: [(&str, &str); 5] = [
        ("time_embed.0.", "time_embedding.linear_1."),
        ("time_embed.2.", "time_embedding.linear_2."),
        ("input_blocks.0.0.", "conv_in."),
        ("out.0.", "conv_norm_out."),
        ("out.2.", "conv_out."),
    ];
    if let Some(k) = TOP
        .iter()
        .find_map(|(from, to)| key.strip_prefix(from).map(|r| format!("{to}{r}")))
    {
        return Some(k);
    }
    if let Some(rest) = key.strip_prefix("input_blocks.") {
        let (i, rest) = split_index(rest)?;
        let (j, rest) = split_index(rest)?;
        let (b, l) = block_layer(i, true, layout.layers);
        return Some(match (j, rest.strip_prefix("op.")) {
            (0, Some(r)) => format!("down_blocks.{b}.downsamplers.0.conv.{r}"),
            (0, None) => format!("down_blocks.{b}.resnets.{l}.{}", resnet(rest)?),
            (1, None) => format!("down_blocks.{b}.attentions.{l}.{rest}"),
            _ => return None,
        });
    }
    if let Some(rest) = key.strip_prefix("middle_block.") {
        let (j, rest) = split_index(rest)?;
        return Some(match j {
            0 | 2 => format!("mid_block.resnets.{}.{}", j / 2, resnet(rest)?),
            1 => format!("mid_block.attentions.0.{rest}"),
            _ => return None,
        });
    }
    if let Some(rest) = key.strip_prefix("output_blocks.") {
        let (i, rest) = split_index(rest)?;
        let (j, rest) = split_index(rest)?;
        let (b, l) = block_layer(i, false, layout.layers);
        if b >= layout.up_levels {
            return None;
        }
        return Some(match (j, rest.strip_prefix("conv.")) {
            (1 | 2, Some(r)) => format!("up_blocks.{b}.upsamplers.0.conv.{r}"),
            (0, _) => format!("up_blocks.{b}.resnets.{l}.{}", resnet(rest)?),
            (1, None) => format!("up_blocks.{b}.attentions.{l}.{rest}"),
            _ => return None,
        });
    }
    None
}

fn vae_key(key: &str, shape: &[usize], up_levels: usize) -> Option<(String, Vec<usize>)> {
    const SAME: [&str; 6] = [
        "encoder.conv_in.",
        "encoder.conv_out.",
        "decoder.conv_in.",
        "decoder.conv_out.",
        "quant_conv.",
        "post_quant_conv.",
    ];
    if SAME.iter().any(|p| key.starts_with(p)) {
        return Some((key.to_string(), shape.to_vec()));
    }
    for part in ["encoder", "decoder"] {
        if let Some(r) = key.strip_prefix(&format!("{part}.norm_out.")) {
            return Some((format!("{part}.conv_norm_out.{r}"), shape.to_vec()));
        }
    }
    let (part, rest) = key.split_once('.')?;
    if part != "encoder" && part != "decoder" {
        return None;
    }
    if let Some(mid) = rest.strip_prefix("mid.") {
        if let Some(r) = mid.strip_prefix("block_1.") {
            return Some((
                format!("{part}.mid_block.resnets.0.{}", vae_resnet(r)),
                shape.to_vec(),
            ));
        }
        if let Some(r) = mid.strip_prefix("block_2.") {
            return Some((
                format!("{part}.mid_block.resnets.1.{}", vae_resnet(r)),
                shape.to_vec(),
            ));
        }
        let r = mid.strip_prefix("attn_1.")?;
        const ATTN: [(&str, &str); 5] = [
            ("norm.", "group_norm."),
            ("q.", "to_q."),
            ("k.", "to_k."),
            ("v.", "to_v."),
            ("proj_out.", "to_out.0."),
        ];
        let (from, to) = ATTN.iter().find(|(from, _)| r.starts_with(from))?;
        let name = format!("{part}.mid_block.attentions.0.{to}{}", &r[from.len()..]);
        // LDM stores the projections as 1×1 convolutions; diffusers as linear layers.
        let shape = match shape {
            [o, i, 1, 1] => vec![*o, *i],
            other => other.to_vec(),
        };
        return Some((name, shape));
    }
    let (blocks, level_name) = if part == "encoder" {
        ("down", "down_blocks")
    } else {
        ("up", "up_blocks")
    };
    let rest = rest.strip_prefix(blocks)?.strip_prefix('.')?;
    let (i, rest) = split_index(rest)?;
    // The decoder's `up.{i}` counts from the lowest resolution; diffusers' `up_blocks` from
    // the highest.
    let level = if part == "decoder" {
        up_levels.checked_sub(i + 1)?
    } else {
        i
    };
    if let Some(r) = rest.strip_prefix("block.") {
        let (j, r) = split_index(r)?;
        return Some((
            format!("{part}.{level_name}.{level}.resnets.{j}.{}", vae_resnet(r)),
            shape.to_vec(),
        ));
    }
    let sampler = if part == "encoder" {
        "downsample.conv."
    } else {
        "upsample.conv."
    };
    let r = rest.strip_prefix(sampler)?;
    let kind = if part == "encoder" {
        "downsamplers"
    } else {
        "upsamplers"
    };
    Some((
        format!("{part}.{level_name}.{level}.{kind}.0.conv.{r}"),
        shape.to_vec(),
    ))
}

fn open_clip_key(key: &str, text_layers: usize) -> Option<Target> {
    let te = |k: String| Some(Target::To("text_encoder", k, Vec::new()));
    match key {
        "token_embedding.weight" => {
            return te("text_model.embeddings.token_embedding.weight".into());
        }
        "positional_embedding" => {
            return te("text_model.embeddings.position_embedding.weight".into());
        }
        _ => {}
    }
    if let Some(r) = key.strip_prefix("ln_final.") {
        return te(format!("text_model.final_layer_norm.{r}"));
    }
    let rest = key.strip_prefix("transformer.resblocks.")?;
    let (i, rest) = split_index(rest)?;
    if i >= text_layers {
        return Some(Target::Skip);
    }
    match rest {
        "attn.in_proj_weight" => {
            return Some(Target::FusedQkv {
                layer: i,
                bias: false,
            });
        }
        "attn.in_proj_bias" => {
            return Some(Target::FusedQkv {
                layer: i,
                bias: true,
            });
        }
        _ => {}
    }
    const NAMES: [(&str, &str); 5] = [
        ("ln_1.", "layer_norm1."),
        ("ln_2.", "layer_norm2."),
        ("mlp.c_fc.", "mlp.fc1."),
        ("mlp.c_proj.", "mlp.fc2."),
        ("attn.out_proj.", "self_attn.out_proj."),
    ];
    let (from, to) = NAMES.iter().find(|(from, _)| rest.starts_with(from))?;
    te(format!(
        "text_model.encoder.layers.{i}.{to}{}",
        &rest[from.len()..]
    ))
}

/// Where the LDM key `key` (of `shape`) goes: the one table. `None`: not a key of this layout.
fn ldm_key(
    key: &str,
    shape: &[usize],
    layout: UnetLayout,
    vae_up: usize,
    text_layers: usize,
) -> Option<Target> {
    if LDM_BUFFERS.contains(&key) || key.starts_with("model_ema.") {
        return Some(Target::Skip);
    }
    if let Some(k) = key.strip_prefix("model.diffusion_model.") {
        return unet_key(k, layout).map(|k| Target::To("unet", k, shape.to_vec()));
    }
    if let Some(k) = key.strip_prefix("first_stage_model.") {
        return vae_key(k, shape, vae_up).map(|(k, s)| Target::To("vae", k, s));
    }
    if let Some(k) = key.strip_prefix("cond_stage_model.transformer.") {
        if k.ends_with("embeddings.position_ids") {
            return Some(Target::Skip);
        }
        // Older files omit the `text_model.` level.
        let k = k.strip_prefix("text_model.").unwrap_or(k);
        return Some(Target::To(
            "text_encoder",
            format!("text_model.{k}"),
            shape.to_vec(),
        ));
    }
    if let Some(k) = key.strip_prefix("cond_stage_model.model.") {
        return match open_clip_key(k, text_layers)? {
            Target::To(c, k, _) => Some(Target::To(c, k, shape.to_vec())),
            other => Some(other),
        };
    }
    None
}

/// The distinct indices `i` of keys `prefix{i}.…`.
fn indices(store: &TensorStore, prefix: &str) -> std::collections::BTreeSet<usize> {
    store
        .keys()
        .filter_map(|k| k.strip_prefix(prefix))
        .filter_map(|r| split_index(r).map(|(i, _)| i))
        .collect()
}

/// The LDM EMA key of a UNet key: `model_ema.` + the key after `model.` without dots.
fn ema_key(key: &str) -> Option<String> {
    key.strip_prefix("model.")
        .map(|k| format!("model_ema.{}", k.replace('.', "")))
}

/// Splits an LDM checkpoint into diffusers components. `ema` takes the UNet from the EMA
/// copy; `text_layers` is the number of text-encoder layers the pipeline runs (`None`: every
/// layer of an SD 1.x file, all but the last of an SD 2.x file, as Stable Diffusion 2 uses the
/// penultimate layer). `file` names the checkpoint in errors.
pub fn split(
    store: &TensorStore,
    ema: bool,
    text_layers: Option<usize>,
    file: &str,
) -> Result<LdmComponents> {
    let has = |p: &str| store.keys().any(|k| k.starts_with(p));
    let family = if has("cond_stage_model.model.") {
        Family::Sd2
    } else if has("cond_stage_model.transformer.") {
        Family::Sd1
    } else {
        return Err(Error::MissingKey {
            file: file.to_string(),
            key: "cond_stage_model.transformer.* (SD 1.x) or cond_stage_model.model.* (SD 2.x)"
                .into(),
        });
    };
    for prefix in ["model.diffusion_model.", "first_stage_model."] {
        if !has(prefix) {
            return Err(Error::MissingKey {
                file: file.to_string(),
                key: format!("{prefix}*"),
            });
        }
    }
    let input = indices(store, "model.diffusion_model.input_blocks.");
    let first_down = input.iter().copied().find(|i| {
        store.contains(&format!(
            "model.diffusion_model.input_blocks.{i}.0.op.weight"
        ))
    });
    let layers = match first_down {
        Some(i) => i - 1,
        None => input.iter().max().copied().unwrap_or(0),
    };
    let outputs = indices(store, "model.diffusion_model.output_blocks.").len();
    let layout = UnetLayout {
        layers,
        up_levels: outputs.div_ceil(layers + 1),
    };
    let vae_up = indices(store, "first_stage_model.decoder.up.").len();
    let file_text_layers = match family {
        Family::Sd1 => indices(
            store,
            "cond_stage_model.transformer.text_model.encoder.layers.",
        )
        .len()
        .max(indices(store, "cond_stage_model.transformer.encoder.layers.").len()),
        Family::Sd2 => indices(store, "cond_stage_model.model.transformer.resblocks.").len(),
    };
    let run_layers = text_layers.unwrap_or(match family {
        Family::Sd1 => file_text_layers,
        Family::Sd2 => file_text_layers.saturating_sub(1),
    });
    let mut parts: BTreeMap<&str, TensorStore> = ["unet", "vae", "text_encoder"]
        .into_iter()
        .map(|c| (c, TensorStore::empty(format!("{file} ({c})"))))
        .collect();
    let keys: Vec<String> = store.keys().map(str::to_string).collect();
    for key in &keys {
        let shape = store.shape(key).expect("listed key").to_vec();
        let target = ldm_key(key, &shape, layout, vae_up, run_layers).ok_or_else(|| {
            Error::config(
                file,
                key.as_str(),
                format!("{shape:?}"),
                "not a key of the Stable Diffusion checkpoint layout",
            )
        })?;
        match target {
            Target::Skip => {}
            Target::To(component, new_key, new_shape) => {
                // The EMA copy of a UNet weight, when asked for.
                let source = match ema_key(key).filter(|_| ema && component == "unet") {
                    Some(e) => {
                        if !store.contains(&e) {
                            return Err(Error::MissingKey {
                                file: file.to_string(),
                                key: format!("{e} (the EMA copy of {key}; --ema)"),
                            });
                        }
                        e
                    }
                    None => key.clone(),
                };
                let (dtype, bytes) = store.read_raw(&source, &shape)?;
                parts.get_mut(component).expect("known component").insert(
                    new_key,
                    dtype,
                    new_shape,
                    bytes.to_vec(),
                )?;
            }
            Target::FusedQkv { layer, bias } => {
                let (dtype, bytes) = store.read_raw(key, &shape)?;
                let rows = shape[0] / 3;
                if rows * 3 != shape[0] {
                    return Err(Error::config(
                        file,
                        key.as_str(),
                        format!("{shape:?}"),
                        "the fused q/k/v projection must have 3·d rows",
                    ));
                }
                let per = bytes.len() / 3;
                let te = parts.get_mut("text_encoder").expect("known component");
                for (n, proj) in ["q_proj", "k_proj", "v_proj"].iter().enumerate() {
                    let what = if bias { "bias" } else { "weight" };
                    let mut s = shape.clone();
                    s[0] = rows;
                    te.insert(
                        format!("text_model.encoder.layers.{layer}.self_attn.{proj}.{what}"),
                        dtype,
                        s,
                        bytes[n * per..(n + 1) * per].to_vec(),
                    )?;
                }
            }
        }
    }
    let mut take = |c: &str| parts.remove(c).expect("known component");
    Ok(LdmComponents {
        family,
        unet: take("unet"),
        vae: take("vae"),
        text_encoder: take("text_encoder"),
        text_layers: file_text_layers,
    })
}

/// safetensors bytes of `store` (every key, its dtype), for a component folder.
pub fn to_safetensors(store: &TensorStore) -> Result<Vec<u8>> {
    let mut tensors = Vec::new();
    for key in store.keys() {
        let shape = store.shape(key).expect("listed key").to_vec();
        let (dtype, bytes) = store.read_raw(key, &shape)?;
        tensors.push((key, dtype, shape, bytes));
    }
    let mut views = Vec::new();
    for (key, dtype, shape, bytes) in &tensors {
        let view =
            safetensors::tensor::TensorView::new(*dtype, shape.clone(), bytes).map_err(|e| {
                Error::SafeTensors {
                    file: store.name().to_string(),
                    message: format!("{key}: {e}"),
                }
            })?;
        views.push((key.to_string(), view));
    }
    safetensors::serialize(views, None).map_err(|e| Error::SafeTensors {
        file: store.name().to_string(),
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_follows_diffusers_conversion() {
        let layout = UnetLayout {
            layers: 2,
            up_levels: 4,
        };
        let cases = [
            ("time_embed.0.weight", "time_embedding.linear_1.weight"),
            ("input_blocks.0.0.bias", "conv_in.bias"),
            (
                "input_blocks.1.0.in_layers.0.weight",
                "down_blocks.0.resnets.0.norm1.weight",
            ),
            (
                "input_blocks.2.1.proj_in.weight",
                "down_blocks.0.attentions.1.proj_in.weight",
            ),
            (
                "input_blocks.3.0.op.weight",
                "down_blocks.0.downsamplers.0.conv.weight",
            ),
            (
                "input_blocks.4.0.skip_connection.weight",
                "down_blocks.1.resnets.0.conv_shortcut.weight",
            ),
            (
                "input_blocks.5.0.emb_layers.1.bias",
                "down_blocks.1.resnets.1.time_emb_proj.bias",
            ),
            (
                "middle_block.2.out_layers.3.weight",
                "mid_block.resnets.1.conv2.weight",
            ),
            (
                "middle_block.1.transformer_blocks.0.attn2.to_k.weight",
                "mid_block.attentions.0.transformer_blocks.0.attn2.to_k.weight",
            ),
            (
                "output_blocks.2.1.conv.weight",
                "up_blocks.0.upsamplers.0.conv.weight",
            ),
            (
                "output_blocks.5.2.conv.bias",
                "up_blocks.1.upsamplers.0.conv.bias",
            ),
            (
                "output_blocks.5.1.norm.weight",
                "up_blocks.1.attentions.2.norm.weight",
            ),
            (
                "output_blocks.11.0.out_layers.0.bias",
                "up_blocks.3.resnets.2.norm2.bias",
            ),
            ("out.2.weight", "conv_out.weight"),
        ];
        for (ldm, diffusers) in cases {
            assert_eq!(unet_key(ldm, layout).as_deref(), Some(diffusers), "{ldm}");
        }
        let vae = [
            (
                "encoder.down.1.block.0.nin_shortcut.weight",
                "encoder.down_blocks.1.resnets.0.conv_shortcut.weight",
            ),
            (
                "encoder.down.0.downsample.conv.weight",
                "encoder.down_blocks.0.downsamplers.0.conv.weight",
            ),
            (
                "decoder.up.0.block.2.conv1.weight",
                "decoder.up_blocks.3.resnets.2.conv1.weight",
            ),
            (
                "decoder.up.3.upsample.conv.bias",
                "decoder.up_blocks.0.upsamplers.0.conv.bias",
            ),
            (
                "decoder.mid.block_2.norm1.weight",
                "decoder.mid_block.resnets.1.norm1.weight",
            ),
            ("post_quant_conv.weight", "post_quant_conv.weight"),
            ("decoder.norm_out.bias", "decoder.conv_norm_out.bias"),
        ];
        for (ldm, diffusers) in vae {
            assert_eq!(
                vae_key(ldm, &[1], 4).map(|(k, _)| k).as_deref(),
                Some(diffusers),
                "{ldm}"
            );
        }
        assert_eq!(
            vae_key("encoder.mid.attn_1.q.weight", &[8, 8, 1, 1], 4),
            Some((
                "encoder.mid_block.attentions.0.to_q.weight".into(),
                vec![8, 8]
            ))
        );
        assert_eq!(
            open_clip_key("transformer.resblocks.1.mlp.c_fc.bias", 23),
            Some(Target::To(
                "text_encoder",
                "text_model.encoder.layers.1.mlp.fc1.bias".into(),
                vec![]
            ))
        );
        assert_eq!(
            open_clip_key("transformer.resblocks.23.ln_1.weight", 23),
            Some(Target::Skip)
        );
        assert_eq!(
            open_clip_key("transformer.resblocks.0.attn.in_proj_bias", 23),
            Some(Target::FusedQkv {
                layer: 0,
                bias: true
            })
        );
        assert_eq!(
            ema_key("model.diffusion_model.input_blocks.0.0.weight").as_deref(),
            Some("model_ema.diffusion_modelinput_blocks00weight")
        );
        assert!(ldm_key("something.else", &[1], layout, 4, 12).is_none());
        assert_eq!(
            ldm_key("alphas_cumprod", &[1000], layout, 4, 12),
            Some(Target::Skip)
        );
    }
}
