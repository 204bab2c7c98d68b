//! diffusers `AutoencoderKL`: encoder (for training and image-to-latent) and decoder.

use burn::module::Module;
use burn::tensor::activation::silu;
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::nn::{Conv2d, GroupNorm, Linear};
use crate::unet::attention::multi_head;
use crate::unet::resnet::{Downsample2D, ResnetBlock2D, ResnetSpec, Upsample2D};
use crate::weights::{TensorStore, Weights, keys};

/// `vae/config.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VaeConfig {
    /// Image channels in.
    #[serde(default = "three")]
    pub in_channels: usize,
    /// Image channels out.
    #[serde(default = "three")]
    pub out_channels: usize,
    /// Encoder block types (`DownEncoderBlock2D` only).
    #[serde(default = "default_down")]
    pub down_block_types: Vec<String>,
    /// Decoder block types (`UpDecoderBlock2D` only).
    #[serde(default = "default_up")]
    pub up_block_types: Vec<String>,
    /// Channels per level; the spatial factor is `2^(len − 1)`.
    #[serde(default = "default_channels")]
    pub block_out_channels: Vec<usize>,
    /// Resnets per encoder block (decoder: one more).
    #[serde(default = "one")]
    pub layers_per_block: usize,
    /// Only `silu`.
    #[serde(default = "default_act")]
    pub act_fn: String,
    /// Latent channels.
    #[serde(default = "four")]
    pub latent_channels: usize,
    /// GroupNorm groups.
    #[serde(default = "thirty_two")]
    pub norm_num_groups: usize,
    /// Latents are multiplied by this after encoding.
    #[serde(default = "default_scaling")]
    pub scaling_factor: f64,
    /// `null` for SD 1.x/2.x.
    #[serde(default)]
    pub shift_factor: Option<f64>,
    /// `quant_conv` present.
    #[serde(default = "yes")]
    pub use_quant_conv: bool,
    /// `post_quant_conv` present.
    #[serde(default = "yes")]
    pub use_post_quant_conv: bool,
    /// Attention in the mid blocks.
    #[serde(default = "yes")]
    pub mid_block_add_attention: bool,
    /// Nominal image size (not needed to run).
    #[serde(default)]
    pub sample_size: Option<Value>,
}

fn three() -> usize {
    3
}
fn four() -> usize {
    4
}
fn one() -> usize {
    1
}
fn thirty_two() -> usize {
    32
}
fn yes() -> bool {
    true
}
fn default_act() -> String {
    "silu".into()
}
fn default_scaling() -> f64 {
    0.18215
}
fn default_channels() -> Vec<usize> {
    vec![64]
}
fn default_down() -> Vec<String> {
    vec!["DownEncoderBlock2D".into()]
}
fn default_up() -> Vec<String> {
    vec!["UpDecoderBlock2D".into()]
}

impl VaeConfig {
    /// Parses and validates `config.json` bytes.
    pub fn from_json(bytes: &[u8], file: &str) -> Result<Self> {
        let raw: Value = serde_json::from_slice(bytes).map_err(|e| Error::json(file, e))?;
        for key in ["latents_mean", "latents_std"] {
            if let Some(v) = raw.get(key).filter(|v| !v.is_null()) {
                return Err(Error::config(file, key, v, "only null is supported"));
            }
        }
        let cfg: VaeConfig = serde_json::from_value(raw).map_err(|e| Error::json(file, e))?;
        let n = cfg.block_out_channels.len();
        if n == 0 || cfg.down_block_types.len() != n || cfg.up_block_types.len() != n {
            return Err(Error::config(
                file,
                "block_out_channels",
                format!("{:?}", cfg.block_out_channels),
                "need one DownEncoderBlock2D and one UpDecoderBlock2D per entry",
            ));
        }
        if let Some(t) = cfg
            .down_block_types
            .iter()
            .find(|t| *t != "DownEncoderBlock2D")
        {
            return Err(Error::config(
                file,
                "down_block_types",
                format!("\"{t}\""),
                "only DownEncoderBlock2D",
            ));
        }
        if let Some(t) = cfg.up_block_types.iter().find(|t| *t != "UpDecoderBlock2D") {
            return Err(Error::config(
                file,
                "up_block_types",
                format!("\"{t}\""),
                "only UpDecoderBlock2D",
            ));
        }
        if cfg.act_fn != "silu" {
            return Err(Error::config(
                file,
                "act_fn",
                format!("\"{}\"", cfg.act_fn),
                "only silu",
            ));
        }
        Error::check_positive(file, "scaling_factor", cfg.scaling_factor)?;
        if let Some(s) = cfg.shift_factor.filter(|s| *s != 0.0) {
            return Err(Error::config(
                file,
                "shift_factor",
                s,
                "only null (SD 1.x/2.x)",
            ));
        }
        let g = cfg.norm_num_groups;
        if g == 0 || cfg.block_out_channels.iter().any(|c| c % g != 0) {
            return Err(Error::config(
                file,
                "norm_num_groups",
                g,
                "must divide every block_out_channels entry",
            ));
        }
        Ok(cfg)
    }

