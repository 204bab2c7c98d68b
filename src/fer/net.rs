//! Trainable expression classifiers, group-normalised so that training and inference compute
//! the same function at any batch size (no running statistics to carry):
//!
//! - [`ResNet18`]: He et al.'s ResNet-18 (7×7/2 stem, 3×3/2 max pool, four stages of two basic
//!   blocks at `w, 2w, 4w, 8w` channels, global mean, linear head as a 1×1 convolution), GroupNorm instead of
//!   BatchNorm (Wu & He 2018); `w = 64` is the original width.
//! - [`MiniXception`]: Arriaga et al.'s mini-Xception (two 3×3 VALID stem convolutions at `w`
//!   channels, four residual blocks of two separable convolutions at `2w … 16w` channels with a
//!   3×3/2 max pool and a 1×1/2 projection, a 3×3 convolution to the classes, global mean);
//!   `w = 8` is the original width.
//!
//! Parameter keys are the field paths (`blocks.3.conv1.conv.weight`), so a checkpoint written
//! by [`crate::train::params::read`] loads back through [`FerNet::load`].

use burn::module::Module;
use burn::tensor::Tensor;
use burn::tensor::activation::relu;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::nn::GroupNorm;
use crate::nn::{Conv2d, SeparableConv2d, max_pool_3x3_same};
use crate::weights::Weights;

/// The architecture of a classifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Arch {
    /// [`ResNet18`].
    Resnet18,
    /// [`MiniXception`].
    MiniXception,
}

impl Arch {
    /// The name in `fer.json` and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Arch::Resnet18 => "resnet18",
            Arch::MiniXception => "mini-xception",
        }
    }

    /// The original base width.
    pub fn default_width(self) -> usize {
        match self {
            Arch::Resnet18 => 64,
            Arch::MiniXception => 8,
        }
    }
}

impl std::str::FromStr for Arch {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "resnet18" | "resnet-18" => Ok(Arch::Resnet18),
            "mini-xception" | "mini_xception" => Ok(Arch::MiniXception),
            _ => Err(Error::request(
                "arch",
                format!("{s:?}: expected resnet18 or mini-xception"),
            )),
        }
    }
}

/// Groups of the GroupNorm over `c` channels: `c / 4` capped at 32, rounded down to a divisor.
pub(crate) fn norm_groups(c: usize) -> usize {
    let mut g = (c / 4).clamp(1, 32);
    while !c.is_multiple_of(g) {
        g -= 1;
    }
    g
}

fn global_mean(x: Tensor<4>) -> Tensor<2> {
    let [n, c, h, w] = x.dims();
    x.reshape([n, c, h * w]).mean_dim(2).reshape([n, c])
}

/// A convolution followed by a GroupNorm.
#[derive(Module, Debug)]
pub struct ConvNorm {
    /// The convolution (TensorFlow `SAME` or `VALID` padding).
    pub conv: Conv2d,
    /// Its normalisation.
    pub norm: GroupNorm,
}

impl ConvNorm {
    fn load(w: &Weights, c_in: usize, c_out: usize, kernel: usize, stride: usize) -> Result<Self> {
        Self::load_padded(w, c_in, c_out, kernel, stride, true)
    }

    fn load_padded(
        w: &Weights,
        c_in: usize,
        c_out: usize,
        kernel: usize,
        stride: usize,
        same: bool,
    ) -> Result<Self> {
        Ok(ConvNorm {
            conv: Conv2d::load_tf(&w.pp("conv"), c_in, c_out, kernel, stride, same)?,
            norm: GroupNorm::load(&w.pp("norm"), norm_groups(c_out), c_out, 1e-5)?,
        })
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        self.norm.forward(self.conv.forward(x))
    }
}

/// A ResNet basic block: two 3×3 convolutions and a (projected, when the shape changes)
/// shortcut.
#[derive(Module, Debug)]
pub struct BasicBlock {
    /// 3×3, carrying the stride.
    pub conv1: ConvNorm,
    /// 3×3.
    pub conv2: ConvNorm,
    /// 1×1 projection (empty: identity).
    pub shortcut: Vec<ConvNorm>,
}

impl BasicBlock {
    fn load(w: &Weights, c_in: usize, c_out: usize, stride: usize) -> Result<Self> {
        let shortcut = if stride != 1 || c_in != c_out {
            vec![ConvNorm::load(
                &w.pp("shortcut").pp(0),
                c_in,
                c_out,
                1,
                stride,
            )?]
        } else {
            Vec::new()
        };
        Ok(BasicBlock {
            conv1: ConvNorm::load(&w.pp("conv1"), c_in, c_out, 3, stride)?,
            conv2: ConvNorm::load(&w.pp("conv2"), c_out, c_out, 3, 1)?,
            shortcut,
        })
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let skip = match self.shortcut.first() {
            Some(p) => p.forward(x.clone()),
            None => x.clone(),
        };
        let h = relu(self.conv1.forward(x));
        relu(self.conv2.forward(h) + skip)
    }
}

/// ResNet-18 with GroupNorm (see the module docs).
#[derive(Module, Debug)]
pub struct ResNet18 {
    /// 7×7/2 stem.
    pub stem: ConvNorm,
    /// Eight basic blocks (two per stage).
    pub blocks: Vec<BasicBlock>,
    /// `8w → classes`, as a 1×1 convolution on the pooled features (stored `[out, in, 1, 1]`,
    /// the layout its key holds).
    pub fc: Conv2d,
}

