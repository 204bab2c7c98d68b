//! Image helpers shared by every face of the crate: a borrowed RGB view, decoding and PNG
//! encoding with errors that name the file, TensorFlow's resize kernels (host and
//! differentiable tensor forms), mirroring, and diffusers' float → byte rounding.
//!
//! The `image` crate is built with PNG and JPEG only
//! ([`IMAGE_EXTENSIONS`](crate::files::IMAGE_EXTENSIONS)).

pub mod png_text;

use burn::tensor::{Tensor, TensorData};

use crate::error::{Error, Result};

/// A borrowed RGB image: `width × height` pixels, rows top to bottom, 3 bytes per pixel.
#[derive(Debug, Clone, Copy)]
pub struct RgbView<'a> {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// `width · height · 3` bytes, RGB.
    pub pixels: &'a [u8],
}

impl<'a> RgbView<'a> {
    /// Wraps `pixels` (checked by [`RgbView::validate`]).
    pub fn new(width: usize, height: usize, pixels: &'a [u8]) -> Result<Self> {
        let view = RgbView {
            width,
            height,
            pixels,
        };
        view.validate()?;
        Ok(view)
    }

    /// A zero-size image or a buffer of the wrong length is an
    /// [`Error::InvalidRequest`] on `image`.
    pub fn validate(&self) -> Result<()> {
        if self.width == 0 || self.height == 0 {
            return Err(Error::request(
                "image",
                format!("{}×{} image has no pixels", self.width, self.height),
            ));
        }
        let expected = self
            .width
            .checked_mul(self.height)
            .and_then(|n| n.checked_mul(3));
        if expected != Some(self.pixels.len()) {
            return Err(Error::request(
                "image",
                format!(
                    "{} bytes do not hold a {}×{} RGB image",
                    self.pixels.len(),
                    self.width,
                    self.height
                ),
            ));
        }
        Ok(())
    }

    fn at(&self, x: usize, y: usize, c: usize) -> f32 {
        f32::from(self.pixels[(y * self.width + x) * 3 + c])
    }

    /// Appends the three channels interpolated between columns `x0, x1` (weight `fx` on `x1`)
    /// and rows `y0, y1` (weight `fy` on `y1`): rows first, as TensorFlow's kernels do.
    pub(crate) fn push_bilinear(
        &self,
        (x0, x1, fx): (usize, usize, f32),
        (y0, y1, fy): (usize, usize, f32),
        out: &mut Vec<f32>,
    ) {
        for c in 0..3 {
            let top = self.at(x0, y0, c) + (self.at(x1, y0, c) - self.at(x0, y0, c)) * fx;
            let bottom = self.at(x0, y1, c) + (self.at(x1, y1, c) - self.at(x0, y1, c)) * fx;
            out.push(top + (bottom - top) * fy);
        }
    }

    /// Appends the three channels at source position `(x, y)` (pixel centres at integers),
    /// bilinear, clamped to the edge pixels' centres.
    pub(crate) fn push_clamped(&self, x: f32, y: f32, out: &mut Vec<f32>) {
        let x = x.clamp(0.0, (self.width - 1) as f32);
        let y = y.clamp(0.0, (self.height - 1) as f32);
        let (x0, y0) = (x.floor() as usize, y.floor() as usize);
        let (x1, y1) = ((x0 + 1).min(self.width - 1), (y0 + 1).min(self.height - 1));
        self.push_bilinear((x0, x1, x - x0 as f32), (y0, y1, y - y0 as f32), out);
    }
}

/// Decodes PNG or JPEG bytes to 8-bit RGB; `name` (a file name) is used in errors.
pub fn decode(bytes: &[u8], name: &str) -> Result<::image::RgbImage> {
    Ok(::image::load_from_memory(bytes)
        .map_err(|e| Error::Image {
            file: name.to_string(),
            message: e.to_string(),
        })?
        .to_rgb8())
}

/// Reads and decodes an image file to 8-bit RGB.
pub fn read(path: &std::path::Path) -> Result<::image::RgbImage> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    decode(&bytes, &path.display().to_string())
}

