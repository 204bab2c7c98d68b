//! FER A: face-api.js' `FaceExpressionNet` (`@vladmandic/face-api@1.7.15`,
//! `model/face_expression_model`), 112×112 RGB → 7 expression probabilities.
//!
//! Architecture (face-api `src/faceFeatureExtractor/FaceFeatureExtractor.ts`,
//! `denseBlock.ts`, `src/faceProcessor/FaceProcessor.ts`): four dense blocks of 32, 64, 128 and
//! 256 channels, each halving the resolution (112 → 56 → 28 → 14 → 7). In a block,
//! `out1 = relu(conv0(x))` (stride 2: a regular 3×3 conv in `dense0`, separable elsewhere),
//! `out_k = sep_k(relu(out1 + … + out_{k-1}))` for k = 2, 3, 4 (`out2` takes `out1` itself) and
//! the block returns `relu(out1 + out2 + out3 + out4)`. Then a 7×7 average pool (stride 2,
//! valid), `fc` 256 → 7 and a softmax. Every convolution uses TensorFlow `SAME` padding.
//!
//! Weight keys (`assets/face/fer_a_face_api.safetensors`): `dense0.conv0.{weight,bias}`,
//! `denseB.convK.{depthwise.weight, pointwise.weight, pointwise.bias}` for the separable ones,
//! `fc.{weight,bias}` (`[7, 256]`, PyTorch `[out, in]`).

use burn::module::Module;
use burn::tensor::activation::{relu, softmax};
use burn::tensor::module::avg_pool2d;
use burn::tensor::ops::AvgPoolOptions;
use burn::tensor::{Device, Tensor, TensorData};

use crate::error::Result;
use crate::nn::Linear;
use crate::nn::{Conv2d, SeparableConv2d};
use crate::weights::Weights;

/// Input side (pixels).
pub const INPUT_SIZE: usize = 112;

/// The mean RGB face-api subtracts (on the 0–255 scale) before dividing by 255.
pub const MEAN_RGB: [f32; 3] = [122.782, 117.001, 104.298];

/// Output classes in face-api's order, which is the canonical [`CLASSES`](crate::expression::CLASSES) order.
pub const CLASSES: [&str; 7] = crate::expression::CLASSES;

/// Channels of the four dense blocks.
const CHANNELS: [usize; 4] = [32, 64, 128, 256];

/// One dense block (four convolutions).
#[derive(Module, Debug)]
pub struct DenseBlock {
    /// `dense0` only: regular 3×3 stride-2 convolution.
    pub conv0: Option<Conv2d>,
    /// Other blocks: separable stride-2 convolution (stored under the same key, `conv0`).
    pub sep0: Option<SeparableConv2d>,
    /// Separable stride-1 convolutions `conv1`, `conv2`, `conv3`.
    pub convs: Vec<SeparableConv2d>,
}

impl DenseBlock {
    fn load(w: &Weights, c_in: usize, c_out: usize, first: bool) -> Result<Self> {
        let (conv0, sep0) = if first {
            (
                Some(Conv2d::load_tf(&w.pp("conv0"), c_in, c_out, 3, 2, true)?),
                None,
            )
        } else {
            (
                None,
                Some(SeparableConv2d::load(&w.pp("conv0"), c_in, c_out, 2)?),
            )
        };
        let convs = (1..4)
            .map(|k| SeparableConv2d::load(&w.pp(format!("conv{k}")), c_out, c_out, 1))
            .collect::<Result<Vec<_>>>()?;
        Ok(DenseBlock { conv0, sep0, convs })
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let first = match (&self.conv0, &self.sep0) {
            (Some(conv), _) => conv.forward(x),
            (None, Some(sep)) => sep.forward(x),
            (None, None) => unreachable!("a dense block always has a first convolution"),
        };
        // `out` is relu(out1 + … + out_k): the next convolution's input, and after the last
        // one the block's output.
        let mut out = relu(first);
        let mut sum = out.clone();
        for conv in &self.convs {
            sum = sum + conv.forward(out);
            out = relu(sum.clone());
        }
        out
    }
}

