//! How faithfully and how sharply a model's VAE reproduces real faces: the round trip
//! decode(posterior mean) of every image of a folder at the model's size, scored by PSNR and
//! by the sharpness ratio (variance of the Laplacian of grey; mean over the reconstructions /
//! mean over the originals: 1 keeps all the fine detail, 0.16 loses 84 % of it).

use std::path::Path;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::pipeline::Pipeline;

/// The VAE round trip measured on a folder.
#[derive(Debug, Clone, Serialize)]
pub struct ReconstructionReport {
    /// The folder.
    pub folder: String,
    /// Images measured.
    pub images: usize,
    /// Mean PSNR over the images (dB, 8-bit pixels).
    pub psnr_db: f64,
    /// Mean Laplacian variance of the reconstructions / that of the originals.
    pub sharpness_ratio: f64,
}

/// Measures `pipe`'s VAE on every image under `dir` (resized to the model's size when they
/// have another), `batch` images per call.
pub fn reconstruction(pipe: &Pipeline, dir: &Path, batch: usize) -> Result<ReconstructionReport> {
    let files = crate::files::image_files(&[dir.to_path_buf()]);
    if files.is_empty() {
        return Err(Error::request(
            "vae-dev",
            format!("{} holds no png/jpg image", dir.display()),
        ));
    }
    let side = pipe.info().default_size;
    let (mut psnr, mut sharp_rec, mut sharp_orig) = (0.0, 0.0, 0.0);
    for chunk in files.chunks(batch.max(1)) {
        let images = chunk
            .iter()
            .map(|p| {
                let img = crate::image::read(p)?;
                Ok(if img.dimensions() == (side as u32, side as u32) {
                    img
                } else {
                    ::image::imageops::resize(
                        &img,
                        side as u32,
                        side as u32,
                        ::image::imageops::FilterType::Lanczos3,
                    )
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let recs = pipe.reconstruct(&images, side, side)?;
        for (img, rec) in images.iter().zip(&recs) {
            psnr += psnr_db(img.as_raw(), rec);
            sharp_orig += laplacian_variance(img.as_raw(), side, side);
            sharp_rec += laplacian_variance(rec, side, side);
        }
    }
    let n = files.len() as f64;
    Ok(ReconstructionReport {
        folder: dir.display().to_string(),
        images: files.len(),
        psnr_db: psnr / n,
        sharpness_ratio: if sharp_orig > 0.0 {
            sharp_rec / sharp_orig
        } else {
            0.0
        },
    })
}

/// PSNR of `b` against `a` (8-bit values; 100 dB for identical images).
pub fn psnr_db(a: &[u8], b: &[u8]) -> f64 {
    let mse = a
        .iter()
        .zip(b)
        .map(|(x, y)| (f64::from(*x) - f64::from(*y)).powi(2))
        .sum::<f64>()
        / a.len().max(1) as f64;
    if mse == 0.0 {
        100.0
    } else {
        10.0 * (255.0f64.powi(2) / mse).log10()
    }
}

/// Variance of the 4-neighbour Laplacian of the grey image (BT.601 luma on `[0, 1]`), over
/// the interior pixels.
pub fn laplacian_variance(rgb: &[u8], width: usize, height: usize) -> f64 {
    let grey: Vec<f64> = rgb
        .chunks_exact(3)
        .map(|p| {
            (0.299 * f64::from(p[0]) + 0.587 * f64::from(p[1]) + 0.114 * f64::from(p[2])) / 255.0
        })
        .collect();
    let mut values = Vec::with_capacity(width * height);
    for y in 1..height.saturating_sub(1) {
        for x in 1..width.saturating_sub(1) {
            let at = |yy: usize, xx: usize| grey[yy * width + xx];
            values.push(at(y - 1, x) + at(y + 1, x) + at(y, x - 1) + at(y, x + 1) - 4.0 * at(y, x));
        }
    }
    let n = values.len().max(1) as f64;
    let mean = values.iter().sum::<f64>() / n;
    values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn psnr_and_laplacian_match_hand_computed_values() {
        // One level off everywhere: MSE 1 → 20·log10(255) dB.
        let a = vec![10u8; 12];
        let b = vec![11u8; 12];
        assert!((psnr_db(&a, &b) - 48.130_803_608_679_1).abs() < 1e-9);
        assert_eq!(psnr_db(&a, &a), 100.0);
        // A flat image has no Laplacian energy; a single bright pixel in a 3×3 grey image has
        // one interior value, so the variance over one value is 0; in 4×3 the two interior
        // Laplacians are −4 and 1 (in units of the pixel's luma), variance 6.25.
        assert_eq!(laplacian_variance(&[128u8; 27], 3, 3), 0.0);
        let mut img = vec![0u8; 4 * 3 * 3];
        for c in 0..3 {
            img[(4 + 1) * 3 + c] = 255;
        }
        assert!((laplacian_variance(&img, 4, 3) - 6.25).abs() < 1e-9);
    }
}
