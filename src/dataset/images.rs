//! Decoding listed items to one square size in memory, for FER training and evaluation.

use std::collections::BTreeMap;

use super::{Item, ItemSource, Listing};
use crate::error::{Error, Result};
use crate::expression::class_names;
use crate::image::square_resize;

/// Decoded images of one or more listings, all `side × side` RGB.
#[derive(Debug, Clone, Default)]
pub struct LabelledImages {
    /// Image side.
    pub side: usize,
    /// RGB bytes, `side²·3` per image.
    pub pixels: Vec<u8>,
    /// Class index into `classes`.
    pub labels: Vec<usize>,
    /// Whether each image is synthetic (from a `synfer synth` folder).
    pub synthetic: Vec<bool>,
    /// Item names.
    pub ids: Vec<String>,
    /// Class names (7 or 8).
    pub classes: Vec<String>,
    /// Items left out, by reason (other split, contempt in a 7-class set, non-expressions).
    pub skipped: BTreeMap<String, usize>,
}

/// Which split to take from layouts that have one (`None`: all of them).
pub type SplitChoice<'a> = Option<&'a str>;

impl LabelledImages {
    /// Decodes the items of `listings` in `split` (items without a split always count) at
    /// `side × side` (centre square crop, then a triangle-filter resize).
    pub fn decode(
        listings: &[Listing],
        split: SplitChoice,
        side: usize,
        contempt: bool,
    ) -> Result<Self> {
        let classes = class_names(contempt);
        let mut out = LabelledImages {
            side,
            classes,
            ..Default::default()
        };
        let mut chosen: Vec<(&Item, bool)> = Vec::new();
        for l in listings {
            for (k, v) in &l.skipped {
                *out.skipped.entry(k.clone()).or_default() += v;
            }
            for item in &l.items {
                if let (Some(want), Some(have)) = (split, item.split.as_deref())
                    && want != have
                {
                    *out.skipped.entry(format!("split {have}")).or_default() += 1;
                    continue;
                }
                if item.label >= out.classes.len() {
                    *out.skipped.entry("contempt".into()).or_default() += 1;
                    continue;
                }
                chosen.push((item, l.synthetic));
            }
        }
        let per = side * side * 3;
        out.pixels = vec![0u8; chosen.len() * per];
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .clamp(1, 8);
        let chunk = chosen.len().div_ceil(threads).max(1);
        let results: Vec<Result<()>> = std::thread::scope(|s| {
            let handles: Vec<_> = out
                .pixels
                .chunks_mut(chunk * per)
                .zip(chosen.chunks(chunk))
                .map(|(dst, items)| {
                    s.spawn(move || {
                        for ((item, _), d) in items.iter().zip(dst.chunks_exact_mut(per)) {
                            d.copy_from_slice(&decode_item(item, side)?);
                        }
                        Ok(())
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(Error::Device("decoder thread panicked".into())))
                })
                .collect()
        });
        results.into_iter().collect::<Result<Vec<()>>>()?;
        for (item, synthetic) in chosen {
            out.labels.push(item.label);
            out.synthetic.push(synthetic);
            out.ids.push(item.id.clone());
        }
        Ok(out)
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The RGB bytes of image `i`.
    pub fn image(&self, i: usize) -> &[u8] {
        let per = self.side * self.side * 3;
        &self.pixels[i * per..(i + 1) * per]
    }

    /// Images per class.
    pub fn class_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.classes.len()];
        for &l in &self.labels {
            counts[l] += 1;
        }
        counts
    }
}

/// Decodes one item to `side × side` RGB bytes.
pub(crate) fn decode_item(item: &Item, side: usize) -> Result<Vec<u8>> {
    let rgb = match &item.source {
        ItemSource::Grey { side: s, pixels } => {
            let grey = image::GrayImage::from_raw(*s as u32, *s as u32, pixels.clone())
                .ok_or_else(|| Error::dataset(&item.id, "pixels", "wrong pixel count"))?;
            image::DynamicImage::ImageLuma8(grey).to_rgb8()
        }
        ItemSource::File { path, crop } => {
            let img = image::open(path)
                .map_err(|e| Error::Image {
                    file: path.display().to_string(),
                    message: e.to_string(),
                })?
                .to_rgb8();
            match crop {
                Some([x, y, w, h]) => {
                    let (iw, ih) = img.dimensions();
                    let x = (*x).min(iw.saturating_sub(1));
                    let y = (*y).min(ih.saturating_sub(1));
                    let w = (*w).min(iw - x).max(1);
                    let h = (*h).min(ih - y).max(1);
                    image::imageops::crop_imm(&img, x, y, w, h).to_image()
                }
                None => img,
            }
        }
    };
    Ok(square_resize(&rgb, side))
}