    /// Spatial down-sampling factor between image and latent.
    pub fn scale_factor(&self) -> usize {
        1 << (self.block_out_channels.len() - 1)
    }
}

/// Single-head spatial self-attention with GroupNorm and residual (the VAE mid block).
#[derive(Module, Debug)]
pub struct VaeAttention {
    /// `group_norm`.
    pub group_norm: GroupNorm,
    /// `to_q`.
    pub to_q: Linear,
    /// `to_k`.
    pub to_k: Linear,
    /// `to_v`.
    pub to_v: Linear,
    /// `to_out.0`.
    pub to_out: Linear,
}

impl VaeAttention {
    fn load(w: &Weights, c: usize, groups: usize) -> Result<Self> {
        Ok(VaeAttention {
            group_norm: GroupNorm::load(&w.pp("group_norm"), groups, c, 1e-6)?,
            to_q: Linear::load(&w.pp("to_q"), c, c, true)?,
            to_k: Linear::load(&w.pp("to_k"), c, c, true)?,
            to_v: Linear::load(&w.pp("to_v"), c, c, true)?,
            to_out: Linear::load(&w.pp("to_out").pp(0), c, c, true)?,
        })
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let [b, c, h, w] = x.dims();
        let tokens = self
            .group_norm
            .forward(x.clone())
            .reshape([b, c, h * w])
            .swap_dims(1, 2);
        let q = self.to_q.forward(tokens.clone());
        let k = self.to_k.forward(tokens.clone());
        let v = self.to_v.forward(tokens);
        let out = self.to_out.forward(multi_head(q, k, v, 1));
        out.swap_dims(1, 2).reshape([b, c, h, w]) + x
    }
}

/// `UNetMidBlock2D` without time embedding: resnet, attention, resnet.
#[derive(Module, Debug)]
pub struct VaeMidBlock {
    /// Two resnets.
    pub resnets: Vec<ResnetBlock2D>,
    /// Zero or one attention.
    pub attentions: Vec<VaeAttention>,
}

impl VaeMidBlock {
    fn load(w: &Weights, c: usize, groups: usize, attention: bool) -> Result<Self> {
        let spec = resnet_spec(c, c, groups);
        Ok(VaeMidBlock {
            resnets: (0..2)
                .map(|j| ResnetBlock2D::load(&w.pp("resnets").pp(j), spec))
                .collect::<Result<_>>()?,
            attentions: if attention {
                vec![VaeAttention::load(&w.pp("attentions").pp(0), c, groups)?]
            } else {
                Vec::new()
            },
        })
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let mut h = self.resnets[0].forward(x, None);
        if let Some(attn) = self.attentions.first() {
            h = attn.forward(h);
        }
        self.resnets[1].forward(h, None)
    }
}

fn resnet_spec(c_in: usize, c_out: usize, groups: usize) -> ResnetSpec {
    ResnetSpec {
        c_in,
        c_out,
        temb: None,
        groups,
        eps: 1e-6,
        output_scale_factor: 1.0,
    }
}

