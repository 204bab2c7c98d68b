//! `unet/config.json` as diffusers writes it, validated against what we implement.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};

/// A config value diffusers accepts either as one value for every block or as a list.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum PerBlock<T> {
    /// Same value for every block.
    One(T),
    /// One value per down block.
    Many(Vec<T>),
}

impl<T: Clone + std::fmt::Debug> PerBlock<T> {
    /// Expands to `n` values; a list of another length is an error naming `key`.
    pub fn expand(&self, n: usize, file: &str, key: &str) -> Result<Vec<T>> {
        match self {
            PerBlock::One(v) => Ok(vec![v.clone(); n]),
            PerBlock::Many(v) if v.len() == n => Ok(v.clone()),
            PerBlock::Many(v) => Err(Error::config(
                file,
                key,
                format!("{v:?}"),
                format!("expected {n} values, one per down block"),
            )),
        }
    }
}

/// The keys of diffusers' `UNet2DConditionModel` config that SD 1.x/2.x use.
///
/// Keys outside this struct are accepted only at their diffusers default (see
/// [`UNetConfig::from_json`]); anything else is refused with a typed error.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UNetConfig {
    /// Latent channels in.
    #[serde(default = "four")]
    pub in_channels: usize,
    /// Latent channels out.
    #[serde(default = "four")]
    pub out_channels: usize,
    /// `2 · x − 1` on the input.
    #[serde(default)]
    pub center_input_sample: bool,
    /// Sinusoid order `[cos, sin]` when true.
    #[serde(default = "yes")]
    pub flip_sin_to_cos: bool,
    /// `downscale_freq_shift` of the sinusoid.
    #[serde(default)]
    pub freq_shift: f64,
    /// Down block types.
    #[serde(default = "default_down")]
    pub down_block_types: Vec<String>,
    /// Mid block type (`UNetMidBlock2DCrossAttn` or `null`).
    #[serde(default = "default_mid")]
    pub mid_block_type: Option<String>,
    /// Up block types.
    #[serde(default = "default_up")]
    pub up_block_types: Vec<String>,
    /// Self-attention layers attend to the context too.
    #[serde(default = "no_per_block")]
    pub only_cross_attention: PerBlock<bool>,
    /// Channels per resolution level.
    #[serde(default = "default_channels")]
    pub block_out_channels: Vec<usize>,
    /// Resnets per down block.
    #[serde(default = "two_per_block")]
    pub layers_per_block: PerBlock<usize>,
    /// Padding of the stride-2 downsampling conv.
    #[serde(default = "one")]
    pub downsample_padding: usize,
    /// Output divisor of the mid block's resnets.
    #[serde(default = "one_f")]
    pub mid_block_scale_factor: f64,
    /// Only `silu`.
    #[serde(default = "default_act")]
    pub act_fn: String,
    /// GroupNorm groups.
    #[serde(default = "default_groups")]
    pub norm_num_groups: Option<usize>,
    /// GroupNorm epsilon of resnets and the output norm.
    #[serde(default = "default_norm_eps")]
    pub norm_eps: f64,
    /// Width of the text context.
    #[serde(default = "default_cross")]
    pub cross_attention_dim: PerBlock<usize>,
    /// Transformer blocks per attention layer.
    #[serde(default = "one_per_block")]
    pub transformer_layers_per_block: PerBlock<usize>,
    /// In SD configs this is the number of heads (a historical diffusers naming quirk).
    #[serde(default = "eight_per_block")]
    pub attention_head_dim: PerBlock<usize>,
    /// Must be null (diffusers refuses it for this model too).
    #[serde(default)]
    pub num_attention_heads: Option<Value>,
    /// Linear (`true`) or conv (`false`) transformer projections.
    #[serde(default)]
    pub use_linear_projection: bool,
    /// Attention in f32 under half precision (we always compute in f32).
    #[serde(default)]
    pub upcast_attention: bool,
    /// Kernel of `conv_in`.
    #[serde(default = "three")]
    pub conv_in_kernel: usize,
    /// Kernel of `conv_out`.
    #[serde(default = "three")]
    pub conv_out_kernel: usize,
    /// Override of the time-embedding width (default `4 · block_out_channels[0]`).
    #[serde(default)]
    pub time_embedding_dim: Option<usize>,
    /// Width of the guidance-scale embedding of LCM-distilled UNets (`time_embedding.cond_proj`;
    /// see [`guidance_scale_embedding`](super::guidance_scale_embedding)).
    #[serde(default)]
    pub time_cond_proj_dim: Option<usize>,
    /// Accepted but without effect: diffusers applies it only to block types SD UNets do not use
    /// (`ResnetDownsampleBlock2D`, `SimpleCrossAttn*Block2D`), not to `(CrossAttn)Down/UpBlock2D`.
    #[serde(default = "one_f")]
    pub resnet_out_scale_factor: f64,
    /// Nominal latent size (not needed to run).
    #[serde(default)]
    pub sample_size: Option<Value>,
}