/// face-api's facial-expression network.
#[derive(Module, Debug)]
pub struct FaceApiExpression {
    /// `dense0` … `dense3`.
    pub blocks: Vec<DenseBlock>,
    /// 256 → 7.
    pub fc: Linear,
}

impl FaceApiExpression {
    /// Loads the network from a safetensors file held in memory (`name` is used in errors).
    /// Strict: every key must be used and have the expected shape.
    pub fn from_bytes(name: &str, bytes: &[u8], device: &Device) -> Result<Self> {
        super::load_strict(name, bytes, device, Self::load)
    }

    /// Loads the network from a weights cursor.
    pub fn load(w: &Weights) -> Result<Self> {
        let mut blocks = Vec::with_capacity(4);
        let mut c_in = 3;
        for (i, &c_out) in CHANNELS.iter().enumerate() {
            blocks.push(DenseBlock::load(
                &w.pp(format!("dense{i}")),
                c_in,
                c_out,
                i == 0,
            )?);
            c_in = c_out;
        }
        let fc = Linear::load(&w.pp("fc"), 256, 7, true)?;
        Ok(FaceApiExpression { blocks, fc })
    }

    /// Logits `[n, 7]` (canonical order) from the preprocessed `[n, 3, 112, 112]` input.
    pub fn logits(&self, x: Tensor<4>) -> Tensor<2> {
        let mut h = x;
        for block in &self.blocks {
            h = block.forward(h);
        }
        let pooled = avg_pool2d(
            h,
            AvgPoolOptions {
                kernel_size: [7, 7],
                stride: [2, 2],
                padding: [(0, 0), (0, 0)],
                count_include_pad: true,
                ceil_mode: false,
            },
        );
        let [n, c, ph, pw] = pooled.dims();
        // tfjs flattens NHWC; with a 112×112 input the pooled map is 1×1, so NCHW agrees.
        let flat = pooled.permute([0, 2, 3, 1]).reshape([n, ph * pw * c]);
        self.fc.forward(flat)
    }

    /// Probabilities `[n, 7]` in the canonical order [`CLASSES`](crate::expression::CLASSES) from the preprocessed
    /// `[n, 3, 112, 112]` input (see [`preprocess`]).
    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        softmax(self.logits(x), 1)
    }
}

/// face-api's preprocessing of u8 RGB pixels laid out `[n, 112, 112, 3]`:
/// `(v − mean_rgb) / 255` per channel, in f32 as tfjs computes it. Returns `[n, 3, 112, 112]`.
///
/// face-api pads non-square inputs and resizes them bilinearly to 112×112; this function takes
/// images already at 112×112 (an [`Error::InvalidRequest`](crate::Error::InvalidRequest)
/// otherwise).
pub fn preprocess_u8(pixels: &[u8], device: &Device) -> Result<Tensor<4>> {
    let n = super::check_rgb_u8(pixels, INPUT_SIZE)?;
    let values = pixels
        .iter()
        .enumerate()
        .map(|(i, &v)| (v as f32 - MEAN_RGB[i % 3]) / 255.0)
        .collect();
    Ok(super::nhwc_to_nchw(
        values,
        [n, INPUT_SIZE, INPUT_SIZE, 3],
        device,
    ))
}

/// face-api's preprocessing of an RGB float tensor `[n, 112, 112, 3]` in `[0, 1]`
/// (scaled to 0–255 first): `(255·x − mean_rgb) / 255`. Returns `[n, 3, 112, 112]`.
/// Differentiable (usable under autodiff).
pub fn preprocess(images: Tensor<4>) -> Result<Tensor<4>> {
    super::check_rgb_tensor(&images, INPUT_SIZE)?;
    let device = images.device();
    let mean = Tensor::<1>::from_data(TensorData::new(MEAN_RGB.to_vec(), [3]), &device)
        .reshape([1, 1, 1, 3]);
    Ok(((images * 255.0 - mean) / 255.0).permute([0, 3, 1, 2]))
}
