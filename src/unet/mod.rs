//! diffusers `UNet2DConditionModel` for Stable Diffusion 1.x/2.x, built from `config.json`.
//!
//! Field paths equal diffusers keys (`down_blocks.0.attentions.1.transformer_blocks.0.attn2.to_q`),
//! so `diffusion_pytorch_model.safetensors` loads 1:1 with strict key accounting.

pub mod attention;
pub mod config;
pub mod resnet;

use burn::module::Module;
use burn::tensor::activation::silu;
use burn::tensor::{Device, Tensor, TensorData};

use crate::error::Result;
use crate::nn::{Conv2d, GroupNorm, Linear};
use crate::weights::{TensorStore, Weights};
use attention::{Attention, AuContext, Transformer2DModel, TransformerSpec};
use config::BlockPlan;
pub use config::UNetConfig;
use resnet::{Downsample2D, ResnetBlock2D, ResnetSpec, Upsample2D};

/// `time_embedding`: `linear_1 → SiLU → linear_2`.
#[derive(Module, Debug)]
pub struct TimestepEmbedding {
    /// First projection.
    pub linear_1: Linear,
    /// Second projection.
    pub linear_2: Linear,
    /// `cond_proj` (no bias): the guidance-scale embedding of LCM-distilled UNets, added to
    /// the timestep features.
    pub cond_proj: Option<Linear>,
}

/// A down block: resnets, optional attentions, optional downsampler.
#[derive(Module, Debug)]
pub struct DownBlock {
    /// Resnets.
    pub resnets: Vec<ResnetBlock2D>,
    /// Transformers (empty for `DownBlock2D`).
    pub attentions: Vec<Transformer2DModel>,
    /// `downsamplers.0`.
    pub downsamplers: Vec<Downsample2D>,
}

/// The mid block: resnet, then (attention, resnet) pairs.
#[derive(Module, Debug)]
pub struct MidBlock {
    /// Resnets (one more than attentions).
    pub resnets: Vec<ResnetBlock2D>,
    /// Transformers.
    pub attentions: Vec<Transformer2DModel>,
}

/// An up block: resnets on concatenated skips, optional attentions, optional upsampler.
#[derive(Module, Debug)]
pub struct UpBlock {
    /// Resnets.
    pub resnets: Vec<ResnetBlock2D>,
    /// Transformers (empty for `UpBlock2D`).
    pub attentions: Vec<Transformer2DModel>,
    /// `upsamplers.0`.
    pub upsamplers: Vec<Upsample2D>,
}

/// The denoiser.
#[derive(Module, Debug)]
pub struct UNet2DConditionModel {
    /// `conv_in`.
    pub conv_in: Conv2d,
    /// `time_embedding`.
    pub time_embedding: TimestepEmbedding,
    /// `down_blocks`.
    pub down_blocks: Vec<DownBlock>,
    /// `mid_block`.
    pub mid_block: Option<MidBlock>,
    /// `up_blocks`.
    pub up_blocks: Vec<UpBlock>,
    /// `conv_norm_out`.
    pub conv_norm_out: GroupNorm,
    /// `conv_out`.
    pub conv_out: Conv2d,
    /// Width of the sinusoidal timestep features.
    pub time_proj_dim: usize,
    /// `flip_sin_to_cos`.
    pub flip_sin_to_cos: bool,
    /// `freq_shift`.
    pub freq_shift: f64,
    /// `center_input_sample`.
    pub center_input_sample: bool,
}

/// The block's attention layers: one per resnet for cross-attention blocks, none otherwise.
fn transformers(
    w: &Weights,
    channels: usize,
    plan: &BlockPlan,
    groups: usize,
    linear_projection: bool,
) -> Result<Vec<Transformer2DModel>> {
    let spec = TransformerSpec {
        channels,
        heads: plan.heads,
        layers: plan.transformer_layers,
        context_dim: plan.context_dim,
        groups,
        linear_projection,
        only_cross_attention: plan.only_cross_attention,
    };
    let count = if plan.cross_attn { plan.layers } else { 0 };
    (0..count)
        .map(|j| Transformer2DModel::load(&w.pp("attentions").pp(j), &spec))
        .collect()
}