fn four() -> usize {
    4
}
fn three() -> usize {
    3
}
fn one() -> usize {
    1
}
fn one_f() -> f64 {
    1.0
}
fn yes() -> bool {
    true
}
fn default_act() -> String {
    "silu".into()
}
fn default_groups() -> Option<usize> {
    Some(32)
}
fn default_norm_eps() -> f64 {
    1e-5
}
fn default_cross() -> PerBlock<usize> {
    PerBlock::One(1280)
}
fn default_channels() -> Vec<usize> {
    vec![320, 640, 1280, 1280]
}
fn default_down() -> Vec<String> {
    [
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "DownBlock2D",
    ]
    .map(String::from)
    .to_vec()
}
fn default_up() -> Vec<String> {
    [
        "UpBlock2D",
        "CrossAttnUpBlock2D",
        "CrossAttnUpBlock2D",
        "CrossAttnUpBlock2D",
    ]
    .map(String::from)
    .to_vec()
}
fn default_mid() -> Option<String> {
    Some("UNetMidBlock2DCrossAttn".into())
}
fn no_per_block() -> PerBlock<bool> {
    PerBlock::One(false)
}
fn two_per_block() -> PerBlock<usize> {
    PerBlock::One(2)
}
fn one_per_block() -> PerBlock<usize> {
    PerBlock::One(1)
}
fn eight_per_block() -> PerBlock<usize> {
    PerBlock::One(8)
}

/// Keys that must be absent or hold exactly this default (features SD 1.x/2.x never use).
const MUST_BE_DEFAULT: &[(&str, &str)] = &[
    ("encoder_hid_dim", "null"),
    ("encoder_hid_dim_type", "null"),
    ("class_embed_type", "null"),
    ("addition_embed_type", "null"),
    ("addition_time_embed_dim", "null"),
    ("num_class_embeds", "null"),
    ("projection_class_embeddings_input_dim", "null"),
    ("timestep_post_act", "null"),
    ("time_embedding_act_fn", "null"),
    ("cross_attention_norm", "null"),
    ("dual_cross_attention", "false"),
    ("class_embeddings_concat", "false"),
    ("resnet_skip_time_act", "false"),
    ("resnet_time_scale_shift", "\"default\""),
    ("time_embedding_type", "\"positional\""),
    ("attention_type", "\"default\""),
    ("reverse_transformer_layers_per_block", "null"),
    ("mid_block_only_cross_attention", "null"),
    ("addition_embed_type_num_heads", "64"),
];

/// What each down/up block is, resolved from the config.
#[derive(Debug, Clone)]
pub struct BlockPlan {
    /// Block has attention layers.
    pub cross_attn: bool,
    /// Resnets (down: `layers_per_block`; up: `layers_per_block + 1`).
    pub layers: usize,
    /// Heads of its attention layers.
    pub heads: usize,
    /// Transformer blocks per attention layer.
    pub transformer_layers: usize,
    /// Context width.
    pub context_dim: usize,
    /// `only_cross_attention`.
    pub only_cross_attention: bool,
}

impl UNetConfig {
    /// The latent side `sample_size` gives (an integer, or `[h, w]` with h = w), 64 when
    /// absent; anything else (a string, a negative or fractional number, 0) is an error.
    pub fn sample_side(&self, file: &str) -> Result<usize> {
        let Some(v) = &self.sample_size else {
            return Ok(64);
        };
        let side = |x: &Value| x.as_u64().filter(|s| *s > 0);
        let parsed = match v {
            Value::Array(a) if a.len() == 2 => side(&a[0]).filter(|h| side(&a[1]) == Some(*h)),
            other => side(other),
        };
        parsed.and_then(|s| usize::try_from(s).ok()).ok_or_else(|| {
            Error::config(
                file,
                "sample_size",
                v,
                "must be a positive integer (or [n, n])",
            )
        })
    }

    /// Parses `config.json` bytes and validates every key; `file` names the source in errors.
    pub fn from_json(bytes: &[u8], file: &str) -> Result<Self> {
        let raw: Value = serde_json::from_slice(bytes).map_err(|e| Error::json(file, e))?;
        for (key, default) in MUST_BE_DEFAULT {
            if let Some(v) = raw.get(*key) {
                let default: Value = serde_json::from_str(default).expect("valid default");
                if *v != default {
                    return Err(Error::config(
                        file,
                        *key,
                        v,
                        format!("only {default} is supported (Stable Diffusion 1.x/2.x UNets)"),
                    ));
                }
            }
        }
        let cfg: UNetConfig = serde_json::from_value(raw).map_err(|e| Error::json(file, e))?;
        cfg.validate(file)?;
        Ok(cfg)
    }

