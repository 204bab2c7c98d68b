//! diffusers `ResnetBlock2D`, `Downsample2D`, `Upsample2D` (shared by the UNet and the VAE).

use burn::module::Module;
use burn::tensor::Tensor;
use burn::tensor::activation::silu;

use crate::error::Result;
use crate::nn::{Conv2d, GroupNorm, Linear, upsample_nearest};
use crate::weights::Weights;

/// Shape parameters of a `ResnetBlock2D`.
#[derive(Debug, Clone, Copy)]
pub struct ResnetSpec {
    /// Input channels.
    pub c_in: usize,
    /// Output channels.
    pub c_out: usize,
    /// Width of the time embedding, `None` in the VAE.
    pub temb: Option<usize>,
    /// GroupNorm groups.
    pub groups: usize,
    /// GroupNorm epsilon.
    pub eps: f64,
    /// The output is divided by this.
    pub output_scale_factor: f64,
}

/// GroupNorm → SiLU → conv, (+ time embedding), GroupNorm → SiLU → conv, + shortcut.
#[derive(Module, Debug)]
pub struct ResnetBlock2D {
    /// First norm.
    pub norm1: GroupNorm,
    /// First conv.
    pub conv1: Conv2d,
    /// Time-embedding projection (UNet only).
    pub time_emb_proj: Option<Linear>,
    /// Second norm.
    pub norm2: GroupNorm,
    /// Second conv.
    pub conv2: Conv2d,
    /// 1×1 conv when the channel count changes.
    pub conv_shortcut: Option<Conv2d>,
    /// Output divisor.
    pub output_scale_factor: f64,
}

impl ResnetBlock2D {
    /// Loads a block.
    pub fn load(w: &Weights, spec: ResnetSpec) -> Result<Self> {
        let ResnetSpec {
            c_in,
            c_out,
            temb,
            groups,
            eps,
            output_scale_factor,
        } = spec;
        Ok(ResnetBlock2D {
            norm1: GroupNorm::load(&w.pp("norm1"), groups, c_in, eps)?,
            conv1: Conv2d::load(&w.pp("conv1"), c_in, c_out, 3, 1)?,
            time_emb_proj: temb
                .map(|t| Linear::load(&w.pp("time_emb_proj"), t, c_out, true))
                .transpose()?,
            norm2: GroupNorm::load(&w.pp("norm2"), groups, c_out, eps)?,
            conv2: Conv2d::load(&w.pp("conv2"), c_out, c_out, 3, 1)?,
            conv_shortcut: (c_in != c_out)
                .then(|| Conv2d::load(&w.pp("conv_shortcut"), c_in, c_out, 1, 1))
                .transpose()?,
            output_scale_factor,
        })
    }

    /// `x`: `[b, c_in, h, w]`; `temb`: `[b, t]` (already the raw embedding; SiLU is applied here).
    pub fn forward(&self, x: Tensor<4>, temb: Option<&Tensor<2>>) -> Tensor<4> {
        let h = self.conv1.forward(silu(self.norm1.forward(x.clone())));
        let h = match (&self.time_emb_proj, temb) {
            (Some(proj), Some(t)) => {
                let t = proj.forward(silu(t.clone()));
                let [b, c] = t.dims();
                h + t.reshape([b, c, 1, 1])
            }
            _ => h,
        };
        let h = self.conv2.forward(silu(self.norm2.forward(h)));
        let shortcut = match &self.conv_shortcut {
            Some(conv) => conv.forward(x),
            None => x,
        };
        let out = shortcut + h;
        if self.output_scale_factor == 1.0 {
            out
        } else {
            out / self.output_scale_factor
        }
    }
}

/// Stride-2 3×3 conv (`downsamplers.0.conv`).
#[derive(Module, Debug)]
pub struct Downsample2D {
    /// The conv.
    pub conv: Conv2d,
}

impl Downsample2D {
    /// UNet style: symmetric padding `padding`. VAE style (`padding = 0`): pad right/bottom by 1.
    pub fn load(w: &Weights, channels: usize, padding: usize) -> Result<Self> {
        let (begin, end) = if padding == 0 {
            (0, 1)
        } else {
            (padding, padding)
        };
        Ok(Downsample2D {
            conv: Conv2d::load_padded(&w.pp("conv"), channels, channels, 3, 2, begin, end)?,
        })
    }

    /// Halves the spatial size.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        self.conv.forward(x)
    }
}

/// Nearest ×2 (or to a given size) then 3×3 conv (`upsamplers.0.conv`).
#[derive(Module, Debug)]
pub struct Upsample2D {
    /// The conv.
    pub conv: Conv2d,
}

impl Upsample2D {
    /// Loads the conv.
    pub fn load(w: &Weights, channels: usize) -> Result<Self> {
        Ok(Upsample2D {
            conv: Conv2d::load(&w.pp("conv"), channels, channels, 3, 1)?,
        })
    }

    /// Upsamples to `size` (default: twice the input).
    pub fn forward(&self, x: Tensor<4>, size: Option<[usize; 2]>) -> Tensor<4> {
        let [_, _, h, w] = x.dims();
        let [oh, ow] = size.unwrap_or([2 * h, 2 * w]);
        self.conv.forward(upsample_nearest(x, oh, ow))
    }
}