/// diffusers' `get_guidance_scale_embedding`: sinusoidal features `[sin, cos]` of `1000 · w`
/// for each guidance weight `w` (LCM pipelines pass `w = guidance_scale − 1`), `[n, dim]`, in
/// f32 on the CPU.
pub fn guidance_scale_embedding(w: &[f32], dim: usize, device: &Device) -> Tensor<2> {
    let half = dim / 2;
    let step = (10000f32).ln() / (half as f32 - 1.0);
    let freqs: Vec<f32> = (0..half).map(|i| (i as f32 * -step).exp()).collect();
    let mut out = Vec::with_capacity(w.len() * dim);
    for &w in w {
        let args: Vec<f32> = freqs.iter().map(|f| w * 1000.0 * f).collect();
        out.extend(args.iter().map(|a| a.sin()));
        out.extend(args.iter().map(|a| a.cos()));
        if dim % 2 == 1 {
            out.push(0.0);
        }
    }
    Tensor::from_data(TensorData::new(out, [w.len(), dim]), device)
}

impl UNet2DConditionModel {
    /// Builds the UNet from its config and loads every weight from `store` (strict).
    pub fn load(store: &TensorStore, cfg: &UNetConfig, device: &Device) -> Result<Self> {
        let file = store.name().to_string();
        let root = store.root(device);
        let model = Self::load_from(&root, cfg, &file)?;
        store.finish()?;
        Ok(model)
    }

    /// Loads under an arbitrary cursor without the final unused-key check.
    pub(crate) fn load_from(root: &Weights, cfg: &UNetConfig, file: &str) -> Result<Self> {
        let groups = cfg.groups(file)?;
        let eps = cfg.norm_eps;
        let ch = &cfg.block_out_channels;
        let n = ch.len();
        let temb = cfg.time_embed_dim();
        // diffusers' get_down_block/get_up_block pass `resnet_out_scale_factor` only to
        // ResnetDownsampleBlock2D and SimpleCrossAttn*Block2D; the (CrossAttn)Down/UpBlock2D
        // resnets keep output_scale_factor 1.0, so the key has no effect on SD UNets.
        let block_scale = 1.0;
        let resnet = |c_in, c_out, scale| ResnetSpec {
            c_in,
            c_out,
            temb: Some(temb),
            groups,
            eps,
            output_scale_factor: scale,
        };
        let conv_in = Conv2d::load(
            &root.pp("conv_in"),
            cfg.in_channels,
            ch[0],
            cfg.conv_in_kernel,
            1,
        )?;
        let time_embedding = TimestepEmbedding {
            linear_1: Linear::load(&root.pp("time_embedding").pp("linear_1"), ch[0], temb, true)?,
            linear_2: Linear::load(&root.pp("time_embedding").pp("linear_2"), temb, temb, true)?,
            cond_proj: cfg
                .time_cond_proj_dim
                .map(|d| Linear::load(&root.pp("time_embedding").pp("cond_proj"), d, ch[0], false))
                .transpose()?,
        };

        let down_plans = cfg.down_plans(file)?;
        let mut down_blocks = Vec::with_capacity(n);
        let mut c_prev = ch[0];
        for (i, plan) in down_plans.iter().enumerate() {
            let w = root.pp("down_blocks").pp(i);
            let c_out = ch[i];
            let resnets = (0..plan.layers)
                .map(|j| {
                    let c_in = if j == 0 { c_prev } else { c_out };
                    ResnetBlock2D::load(&w.pp("resnets").pp(j), resnet(c_in, c_out, block_scale))
                })
                .collect::<Result<_>>()?;
            let attentions = transformers(&w, c_out, plan, groups, cfg.use_linear_projection)?;
            let downsamplers = if i + 1 < n {
                vec![Downsample2D::load(
                    &w.pp("downsamplers").pp(0),
                    c_out,
                    cfg.downsample_padding,
                )?]
            } else {
                Vec::new()
            };
            down_blocks.push(DownBlock {
                resnets,
                attentions,
                downsamplers,
            });
            c_prev = c_out;
        }

        let mid_block = match cfg.mid_block_type {
            Some(_) => {
                let w = root.pp("mid_block");
                let c = ch[n - 1];
                // One attention layer, never `only_cross_attention` (diffusers' get_mid_block).
                let plan = BlockPlan {
                    cross_attn: true,
                    layers: 1,
                    only_cross_attention: false,
                    ..down_plans[n - 1].clone()
                };
                let scale = cfg.mid_block_scale_factor;
                Some(MidBlock {
                    resnets: (0..2)
                        .map(|j| ResnetBlock2D::load(&w.pp("resnets").pp(j), resnet(c, c, scale)))
                        .collect::<Result<_>>()?,
                    attentions: transformers(&w, c, &plan, groups, cfg.use_linear_projection)?,
                })
            }
            None => None,
        };

        let up_plans = cfg.up_plans(file)?;
        let rev: Vec<usize> = ch.iter().rev().copied().collect();
        let mut up_blocks = Vec::with_capacity(n);
        let mut prev_out = rev[0];
        for (i, plan) in up_plans.iter().enumerate() {
            let w = root.pp("up_blocks").pp(i);
            let c_out = rev[i];
            let c_in = rev[(i + 1).min(n - 1)];
            let resnets = (0..plan.layers)
                .map(|j| {
                    let skip = if j == plan.layers - 1 { c_in } else { c_out };
                    let res_in = if j == 0 { prev_out } else { c_out };
                    ResnetBlock2D::load(
                        &w.pp("resnets").pp(j),
                        resnet(res_in + skip, c_out, block_scale),
                    )
                })
                .collect::<Result<_>>()?;
            let attentions = transformers(&w, c_out, plan, groups, cfg.use_linear_projection)?;
            let upsamplers = if i + 1 < n {
                vec![Upsample2D::load(&w.pp("upsamplers").pp(0), c_out)?]
            } else {
                Vec::new()
            };
            up_blocks.push(UpBlock {
                resnets,
                attentions,
                upsamplers,
            });
            prev_out = c_out;
        }

        Ok(UNet2DConditionModel {
            conv_in,
            time_embedding,
            down_blocks,
            mid_block,
            up_blocks,
            conv_norm_out: GroupNorm::load(&root.pp("conv_norm_out"), groups, ch[0], eps)?,
            conv_out: Conv2d::load(
                &root.pp("conv_out"),
                ch[0],
                cfg.out_channels,
                cfg.conv_out_kernel,
                1,
            )?,
            time_proj_dim: ch[0],
            flip_sin_to_cos: cfg.flip_sin_to_cos,
            freq_shift: cfg.freq_shift,
            center_input_sample: cfg.center_input_sample,
        })
    }