/// `DownEncoderBlock2D`.
#[derive(Module, Debug)]
pub struct EncoderBlock {
    /// Resnets.
    pub resnets: Vec<ResnetBlock2D>,
    /// `downsamplers.0` (all but the last block).
    pub downsamplers: Vec<Downsample2D>,
}

/// `UpDecoderBlock2D`.
#[derive(Module, Debug)]
pub struct DecoderBlock {
    /// Resnets.
    pub resnets: Vec<ResnetBlock2D>,
    /// `upsamplers.0` (all but the last block).
    pub upsamplers: Vec<Upsample2D>,
}

/// Image → latent moments.
#[derive(Module, Debug)]
pub struct Encoder {
    /// `conv_in`.
    pub conv_in: Conv2d,
    /// `down_blocks`.
    pub down_blocks: Vec<EncoderBlock>,
    /// `mid_block`.
    pub mid_block: VaeMidBlock,
    /// `conv_norm_out`.
    pub conv_norm_out: GroupNorm,
    /// `conv_out` (to `2 · latent_channels`).
    pub conv_out: Conv2d,
}

/// Latent → image.
#[derive(Module, Debug)]
pub struct Decoder {
    /// `conv_in`.
    pub conv_in: Conv2d,
    /// `mid_block`.
    pub mid_block: VaeMidBlock,
    /// `up_blocks`.
    pub up_blocks: Vec<DecoderBlock>,
    /// `conv_norm_out`.
    pub conv_norm_out: GroupNorm,
    /// `conv_out`.
    pub conv_out: Conv2d,
}

/// The latent distribution of an encoded image.
#[derive(Debug, Clone)]
pub struct LatentDist {
    /// Mean `[b, latent, h/f, w/f]`.
    pub mean: Tensor<4>,
    /// Log-variance, clamped to `[-30, 20]` as diffusers does.
    pub logvar: Tensor<4>,
}

/// `AutoencoderKL`.
#[derive(Module, Debug)]
pub struct AutoencoderKL {
    /// `encoder`.
    pub encoder: Encoder,
    /// `decoder`.
    pub decoder: Decoder,
    /// `quant_conv`.
    pub quant_conv: Option<Conv2d>,
    /// `post_quant_conv`.
    pub post_quant_conv: Option<Conv2d>,
    /// `scaling_factor`.
    pub scaling_factor: f64,
}

