//! Training-time augmentation of square RGB images on the host: random resized crop, mirror,
//! colour jitter (brightness, contrast, saturation), random grey and random low resolution
//! (down- then up-sampling, for small or blurry test faces). Every draw comes from the rng the
//! caller passes, so a step's batch is a function of `(seed, step)`.

use rand::Rng;
use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Augmentation settings (also flags of `synfer fer train`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "native", derive(clap::Args))]
pub struct Augment {
    /// Mirror with probability ½.
    #[cfg_attr(feature = "native", arg(skip = true))]
    pub flip: bool,
    /// Smallest random crop side as a fraction of the image side (1: no cropping).
    #[cfg_attr(feature = "native", arg(long, default_value_t = 0.8))]
    pub crop_min: f64,
    /// Colour jitter: largest relative change of brightness, contrast and saturation (0: off).
    #[cfg_attr(feature = "native", arg(long, default_value_t = 0.3))]
    pub colour: f64,
    /// Probability of converting to grey.
    #[cfg_attr(
        feature = "native",
        arg(id = "grey_prob", long = "grey-prob", default_value_t = 0.2)
    )]
    pub grey: f64,
    /// Probability of reducing the resolution to a random side in `[side / 3, side]`.
    #[cfg_attr(feature = "native", arg(long = "low-res-prob", default_value_t = 0.3))]
    pub low_res: f64,
}

impl Default for Augment {
    fn default() -> Self {
        Augment {
            flip: true,
            crop_min: 0.8,
            colour: 0.3,
            grey: 0.2,
            low_res: 0.3,
        }
    }
}

impl Augment {
    /// No augmentation.
    pub const NONE: Augment = Augment {
        flip: false,
        crop_min: 1.0,
        colour: 0.0,
        grey: 0.0,
        low_res: 0.0,
    };

    /// Checks the ranges.
    pub fn validate(&self) -> Result<()> {
        let prob = |name: &str, v: f64| {
            if (0.0..=1.0).contains(&v) {
                Ok(())
            } else {
                Err(Error::request(name, format!("{v} is not in [0, 1]")))
            }
        };
        if !(self.crop_min > 0.0 && self.crop_min <= 1.0) {
            return Err(Error::request(
                "augment.crop_min",
                format!("{} is not in (0, 1]", self.crop_min),
            ));
        }
        prob("augment.colour", self.colour)?;
        prob("augment.grey", self.grey)?;
        prob("augment.low_res", self.low_res)
    }

    /// Augments one `side × side` RGB image (bytes) into `[0, 1]` floats laid out HWC.
    pub fn apply(&self, rgb: &[u8], side: usize, rng: &mut StdRng) -> Vec<f32> {
        let src: Vec<f32> = rgb.iter().map(|&v| f32::from(v) / 255.0).collect();
        let crop = if self.crop_min < 1.0 {
            rng.random_range(self.crop_min..=1.0)
        } else {
            1.0
        };
        let span = crop * side as f64;
        let x0 = rng.random_range(0.0..=(side as f64 - span).max(0.0));
        let y0 = rng.random_range(0.0..=(side as f64 - span).max(0.0));
        let flip = self.flip && rng.random_bool(0.5);
        let mut out = resample(&src, side, [x0, y0, span], side, flip);
        if self.low_res > 0.0 && rng.random_bool(self.low_res) {
            let small = rng.random_range(side.div_ceil(3).max(2)..=side);
            if small < side {
                let s = side as f64;
                let down = resample(&out, side, [0.0, 0.0, s], small, false);
                out = resample(&down, small, [0.0, 0.0, small as f64], side, false);
            }
        }
        if self.colour > 0.0 {
            let c = self.colour;
            let brightness = 1.0 + rng.random_range(-c..=c) as f32;
            let contrast = 1.0 + rng.random_range(-c..=c) as f32;
            let saturation = 1.0 + rng.random_range(-c..=c) as f32;
            jitter(&mut out, brightness, contrast, saturation);
        }
        if self.grey > 0.0 && rng.random_bool(self.grey) {
            jitter(&mut out, 1.0, 1.0, 0.0);
        }
        out
    }
}

/// Luma (Rec. 601) of an RGB pixel.
fn luma(p: &[f32]) -> f32 {
    0.299 * p[0] + 0.587 * p[1] + 0.114 * p[2]
}