impl ResNet18 {
    fn load(w: &Weights, channels: usize, width: usize, classes: usize) -> Result<Self> {
        let stem = ConvNorm::load(&w.pp("stem"), channels, width, 7, 2)?;
        let mut blocks = Vec::with_capacity(8);
        let mut c_in = width;
        for stage in 0..4 {
            let c_out = width << stage;
            for j in 0..2 {
                let stride = if stage > 0 && j == 0 { 2 } else { 1 };
                let k = blocks.len();
                blocks.push(BasicBlock::load(
                    &w.pp("blocks").pp(k),
                    c_in,
                    c_out,
                    stride,
                )?);
                c_in = c_out;
            }
        }
        let fc = Conv2d::load_tf(&w.pp("fc"), c_in, classes, 1, 1, false)?;
        Ok(ResNet18 { stem, blocks, fc })
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        let mut h = max_pool_3x3_same(relu(self.stem.forward(x)));
        for block in &self.blocks {
            h = block.forward(h);
        }
        let pooled = global_mean(h);
        let [n, c] = pooled.dims();
        global_mean(self.fc.forward(pooled.reshape([n, c, 1, 1])))
    }
}

/// A mini-Xception residual block.
#[derive(Module, Debug)]
pub struct XceptionBlock {
    /// 1×1/2 projection of the input.
    pub residual: ConvNorm,
    /// First separable convolution.
    pub sep1: SeparableConv2d,
    /// Its normalisation (then relu).
    pub norm1: GroupNorm,
    /// Second separable convolution.
    pub sep2: SeparableConv2d,
    /// Its normalisation (then the max pool).
    pub norm2: GroupNorm,
}

impl XceptionBlock {
    fn load(w: &Weights, c_in: usize, c_out: usize) -> Result<Self> {
        let g = norm_groups(c_out);
        Ok(XceptionBlock {
            residual: ConvNorm::load(&w.pp("residual"), c_in, c_out, 1, 2)?,
            sep1: SeparableConv2d::load(&w.pp("sep1"), c_in, c_out, 1)?,
            norm1: GroupNorm::load(&w.pp("norm1"), g, c_out, 1e-5)?,
            sep2: SeparableConv2d::load(&w.pp("sep2"), c_out, c_out, 1)?,
            norm2: GroupNorm::load(&w.pp("norm2"), g, c_out, 1e-5)?,
        })
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let r = self.residual.forward(x.clone());
        let s = relu(self.norm1.forward(self.sep1.forward(x)));
        let s = self.norm2.forward(self.sep2.forward(s));
        max_pool_3x3_same(s) + r
    }
}

/// mini-Xception with GroupNorm (see the module docs).
#[derive(Module, Debug)]
pub struct MiniXception {
    /// 3×3 VALID, `channels → w`.
    pub stem1: ConvNorm,
    /// 3×3 VALID, `w → w`.
    pub stem2: ConvNorm,
    /// Four residual blocks, `2w, 4w, 8w, 16w`.
    pub blocks: Vec<XceptionBlock>,
    /// 3×3 `SAME`, `16w → classes`.
    pub head: Conv2d,
}

impl MiniXception {
    fn load(w: &Weights, channels: usize, width: usize, classes: usize) -> Result<Self> {
        let mut blocks = Vec::with_capacity(4);
        let mut c_in = width;
        for k in 0..4 {
            let c_out = width << (k + 1);
            blocks.push(XceptionBlock::load(&w.pp("blocks").pp(k), c_in, c_out)?);
            c_in = c_out;
        }
        Ok(MiniXception {
            stem1: ConvNorm::load_padded(&w.pp("stem1"), channels, width, 3, 1, false)?,
            stem2: ConvNorm::load_padded(&w.pp("stem2"), width, width, 3, 1, false)?,
            blocks,
            head: Conv2d::load_tf(&w.pp("head"), c_in, classes, 3, 1, true)?,
        })
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        let h = relu(self.stem1.forward(x));
        let mut h = relu(self.stem2.forward(h));
        for block in &self.blocks {
            h = block.forward(h);
        }
        global_mean(self.head.forward(h))
    }
}

/// One of the architectures.
// One value per model: the size difference of the variants costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum FerNet {
    /// ResNet-18.
    Resnet18(ResNet18),
    /// mini-Xception.
    MiniXception(MiniXception),
}

impl FerNet {
    /// Loads (or, from an initialising store, creates) `arch` for `channels`-channel input,
    /// base width `width` and `classes` outputs.
    pub fn load(
        w: &Weights,
        arch: Arch,
        channels: usize,
        width: usize,
        classes: usize,
    ) -> Result<Self> {
        Ok(match arch {
            Arch::Resnet18 => FerNet::Resnet18(ResNet18::load(w, channels, width, classes)?),
            Arch::MiniXception => {
                FerNet::MiniXception(MiniXception::load(w, channels, width, classes)?)
            }
        })
    }

    /// Logits `[n, classes]` from normalised input `[n, channels, s, s]`.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        match self {
            FerNet::Resnet18(m) => m.forward(x),
            FerNet::MiniXception(m) => m.forward(x),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::norm_groups;

    #[test]
    fn groups_divide_the_channels() {
        assert_eq!(norm_groups(8), 2);
        assert_eq!(norm_groups(64), 16);
        assert_eq!(norm_groups(512), 32);
        assert_eq!(norm_groups(24), 6);
        assert_eq!(norm_groups(3), 1);
    }
}
