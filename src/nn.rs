//! Small layers with PyTorch weight layouts and diffusers key names (`weight`, `bias`).
//!
//! burn's own `nn` layers use other layouts and names (`gamma`/`beta`, `[in, out]` linear
//! weights stored untransposed); these thin modules keep loading 1:1 and still derive
//! [`Module`], so they train under autodiff like any burn module.

use burn::module::{Module, Param};
use burn::tensor::module::{conv2d, layer_norm, linear};
use burn::tensor::ops::ConvOptions;
use burn::tensor::{FloatDType, Tensor};

use crate::error::Result;
use crate::weights::Weights;

/// `y = x Wᵀ + b` (+ an optional LoRA update). The weight is stored transposed (`[in, out]`)
/// for burn's `linear`.
#[derive(Module, Debug)]
pub struct Linear {
    /// `[in, out]`.
    pub weight: Param<Tensor<2>>,
    /// `[out]`.
    pub bias: Option<Param<Tensor<1>>>,
    /// A low-rank update being trained (none after loading).
    pub lora: Option<LoraDelta>,
}

/// A low-rank update `x ↦ scale · (x A) B` (LoRA; `A = down` `[in, r]`, `B = up` `[r, out]`),
/// i.e. `W ← W + scale · (A B)ᵀ` in PyTorch's layout.
#[derive(Module, Debug)]
pub struct LoraDelta {
    /// `A`, `[in, r]`.
    pub down: Param<Tensor<2>>,
    /// `B`, `[r, out]`.
    pub up: Param<Tensor<2>>,
    /// `α / r`.
    pub scale: f64,
}

impl Linear {
    /// Loads `weight` (`[out, in]` as PyTorch stores it) and optionally `bias`.
    pub fn load(w: &Weights, d_in: usize, d_out: usize, bias: bool) -> Result<Self> {
        let weight = w.transposed("weight", d_out, d_in)?;
        let bias = if bias {
            Some(Param::from_tensor(w.tensor("bias", [d_out])?))
        } else {
            None
        };
        Ok(Linear {
            weight: Param::from_tensor(weight),
            bias,
            lora: None,
        })
    }

    /// Applies the layer to the last dimension.
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let y = linear(
            x.clone(),
            self.weight.val(),
            self.bias.as_ref().map(|b| b.val()),
        );
        match &self.lora {
            Some(l) => y + linear(linear(x, l.down.val(), None), l.up.val(), None) * l.scale,
            None => y,
        }
    }
}

/// 2-D convolution with PyTorch's `[out, in / groups, kh, kw]` weight: PyTorch padding (fixed,
/// possibly asymmetric) or TensorFlow's (`SAME` from the input size at run time, `VALID`), and
/// groups (`groups == channels`: depthwise).
#[derive(Module, Debug)]
pub struct Conv2d {
    /// `[out, in / groups, kh, kw]`.
    pub weight: Param<Tensor<4>>,
    /// `[out]`.
    pub bias: Option<Param<Tensor<1>>>,
    /// Stride (both axes).
    pub stride: usize,
    /// Padding before (top, left), when not `same`.
    pub pad_begin: usize,
    /// Padding after (bottom, right), when not `same`.
    pub pad_end: usize,
    /// TensorFlow `SAME` padding, computed from the input size ([`same_padding`]).
    pub same: bool,
    /// Groups (1: regular convolution).
    pub groups: usize,
}

impl Conv2d {
    /// Loads a square-kernel convolution with symmetric padding `kernel / 2`.
    pub fn load(
        w: &Weights,
        c_in: usize,
        c_out: usize,
        kernel: usize,
        stride: usize,
    ) -> Result<Self> {
        let pad = kernel / 2;
        Self::load_padded(w, c_in, c_out, kernel, stride, pad, pad)
    }

    /// Loads a convolution with explicit (possibly asymmetric) padding.
    pub fn load_padded(
        w: &Weights,
        c_in: usize,
        c_out: usize,
        kernel: usize,
        stride: usize,
        pad_begin: usize,
        pad_end: usize,
    ) -> Result<Self> {
        Ok(Conv2d {
            weight: Param::from_tensor(w.tensor("weight", [c_out, c_in, kernel, kernel])?),
            bias: Some(Param::from_tensor(w.tensor("bias", [c_out])?)),
            stride,
            pad_begin,
            pad_end,
            same: false,
            groups: 1,
        })
    }