    /// Sinusoidal timestep features `[b, dim]`, computed on the CPU in f32 as diffusers does.
    pub(crate) fn timestep_features(&self, timesteps: &[f32], device: &Device) -> Tensor<2> {
        let dim = self.time_proj_dim;
        let half = dim / 2;
        let ln = -(10000f32).ln();
        let freqs: Vec<f32> = (0..half)
            .map(|i| (ln * i as f32 / (half as f32 - self.freq_shift as f32)).exp())
            .collect();
        let mut out = Vec::with_capacity(timesteps.len() * dim);
        for &t in timesteps {
            let args: Vec<f32> = freqs.iter().map(|f| t * f).collect();
            let sin = args.iter().map(|a| a.sin());
            let cos = args.iter().map(|a| a.cos());
            if self.flip_sin_to_cos {
                out.extend(cos.chain(sin));
            } else {
                out.extend(sin.chain(cos));
            }
            if dim % 2 == 1 {
                out.push(0.0);
            }
        }
        Tensor::from_data(TensorData::new(out, [timesteps.len(), dim]), device)
    }

    /// Every cross-attention layer (`attn2`) with its key path, in module order.
    pub fn cross_attentions_mut(&mut self) -> Vec<(String, &mut Attention)> {
        self.attentions_mut()
            .into_iter()
            .filter(|(path, _)| path.ends_with(".attn2"))
            .collect()
    }

    /// Every attention layer of the transformer blocks (`attn1` and `attn2`) with its key
    /// path, in module order.
    pub fn attentions_mut(&mut self) -> Vec<(String, &mut Attention)> {
        fn collect<'a>(
            prefix: String,
            attns: &'a mut [Transformer2DModel],
            out: &mut Vec<(String, &'a mut Attention)>,
        ) {
            for (j, t) in attns.iter_mut().enumerate() {
                for (k, block) in t.transformer_blocks.iter_mut().enumerate() {
                    let path = format!("{prefix}.attentions.{j}.transformer_blocks.{k}");
                    out.push((format!("{path}.attn1"), &mut block.attn1));
                    out.push((format!("{path}.attn2"), &mut block.attn2));
                }
            }
        }
        let mut out = Vec::new();
        for (i, b) in self.down_blocks.iter_mut().enumerate() {
            collect(format!("down_blocks.{i}"), &mut b.attentions, &mut out);
        }
        if let Some(mid) = &mut self.mid_block {
            collect("mid_block".into(), &mut mid.attentions, &mut out);
        }
        for (i, b) in self.up_blocks.iter_mut().enumerate() {
            collect(format!("up_blocks.{i}"), &mut b.attentions, &mut out);
        }
        out
    }