/// PNG bytes of an RGB image (`width · height · 3` bytes); `name` is used in errors.
pub fn encode_png(rgb: &[u8], width: usize, height: usize, name: &str) -> Result<Vec<u8>> {
    use ::image::ImageEncoder as _;
    RgbView::new(width, height, rgb)?;
    let mut png = Vec::new();
    ::image::codecs::png::PngEncoder::new(&mut png)
        .write_image(
            rgb,
            width as u32,
            height as u32,
            ::image::ExtendedColorType::Rgb8,
        )
        .map_err(|e| Error::Image {
            file: name.to_string(),
            message: e.to_string(),
        })?;
    Ok(png)
}

/// Writes an RGB image as a PNG file, atomically ([`crate::files::write_atomic`]), creating
/// its folder.
pub fn write_png(path: &std::path::Path, rgb: &[u8], width: usize, height: usize) -> Result<()> {
    let png = encode_png(rgb, width, height, &path.display().to_string())?;
    write_encoded(path, &png)
}

/// Writes encoded image bytes to `path`, atomically ([`crate::files::write_atomic`]),
/// creating its folder.
pub fn write_encoded(path: &std::path::Path, bytes: &[u8]) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    crate::files::write_atomic(path, bytes)
}

/// Mirrors an RGB image left to right.
pub fn mirror(width: usize, height: usize, rgb: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(rgb.len());
    for y in 0..height {
        for x in (0..width).rev() {
            let o = (y * width + x) * 3;
            out.extend_from_slice(&rgb[o..o + 3]);
        }
    }
    out
}

/// `[0, 1]` floats → bytes as diffusers' `numpy_to_pil` does: `(x · 255).round()` (numpy
/// rounds half to even) then `astype(uint8)`.
pub fn to_u8(values: &[f32]) -> Vec<u8> {
    values
        .iter()
        .map(|v| (v * 255.0).round_ties_even().clamp(0.0, 255.0) as u8)
        .collect()
}

/// Centre square crop, then a triangle-filter resize to `side × side`.
pub fn square_resize(img: &::image::RgbImage, side: usize) -> Vec<u8> {
    let (w, h) = img.dimensions();
    let s = w.min(h).max(1);
    let square = ::image::imageops::crop_imm(img, (w - s) / 2, (h - s) / 2, s, s).to_image();
    if s as usize == side {
        return square.into_raw();
    }
    ::image::imageops::resize(
        &square,
        side as u32,
        side as u32,
        ::image::imageops::FilterType::Triangle,
    )
    .into_raw()
}

/// TensorFlow `resizeBilinear` (`alignCorners = false`, `halfPixelCenters = false`) of `image`
/// to `side × side`: RGB values in 0–255, `[side, side, 3]`.
pub fn resize_bilinear(image: RgbView, side: usize) -> Vec<f32> {
    let axis = |len: usize| -> Vec<(usize, usize, f32)> {
        let scale = len as f64 / side as f64;
        (0..side)
            .map(|o| {
                let v = o as f64 * scale;
                let lo = (v.floor() as usize).min(len - 1);
                let hi = (lo + 1).min(len - 1);
                (lo, hi, (v - lo as f64) as f32)
            })
            .collect()
    };
    let (xs, ys) = (axis(image.width), axis(image.height));
    let mut out = Vec::with_capacity(side * side * 3);
    for &y in &ys {
        for &x in &xs {
            image.push_bilinear(x, y, &mut out);
        }
    }
    out
}

/// TensorFlow `cropAndResize` of the box `[x1, y1, x2, y2]` (pixels; normalised by the image
/// size as human does) to `side × side`, bilinear, 0 outside the image: RGB values in 0–255,
/// `[side, side, 3]`.
pub fn crop_and_resize(image: RgbView, crop: [f64; 4], side: usize) -> Vec<f32> {
    let axis = |lo: f64, hi: f64, len: usize| -> Vec<Option<(usize, usize, f32)>> {
        let last = (len - 1) as f64;
        let (a, b) = (lo / len as f64, hi / len as f64);
        let step = if side > 1 {
            (b - a) * last / (side - 1) as f64
        } else {
            0.0
        };
        (0..side)
            .map(|o| {
                let v = if side > 1 {
                    a * last + o as f64 * step
                } else {
                    0.5 * (a + b) * last
                };
                (0.0..=last).contains(&v).then(|| {
                    let f = v.floor();
                    (f as usize, v.ceil() as usize, (v - f) as f32)
                })
            })
            .collect()
    };
    let xs = axis(crop[0], crop[2], image.width);
    let ys = axis(crop[1], crop[3], image.height);
    let mut out = Vec::with_capacity(side * side * 3);
    for y in &ys {
        for x in &xs {
            match (y, x) {
                (Some(y), Some(x)) => image.push_bilinear(*x, *y, &mut out),
                _ => out.extend([0.0; 3]),
            }
        }
    }
    out
}