    /// Loads a convolution with a bias and TensorFlow padding: `SAME` when `same`, else
    /// `VALID` (none).
    pub fn load_tf(
        w: &Weights,
        c_in: usize,
        c_out: usize,
        kernel: usize,
        stride: usize,
        same: bool,
    ) -> Result<Self> {
        Ok(Conv2d {
            same,
            ..Self::load_padded(w, c_in, c_out, kernel, stride, 0, 0)?
        })
    }

    /// Loads a depthwise convolution (multiplier 1, no bias) over `channels` channels with
    /// TensorFlow padding.
    pub fn load_depthwise(
        w: &Weights,
        channels: usize,
        kernel: usize,
        stride: usize,
        same: bool,
    ) -> Result<Self> {
        Ok(Conv2d {
            weight: Param::from_tensor(w.tensor("weight", [channels, 1, kernel, kernel])?),
            bias: None,
            stride,
            pad_begin: 0,
            pad_end: 0,
            same,
            groups: channels,
        })
    }

    /// `[n, c_in, h, w]` → `[n, c_out, h', w']`.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let padding = if self.same {
            let [_, _, h, w] = x.dims();
            let [_, _, kh, kw] = self.weight.dims();
            [
                same_padding(h, kh, self.stride),
                same_padding(w, kw, self.stride),
            ]
        } else {
            let pad = (self.pad_begin, self.pad_end);
            [pad, pad]
        };
        let options = ConvOptions {
            stride: [self.stride, self.stride],
            padding,
            dilation: [1, 1],
            groups: self.groups,
        };
        conv2d(
            x,
            self.weight.val(),
            self.bias.as_ref().map(|b| b.val()),
            options,
        )
    }
}

/// tfjs' `separableConv2d(x, depthwise, pointwise, stride, 'same')` followed by a bias: a
/// depthwise 3×3 convolution (`SAME`, carrying the stride) then a 1×1 convolution with bias.
/// Keys: `depthwise.weight`, `pointwise.weight`, `pointwise.bias`.
#[derive(Module, Debug)]
pub struct SeparableConv2d {
    /// Depthwise 3×3, no bias.
    pub depthwise: Conv2d,
    /// Pointwise 1×1 with bias.
    pub pointwise: Conv2d,
}

impl SeparableConv2d {
    /// Loads a `c_in → c_out` separable convolution with a 3×3 depthwise kernel.
    pub fn load(w: &Weights, c_in: usize, c_out: usize, stride: usize) -> Result<Self> {
        Ok(SeparableConv2d {
            depthwise: Conv2d::load_depthwise(&w.pp("depthwise"), c_in, 3, stride, true)?,
            pointwise: Conv2d::load_tf(&w.pp("pointwise"), c_in, c_out, 1, 1, false)?,
        })
    }

    /// `[n, c_in, h, w]` → `[n, c_out, h', w']`.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        self.pointwise.forward(self.depthwise.forward(x))
    }
}

/// tfjs/TensorFlow `SAME` padding along one axis: `(begin, end)` with the extra pixel (if the
/// total is odd) at the end. For stride 2 this is asymmetric, unlike PyTorch's `k / 2`.
pub fn same_padding(input: usize, kernel: usize, stride: usize) -> (usize, usize) {
    let out = input.div_ceil(stride);
    let total = ((out.saturating_sub(1)) * stride + kernel).saturating_sub(input);
    (total / 2, total - total / 2)
}

/// 3×3 stride-2 max pooling with TensorFlow `SAME` padding (mini-Xception's down-sampling).
pub fn max_pool_3x3_same(x: Tensor<4>) -> Tensor<4> {
    use burn::tensor::{module::max_pool2d, ops::MaxPoolOptions};
    let [_, _, h, w] = x.dims();
    max_pool2d(
        x,
        MaxPoolOptions {
            kernel_size: [3, 3],
            stride: [2, 2],
            padding: [same_padding(h, 3, 2), same_padding(w, 3, 2)],
            dilation: [1, 1],
            ceil_mode: false,
        },
    )
}