    fn validate(&self, file: &str) -> Result<()> {
        Error::check_positive(file, "norm_eps", self.norm_eps)?;
        self.sample_side(file)?;
        let n = self.block_out_channels.len();
        if n == 0 {
            return Err(Error::config(
                file,
                "block_out_channels",
                "[]",
                "must not be empty",
            ));
        }
        if self.down_block_types.len() != n || self.up_block_types.len() != n {
            return Err(Error::config(
                file,
                "down_block_types",
                format!("{:?} / up {:?}", self.down_block_types, self.up_block_types),
                format!("need {n} down and {n} up blocks (one per block_out_channels entry)"),
            ));
        }
        for t in &self.down_block_types {
            if t != "CrossAttnDownBlock2D" && t != "DownBlock2D" {
                return Err(Error::config(
                    file,
                    "down_block_types",
                    format!("\"{t}\""),
                    "supported: CrossAttnDownBlock2D, DownBlock2D",
                ));
            }
        }
        for t in &self.up_block_types {
            if t != "CrossAttnUpBlock2D" && t != "UpBlock2D" {
                return Err(Error::config(
                    file,
                    "up_block_types",
                    format!("\"{t}\""),
                    "supported: CrossAttnUpBlock2D, UpBlock2D",
                ));
            }
        }
        match self.mid_block_type.as_deref() {
            None | Some("UNetMidBlock2DCrossAttn") => {}
            Some(other) => {
                return Err(Error::config(
                    file,
                    "mid_block_type",
                    format!("\"{other}\""),
                    "supported: UNetMidBlock2DCrossAttn, null",
                ));
            }
        }
        if self.act_fn != "silu" {
            return Err(Error::config(
                file,
                "act_fn",
                format!("\"{}\"", self.act_fn),
                "only silu",
            ));
        }
        if let Some(v) = &self.num_attention_heads
            && !v.is_null()
        {
            return Err(Error::config(
                file,
                "num_attention_heads",
                v,
                "diffusers' UNet2DConditionModel refuses this key; use attention_head_dim",
            ));
        }
        let groups = self.groups(file)?;
        for (i, &c) in self.block_out_channels.iter().enumerate() {
            if c % groups != 0 {
                return Err(Error::config(
                    file,
                    "norm_num_groups",
                    groups,
                    format!("must divide block_out_channels[{i}] = {c}"),
                ));
            }
        }
        for k in [self.conv_in_kernel, self.conv_out_kernel] {
            if k % 2 == 0 {
                return Err(Error::config(
                    file,
                    "conv_in_kernel/conv_out_kernel",
                    k,
                    "must be odd",
                ));
            }
        }
        let plans = self.down_plans(file)?;
        for (i, p) in plans.iter().enumerate() {
            let c = self.block_out_channels[i];
            if p.heads == 0 || !c.is_multiple_of(p.heads) {
                return Err(Error::config(
                    file,
                    "attention_head_dim",
                    p.heads,
                    format!("heads must divide block_out_channels[{i}] = {c}"),
                ));
            }
        }
        Ok(())
    }

    /// GroupNorm groups (`norm_num_groups` may not be null for these blocks).
    pub fn groups(&self, file: &str) -> Result<usize> {
        match self.norm_num_groups {
            Some(g) if g > 0 => Ok(g),
            other => Err(Error::config(
                file,
                "norm_num_groups",
                format!("{other:?}"),
                "must be a positive integer",
            )),
        }
    }

    /// Width of the time embedding.
    pub fn time_embed_dim(&self) -> usize {
        self.time_embedding_dim
            .unwrap_or(4 * self.block_out_channels[0])
    }

    /// Per-down-block plan, in down order.
    pub fn down_plans(&self, file: &str) -> Result<Vec<BlockPlan>> {
        let n = self.block_out_channels.len();
        let layers = self.layers_per_block.expand(n, file, "layers_per_block")?;
        let heads = self
            .attention_head_dim
            .expand(n, file, "attention_head_dim")?;
        let tl =
            self.transformer_layers_per_block
                .expand(n, file, "transformer_layers_per_block")?;
        let ctx = self
            .cross_attention_dim
            .expand(n, file, "cross_attention_dim")?;
        let oca = self
            .only_cross_attention
            .expand(n, file, "only_cross_attention")?;
        Ok((0..n)
            .map(|i| BlockPlan {
                cross_attn: self.down_block_types[i] == "CrossAttnDownBlock2D",
                layers: layers[i],
                heads: heads[i],
                transformer_layers: tl[i],
                context_dim: ctx[i],
                only_cross_attention: oca[i],
            })
            .collect())
    }

    /// Per-up-block plan, in up order (lists reversed as diffusers does).
    pub fn up_plans(&self, file: &str) -> Result<Vec<BlockPlan>> {
        let down = self.down_plans(file)?;
        Ok(down
            .iter()
            .rev()
            .enumerate()
            .map(|(i, d)| BlockPlan {
                cross_attn: self.up_block_types[i] == "CrossAttnUpBlock2D",
                layers: d.layers + 1,
                ..d.clone()
            })
            .collect())
    }
}