    /// Whether an AU adapter is attached.
    pub fn has_au_adapter(&self) -> bool {
        self.down_blocks
            .iter()
            .flat_map(|b| &b.attentions)
            .chain(self.mid_block.iter().flat_map(|m| &m.attentions))
            .chain(self.up_blocks.iter().flat_map(|b| &b.attentions))
            .flat_map(|t| &t.transformer_blocks)
            .any(|b| b.attn2.au.is_some())
    }

    /// Predicts noise (or v) for `sample` `[b, c, h, w]` at `timesteps` (one per batch item, or
    /// one for all) with text context `[b, t, d]`.
    pub fn forward(&self, sample: Tensor<4>, timesteps: &[f32], context: Tensor<3>) -> Tensor<4> {
        self.forward_au(sample, timesteps, context, None)
    }

    /// [`forward`](Self::forward) with AU tokens for the AU branch (ignored without an adapter).
    pub fn forward_au(
        &self,
        sample: Tensor<4>,
        timesteps: &[f32],
        context: Tensor<3>,
        au: Option<&AuContext>,
    ) -> Tensor<4> {
        self.forward_guided(sample, timesteps, context, au, None)
    }

    /// The width of the guidance-scale embedding this UNet takes (LCM-distilled UNets), if any.
    pub fn guidance_embedding_dim(&self) -> Option<usize> {
        self.time_embedding
            .cond_proj
            .as_ref()
            .map(|l| l.weight.val().dims()[0])
    }

    /// [`forward_au`](Self::forward_au) with the guidance-scale embedding `[b, d]` of an
    /// LCM-distilled UNet (`timestep_cond`; ignored by other UNets).
    pub fn forward_guided(
        &self,
        sample: Tensor<4>,
        timesteps: &[f32],
        context: Tensor<3>,
        au: Option<&AuContext>,
        guidance: Option<&Tensor<2>>,
    ) -> Tensor<4> {
        let device = sample.device();
        let b = sample.dims()[0];
        let ts: Vec<f32> = if timesteps.len() == 1 {
            vec![timesteps[0]; b]
        } else {
            timesteps.to_vec()
        };
        let mut t = self.timestep_features(&ts, &device);
        if let (Some(proj), Some(g)) = (&self.time_embedding.cond_proj, guidance) {
            t = t + proj.forward(g.clone());
        }
        let temb = self
            .time_embedding
            .linear_2
            .forward(silu(self.time_embedding.linear_1.forward(t)));
        let temb = Some(&temb);

        let sample = if self.center_input_sample {
            sample * 2.0 - 1.0
        } else {
            sample
        };
        let mut h = self.conv_in.forward(sample);
        let mut skips = vec![h.clone()];
        for block in &self.down_blocks {
            for (j, resnet) in block.resnets.iter().enumerate() {
                h = resnet.forward(h, temb);
                if let Some(attn) = block.attentions.get(j) {
                    h = attn.forward(h, context.clone(), au);
                }
                skips.push(h.clone());
            }
            for down in &block.downsamplers {
                h = down.forward(h);
                skips.push(h.clone());
            }
        }
        if let Some(mid) = &self.mid_block {
            h = mid.resnets[0].forward(h, temb);
            for (attn, resnet) in mid.attentions.iter().zip(&mid.resnets[1..]) {
                h = attn.forward(h, context.clone(), au);
                h = resnet.forward(h, temb);
            }
        }
        for block in &self.up_blocks {
            for (j, resnet) in block.resnets.iter().enumerate() {
                let skip = skips.pop().expect("one skip per up resnet");
                h = resnet.forward(Tensor::cat(vec![h, skip], 1), temb);
                if let Some(attn) = block.attentions.get(j) {
                    h = attn.forward(h, context.clone(), au);
                }
            }
            for up in &block.upsamplers {
                // The next skip fixes the target size (odd latent sizes round down on the way in).
                let size = skips.last().map(|s| {
                    let [_, _, sh, sw] = s.dims();
                    [sh, sw]
                });
                h = up.forward(h, size);
            }
        }
        let h = silu(self.conv_norm_out.forward(h));
        self.conv_out.forward(h)
    }
}