/// Group normalisation over `[n, c, ...]` with per-channel affine parameters.
#[derive(Module, Debug)]
pub struct GroupNorm {
    /// `[c]`.
    pub weight: Param<Tensor<1>>,
    /// `[c]`.
    pub bias: Param<Tensor<1>>,
    /// Number of groups.
    pub groups: usize,
    /// Added to the variance.
    pub eps: f64,
}

impl GroupNorm {
    /// Loads `weight`/`bias` for `channels` channels.
    pub fn load(w: &Weights, groups: usize, channels: usize, eps: f64) -> Result<Self> {
        Ok(GroupNorm {
            weight: Param::from_tensor(w.tensor("weight", [channels])?),
            bias: Param::from_tensor(w.tensor("bias", [channels])?),
            groups,
            eps,
        })
    }

    /// Normalises `[n, c, h, w]`. The statistics are computed in f32 whatever the compute
    /// precision (as PyTorch's half-precision kernels accumulate in float).
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let [n, c, h, wd] = x.dims();
        let dtype = x.dtype();
        let grouped = x
            .cast(FloatDType::F32)
            .reshape([n, self.groups, (c / self.groups) * h * wd]);
        let mean = grouped.clone().mean_dim(2);
        let centered = grouped - mean;
        let var = centered.clone().square().mean_dim(2);
        let normed = centered / (var + self.eps).sqrt();
        let normed = normed.reshape([n, c, h, wd]).cast(dtype);
        normed * self.weight.val().reshape([1, c, 1, 1]) + self.bias.val().reshape([1, c, 1, 1])
    }
}

/// Layer normalisation over the last dimension.
#[derive(Module, Debug)]
pub struct LayerNorm {
    /// `[d]`.
    pub weight: Param<Tensor<1>>,
    /// `[d]`.
    pub bias: Param<Tensor<1>>,
    /// Added to the variance.
    pub eps: f64,
}

impl LayerNorm {
    /// Loads `weight`/`bias` of width `dim`.
    pub fn load(w: &Weights, dim: usize, eps: f64) -> Result<Self> {
        Ok(LayerNorm {
            weight: Param::from_tensor(w.tensor("weight", [dim])?),
            bias: Param::from_tensor(w.tensor("bias", [dim])?),
            eps,
        })
    }

    /// Normalises the last dimension (statistics in f32, as [`GroupNorm::forward`]).
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        // Casts to the current dtype are no-ops: in f32 this is the plain layer norm.
        let (dtype, f32) = (x.dtype(), FloatDType::F32);
        let weight = self.weight.val().cast(f32);
        let bias = self.bias.val().cast(f32);
        layer_norm(x.cast(f32), weight, Some(bias), self.eps).cast(dtype)
    }
}

/// Nearest-neighbour resize of `[n, c, h, w]` to `[n, c, oh, ow]`, with PyTorch's index rule
/// `src = floor(dst · in / out)`. Built from differentiable ops (works under autodiff).
pub fn upsample_nearest(x: Tensor<4>, out_h: usize, out_w: usize) -> Tensor<4> {
    let [n, c, h, w] = x.dims();
    if out_h == 2 * h && out_w == 2 * w {
        return x
            .reshape([n, c, h, 1, w, 1])
            .expand([n, c, h, 2, w, 2])
            .reshape([n, c, out_h, out_w]);
    }
    let device = x.device();
    let index = |out: usize, inp: usize| -> Tensor<1, burn::tensor::Int> {
        let idx: Vec<i64> = (0..out)
            .map(|d| ((d as f64 * inp as f64 / out as f64).floor() as i64).min(inp as i64 - 1))
            .collect();
        Tensor::from_data(burn::tensor::TensorData::new(idx, [out]), &device)
    };
    x.select(2, index(out_h, h)).select(3, index(out_w, w))
}

#[cfg(test)]
mod tests {
    use super::same_padding;

    #[test]
    fn tf_same_padding() {
        // 112 → 56 with a 3×3 stride-2 kernel: one pixel, at the end (PyTorch would pad 1/1).
        assert_eq!(same_padding(112, 3, 2), (0, 1));
        assert_eq!(same_padding(29, 3, 2), (1, 1));
        assert_eq!(same_padding(15, 3, 2), (1, 1));
        assert_eq!(same_padding(29, 1, 2), (0, 0));
        assert_eq!(same_padding(56, 3, 1), (1, 1));
        assert_eq!(same_padding(8, 3, 1), (1, 1));
    }
}