impl AutoencoderKL {
    /// Builds from config and loads every weight from `store` (strict; legacy attention
    /// names are renamed by [`keys::legacy_vae_attention`]).
    pub fn load(store: &mut TensorStore, cfg: &VaeConfig, device: &Device) -> Result<Self> {
        store.remap(keys::legacy_vae_attention);
        let root = store.root(device);
        let ch = &cfg.block_out_channels;
        let n = ch.len();
        let g = cfg.norm_num_groups;
        let l = cfg.latent_channels;

        let e = root.pp("encoder");
        let mut down_blocks = Vec::with_capacity(n);
        let mut c_prev = ch[0];
        for (i, &c) in ch.iter().enumerate() {
            let w = e.pp("down_blocks").pp(i);
            down_blocks.push(EncoderBlock {
                resnets: (0..cfg.layers_per_block)
                    .map(|j| {
                        let c_in = if j == 0 { c_prev } else { c };
                        ResnetBlock2D::load(&w.pp("resnets").pp(j), resnet_spec(c_in, c, g))
                    })
                    .collect::<Result<_>>()?,
                downsamplers: if i + 1 < n {
                    vec![Downsample2D::load(&w.pp("downsamplers").pp(0), c, 0)?]
                } else {
                    Vec::new()
                },
            });
            c_prev = c;
        }
        let encoder = Encoder {
            conv_in: Conv2d::load(&e.pp("conv_in"), cfg.in_channels, ch[0], 3, 1)?,
            down_blocks,
            mid_block: VaeMidBlock::load(
                &e.pp("mid_block"),
                ch[n - 1],
                g,
                cfg.mid_block_add_attention,
            )?,
            conv_norm_out: GroupNorm::load(&e.pp("conv_norm_out"), g, ch[n - 1], 1e-6)?,
            conv_out: Conv2d::load(&e.pp("conv_out"), ch[n - 1], 2 * l, 3, 1)?,
        };

        let d = root.pp("decoder");
        let rev: Vec<usize> = ch.iter().rev().copied().collect();
        let mut up_blocks = Vec::with_capacity(n);
        let mut c_prev = rev[0];
        for (i, &c) in rev.iter().enumerate() {
            let w = d.pp("up_blocks").pp(i);
            up_blocks.push(DecoderBlock {
                resnets: (0..cfg.layers_per_block + 1)
                    .map(|j| {
                        let c_in = if j == 0 { c_prev } else { c };
                        ResnetBlock2D::load(&w.pp("resnets").pp(j), resnet_spec(c_in, c, g))
                    })
                    .collect::<Result<_>>()?,
                upsamplers: if i + 1 < n {
                    vec![Upsample2D::load(&w.pp("upsamplers").pp(0), c)?]
                } else {
                    Vec::new()
                },
            });
            c_prev = c;
        }
        let decoder = Decoder {
            conv_in: Conv2d::load(&d.pp("conv_in"), l, rev[0], 3, 1)?,
            mid_block: VaeMidBlock::load(
                &d.pp("mid_block"),
                rev[0],
                g,
                cfg.mid_block_add_attention,
            )?,
            up_blocks,
            conv_norm_out: GroupNorm::load(&d.pp("conv_norm_out"), g, ch[0], 1e-6)?,
            conv_out: Conv2d::load(&d.pp("conv_out"), ch[0], cfg.out_channels, 3, 1)?,
        };
        let quant_conv = cfg
            .use_quant_conv
            .then(|| Conv2d::load(&root.pp("quant_conv"), 2 * l, 2 * l, 1, 1))
            .transpose()?;
        let post_quant_conv = cfg
            .use_post_quant_conv
            .then(|| Conv2d::load(&root.pp("post_quant_conv"), l, l, 1, 1))
            .transpose()?;
        store.finish()?;
        Ok(AutoencoderKL {
            encoder,
            decoder,
            quant_conv,
            post_quant_conv,
            scaling_factor: cfg.scaling_factor,
        })
    }

    /// Image `[b, 3, h, w]` in `[-1, 1]` → latent distribution (unscaled).
    pub fn encode(&self, image: Tensor<4>) -> LatentDist {
        let e = &self.encoder;
        let mut h = e.conv_in.forward(image);
        for block in &e.down_blocks {
            for r in &block.resnets {
                h = r.forward(h, None);
            }
            for d in &block.downsamplers {
                h = d.forward(h);
            }
        }
        h = e.mid_block.forward(h);
        h = e.conv_out.forward(silu(e.conv_norm_out.forward(h)));
        if let Some(q) = &self.quant_conv {
            h = q.forward(h);
        }
        let [b, c2, hh, ww] = h.dims();
        let c = c2 / 2;
        let mean = h.clone().slice([0..b, 0..c, 0..hh, 0..ww]);
        let logvar = h.slice([0..b, c..c2, 0..hh, 0..ww]).clamp(-30.0, 20.0);
        LatentDist { mean, logvar }
    }

    /// Unscaled latent `[b, latent, h, w]` → image in roughly `[-1, 1]`.
    pub fn decode(&self, latents: Tensor<4>) -> Tensor<4> {
        let d = &self.decoder;
        let mut h = match &self.post_quant_conv {
            Some(p) => p.forward(latents),
            None => latents,
        };
        h = d.conv_in.forward(h);
        h = d.mid_block.forward(h);
        for block in &d.up_blocks {
            for r in &block.resnets {
                h = r.forward(h, None);
            }
            for u in &block.upsamplers {
                h = u.forward(h, None);
            }
        }
        d.conv_out.forward(silu(d.conv_norm_out.forward(h)))
    }
}
