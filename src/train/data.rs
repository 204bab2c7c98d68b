//! A FEText-style folder in memory for training: decoded 64×64 images, captions, AU vectors.

use std::path::Path;

use burn::tensor::{Device, Tensor, TensorData};

use crate::au::FINEFACE;
use crate::dataset::metadata::{self, Record};
use crate::error::{Error, Result};

/// The dataset.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// Image side.
    pub side: usize,
    /// RGB bytes, `side²·3` per image.
    pub pixels: Vec<u8>,
    /// Records (same order).
    pub records: Vec<Record>,
    /// AU vectors in FineFace order (12 per image).
    pub aus: Vec<f32>,
}

impl Dataset {
    /// Loads `metadata.jsonl` and every image of `dir`; all images must be square and of one size.
    pub fn load(dir: &Path) -> Result<Self> {
        let records = metadata::read(dir)?;
        if records.is_empty() {
            return Err(Error::request(
                "data",
                format!("{}/{} has no records", dir.display(), metadata::FILE),
            ));
        }
        let mut side = 0;
        let mut pixels = Vec::new();
        let mut aus = Vec::with_capacity(records.len() * FINEFACE.codes.len());
        for r in &records {
            let path = dir.join(&r.file_name);
            let img = crate::image::read(&path)?;
            let (w, h) = (img.width() as usize, img.height() as usize);
            if side == 0 {
                side = w;
            }
            if w != side || h != side {
                return Err(Error::Image {
                    file: path.display().to_string(),
                    message: format!("{w}×{h}; every image must be {side}×{side}"),
                });
            }
            pixels.extend_from_slice(img.as_raw());
            aus.extend_from_slice(r.au_vector()?.values());
        }
        Ok(Dataset {
            side,
            pixels,
            records,
            aus,
        })
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether there are no images.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Images `idx` as `[b, 3, side, side]` in `[-1, 1]`, optionally mirrored per item.
    pub fn images(&self, idx: &[usize], flip: &[bool], device: &Device) -> Tensor<4> {
        let s = self.side;
        let per = s * s * 3;
        let mut data = vec![0f32; idx.len() * per];
        for (b, &i) in idx.iter().enumerate() {
            let src = &self.pixels[i * per..(i + 1) * per];
            let mirror = flip.get(b).copied().unwrap_or(false);
            for y in 0..s {
                for x in 0..s {
                    let sx = if mirror { s - 1 - x } else { x };
                    for c in 0..3 {
                        let v = f32::from(src[(y * s + sx) * 3 + c]) / 127.5 - 1.0;
                        data[b * per + (c * s + y) * s + x] = v;
                    }
                }
            }
        }
        Tensor::from_data(TensorData::new(data, [idx.len(), 3, s, s]), device)
    }
}