/// TensorFlow `cropAndResize` of each whole image (`[n, h, w, 3]`) to `side × side`
/// (bilinear, corners aligned: source `o · (len − 1) / (side − 1)`), as two matrix products so
/// that it differentiates like any matmul.
pub fn resize_whole(images: Tensor<4>, side: usize) -> Tensor<4> {
    let [n, h, w, c] = images.dims();
    if h == side && w == side {
        return images;
    }
    let device = images.device();
    let weights = |len: usize| -> Tensor<2> {
        let mut m = vec![0f32; side * len];
        for o in 0..side {
            let v = if side > 1 {
                o as f64 * (len - 1) as f64 / (side - 1) as f64
            } else {
                0.5 * (len - 1) as f64
            };
            let lo = v.floor() as usize;
            let hi = v.ceil() as usize;
            let f = (v - lo as f64) as f32;
            m[o * len + lo] += 1.0 - f;
            m[o * len + hi.min(len - 1)] += f;
        }
        Tensor::from_data(TensorData::new(m, [side, len]), &device)
    };
    let (ry, rx) = (weights(h), weights(w));
    // Rows: [side, h] × [n, h, w·c] → [n, side, w·c].
    let rows = ry
        .unsqueeze::<3>()
        .expand([n, side, h])
        .matmul(images.reshape([n, h, w * c]));
    // Columns: [n·side, w, c] with [side, w] on the left.
    let cols = rx
        .unsqueeze::<3>()
        .expand([n * side, side, w])
        .matmul(rows.reshape([n * side, w, c]));
    cols.reshape([n, side, side, c])
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Device;

    #[test]
    fn rounds_and_clamps() {
        // 0.5 · 255 = 127.5 exactly: numpy's half-to-even gives 128.
        assert_eq!(
            to_u8(&[0.0, 1.0, 0.2, 0.5, 1.5, -0.1, 0.0019]),
            vec![0, 255, 51, 128, 255, 0, 0]
        );
    }

    #[test]
    fn resize_matches_the_analyzers_crop_and_resize() {
        let device = Device::flex();
        let (w, h) = (5usize, 4usize);
        let pixels: Vec<u8> = (0..w * h * 3).map(|i| (i * 37 % 251) as u8).collect();
        let want = crop_and_resize(
            RgbView::new(w, h, &pixels).unwrap(),
            [0.0, 0.0, w as f64, h as f64],
            7,
        );
        let x = Tensor::<4>::from_data(
            TensorData::new(pixels.iter().map(|v| f32::from(*v)).collect(), [1, h, w, 3]),
            &device,
        );
        let got: Vec<f32> = resize_whole(x, 7).into_data().try_into_vec_as().unwrap();
        assert_eq!(got.len(), want.len());
        for (a, b) in got.iter().zip(&want) {
            assert!((a - b).abs() < 1e-3, "{a} vs {b}");
        }
    }

    #[test]
    fn png_round_trip_and_errors_name_the_file() {
        let rgb: Vec<u8> = (0..4 * 3 * 3).map(|i| (i * 7) as u8).collect();
        let png = encode_png(&rgb, 4, 3, "x.png").unwrap();
        let back = decode(&png, "x.png").unwrap();
        assert_eq!((back.width(), back.height()), (4, 3));
        assert_eq!(back.as_raw(), &rgb);
        assert!(encode_png(&rgb, 5, 3, "x.png").is_err());
        let err = decode(b"not an image", "bad.png").unwrap_err().to_string();
        assert!(err.contains("bad.png"), "{err}");
        assert_eq!(mirror(2, 1, &[1, 2, 3, 4, 5, 6]), vec![4, 5, 6, 1, 2, 3]);
    }
}