/// torchvision's order-free jitter: `x·b`, then contrast around the mean luma, then saturation
/// around each pixel's luma, clamped to `[0, 1]`.
fn jitter(img: &mut [f32], brightness: f32, contrast: f32, saturation: f32) {
    for v in img.iter_mut() {
        *v = (*v * brightness).clamp(0.0, 1.0);
    }
    let n = (img.len() / 3).max(1) as f32;
    let mean = img.chunks_exact(3).map(luma).sum::<f32>() / n;
    for p in img.chunks_exact_mut(3) {
        for v in p.iter_mut() {
            *v = (mean + (*v - mean) * contrast).clamp(0.0, 1.0);
        }
        let y = luma(p);
        for v in p.iter_mut() {
            *v = (y + (*v - y) * saturation).clamp(0.0, 1.0);
        }
    }
}

/// Bilinear resampling of the square window `[x0, y0, span]` of an `n × n` HWC RGB image to
/// `out × out` (pixel centres at +½; edges clamp), optionally mirrored.
fn resample(src: &[f32], n: usize, window: [f64; 3], out: usize, mirror: bool) -> Vec<f32> {
    let [x0, y0, span] = window;
    let scale = span / out as f64;
    let coord = |o: usize, start: f64| -> (usize, usize, f32) {
        let v = (start + (o as f64 + 0.5) * scale - 0.5).clamp(0.0, (n - 1) as f64);
        let lo = v.floor() as usize;
        (lo, (lo + 1).min(n - 1), (v - lo as f64) as f32)
    };
    let mut dst = vec![0f32; out * out * 3];
    for oy in 0..out {
        let (y_lo, y_hi, fy) = coord(oy, y0);
        for ox in 0..out {
            let (x_lo, x_hi, fx) = coord(if mirror { out - 1 - ox } else { ox }, x0);
            for c in 0..3 {
                let at = |y: usize, x: usize| src[(y * n + x) * 3 + c];
                let top = at(y_lo, x_lo) * (1.0 - fx) + at(y_lo, x_hi) * fx;
                let bottom = at(y_hi, x_lo) * (1.0 - fx) + at(y_hi, x_hi) * fx;
                dst[(oy * out + ox) * 3 + c] = top * (1.0 - fy) + bottom * fy;
            }
        }
    }
    dst
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn ramp(side: usize) -> Vec<u8> {
        (0..side * side * 3).map(|i| (i * 7 % 256) as u8).collect()
    }

    #[test]
    fn no_augmentation_is_the_identity() {
        let img = ramp(8);
        let out = Augment::NONE.apply(&img, 8, &mut StdRng::seed_from_u64(1));
        for (a, b) in out.iter().zip(&img) {
            assert!((a - f32::from(*b) / 255.0).abs() < 1e-6);
        }
    }

    #[test]
    fn mirror_reverses_columns() {
        let img = ramp(6);
        let src: Vec<f32> = img.iter().map(|&v| f32::from(v)).collect();
        let out = resample(&src, 6, [0.0, 0.0, 6.0], 6, true);
        for y in 0..6 {
            for x in 0..6 {
                for c in 0..3 {
                    assert_eq!(out[(y * 6 + x) * 3 + c], src[(y * 6 + 5 - x) * 3 + c]);
                }
            }
        }
    }

    #[test]
    fn zero_saturation_is_grey_and_values_stay_in_range() {
        let mut img: Vec<f32> = ramp(4).iter().map(|&v| f32::from(v) / 255.0).collect();
        jitter(&mut img, 1.3, 1.5, 0.0);
        for p in img.chunks_exact(3) {
            assert!((p[0] - p[1]).abs() < 1e-6 && (p[1] - p[2]).abs() < 1e-6);
            assert!(p.iter().all(|v| (0.0..=1.0).contains(v)));
        }
        let aug = Augment {
            colour: 0.5,
            grey: 1.0,
            low_res: 1.0,
            ..Augment::default()
        };
        let out = aug.apply(&ramp(16), 16, &mut StdRng::seed_from_u64(3));
        assert_eq!(out.len(), 16 * 16 * 3);
        assert!(out.iter().all(|v| (0.0..=1.0).contains(v)));
    }
}
