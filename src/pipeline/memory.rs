//! The largest single buffers a generation allocates, so that a request too large for the
//! device's per-buffer limit (WebGPU's default is 128 MiB per storage binding; Vulkan drivers
//! allow a few GiB) fails before it starts, with an error naming the tensor, instead of an
//! allocation panic inside a kernel. Attention scores are chunked to
//! [`crate::unet::attention::ATTENTION_SCORE_BUDGET`] and the VAE
//! decodes in slices of [`DECODE_BUDGET`], so neither grows with the batch.

use serde::Serialize;

use crate::error::{Error, Result};
use crate::unet::attention::{ATTENTION_SCORE_BUDGET, query_rows};

/// Transformer feed-forward width as a multiple of the channels (GEGLU, SD 1.x/2.x: 2 × 4).
const FF_FACTOR: usize = 8;

/// Bytes the VAE decoder's largest activation may take per decoded slice of images (f32).
pub const DECODE_BUDGET: usize = 512 << 20;

/// What sets a model's largest buffers: the UNet's levels and the VAE's widest block.
#[derive(Debug, Clone, Serialize)]
pub struct BufferProfile {
    /// Channels of each UNet resolution level and its attention heads (0: no transformer).
    pub unet_levels: Vec<(usize, usize)>,
    /// The VAE's `block_out_channels` (encoder order: full resolution first).
    pub vae_channels: Vec<usize>,
    /// Pixels per latent cell.
    pub vae_factor: usize,
    /// Bytes per decoded slice ([`DECODE_BUDGET`] unless changed).
    pub decode_budget: usize,
}

/// One buffer: what it is and its size.
#[derive(Debug, Clone, PartialEq)]
pub struct Buffer {
    /// E.g. `UNet feed-forward [16, 4096, 2560]`.
    pub what: String,
    /// Bytes.
    pub bytes: u64,
}

impl BufferProfile {
    /// The largest buffer of a generation of `images` at `height × width` pixels with
    /// `float_bytes` per element; under classifier-free guidance (`cfg`) the UNet sees twice the
    /// rows.
    pub fn largest(
        &self,
        images: usize,
        cfg: bool,
        height: usize,
        width: usize,
        float_bytes: usize,
    ) -> Buffer {
        let n = (images * if cfg { 2 } else { 1 }) as u64;
        let f = self.vae_factor.max(1);
        let fb = float_bytes as u64;
        let mut best = Buffer {
            what: "nothing".into(),
            bytes: 0,
        };
        let mut consider = |what: String, bytes: u64| {
            if bytes > best.bytes {
                best = Buffer { what, bytes };
            }
        };
        let levels = self.unet_levels.len();
        for (i, &(c, heads)) in self.unet_levels.iter().enumerate() {
            let (h, w) = ((height / f) >> i, (width / f) >> i);
            let (h, w) = (h.max(1) as u64, w.max(1) as u64);
            // An up block's first resnet sees its input concatenated with the skip connection.
            let wider = self.unet_levels[(i + 1).min(levels - 1)].0;
            let cat = (c + wider) as u64;
            consider(
                format!("UNet skip concatenation [{n}, {cat}, {h}, {w}]"),
                n * cat * h * w * fb,
            );
            if heads > 0 {
                let (tokens, ff) = (h * w, (FF_FACTOR * c) as u64);
                consider(
                    format!("UNet feed-forward [{n}, {tokens}, {ff}]"),
                    n * tokens * ff * fb,
                );
                // Query rows are chunked as `multi_head` chunks them (budget in f32 elements).
                let bh = n as usize * heads;
                let rows = query_rows(bh, tokens as usize, ATTENTION_SCORE_BUDGET) as u64;
                let scores = bh as u64 * rows.min(tokens) * tokens * fb;
                consider(
                    format!("attention scores [{bh}, ≤{tokens}, {tokens}]"),
                    scores,
                );
            }
        }
        let (per_image, c, fh, fw) = self.vae_widest_activation(height, width);
        let slice = (self.images_per_slice(per_image) as u64)
            .min(images as u64)
            .max(1);
        consider(
            format!("VAE decoder activation [{slice}, {c}, {fh}, {fw}]"),
            slice * per_image * fb,
        );
        best
    }

    /// The decoder's largest activation for one image: elements, channels, height, width. Up
    /// block `j` (from the latent side) works at `2^j` times the latent size and its first
    /// resnet reads the previous block's (possibly wider) output there.
    pub(crate) fn vae_widest_activation(
        &self,
        height: usize,
        width: usize,
    ) -> (u64, usize, usize, usize) {
        let up: Vec<usize> = self.vae_channels.iter().rev().copied().collect();
        let levels = up.len().max(1);
        let mut best = (0, 0, 0, 0);
        for (j, &c) in up.iter().enumerate() {
            let c = if j > 0 { c.max(up[j - 1]) } else { c };
            let shift = levels - 1 - j;
            let (h, w) = ((height >> shift).max(1), (width >> shift).max(1));
            let elems = (c * h * w) as u64;
            if elems > best.0 {
                best = (elems, c, h, w);
            }
        }
        best
    }

    /// Images the VAE decodes together: their largest activation stays within
    /// `decode_budget` bytes (at least one image).
    pub fn images_per_decode(&self, height: usize, width: usize) -> usize {
        self.images_per_slice(self.vae_widest_activation(height, width).0)
    }

    /// Images per slice when one image's largest activation has `per_image` f32 elements.
    fn images_per_slice(&self, per_image: u64) -> usize {
        (self.decode_budget as u64 / (per_image * 4).max(1)).max(1) as usize
    }

    /// Refuses a generation whose largest buffer exceeds `limit` bytes.
    pub fn check(
        &self,
        images: usize,
        cfg: bool,
        height: usize,
        width: usize,
        float_bytes: usize,
        limit: u64,
    ) -> Result<()> {
        let b = self.largest(images, cfg, height, width, float_bytes);
        if b.bytes <= limit {
            return Ok(());
        }
        let mib = |x: u64| x as f64 / (1u64 << 20) as f64;
        Err(Error::Device(format!(
            "{} needs a {:.0} MiB buffer for {images} images at {width}×{height}; this adapter \
             allows {:.0} MiB per buffer: fewer images per batch or a smaller size",
            b.what,
            mib(b.bytes),
            mib(limit)
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sd15() -> BufferProfile {
        BufferProfile {
            unet_levels: vec![(320, 8), (640, 8), (1280, 8), (1280, 0)],
            vae_channels: vec![128, 256, 512, 512],
            vae_factor: 8,
            decode_budget: DECODE_BUDGET,
        }
    }

    #[test]
    fn sd15_batch_8_at_512_is_the_level_0_feed_forward() {
        // 16 rows × 64² tokens × 2560 GEGLU features × 4 bytes, by hand.
        let b = sd15().largest(8, true, 512, 512, 4);
        assert_eq!(b.bytes, 16 * 4096 * 2560 * 4);
        assert!(
            b.what.contains("feed-forward [16, 4096, 2560]"),
            "{}",
            b.what
        );
        assert!(sd15().check(8, true, 512, 512, 4, 4 << 30).is_ok());
        let err = sd15()
            .check(8, true, 512, 512, 4, 128 << 20)
            .unwrap_err()
            .to_string();
        assert!(err.contains("640 MiB") && err.contains("128 MiB"), "{err}");
    }

    #[test]
    fn f16_halves_and_large_images_hit_the_vae() {
        let b = sd15().largest(8, true, 512, 512, 2);
        assert_eq!(b.bytes, 16 * 4096 * 2560 * 2);
        // At 1024² one image's widest decoder activation is the last up block's first resnet
        // input: 256 channels at 1024² (4 bytes each = 1 GiB), over the 512 MiB slice budget,
        // so one image per slice; the feed-forward is 8 × 128² × 2560 × 4 = 1.25 GiB.
        assert_eq!(sd15().images_per_decode(1024, 1024), 1);
        let b = sd15().largest(8, false, 1024, 1024, 4);
        assert_eq!(b.bytes, 8 * 128 * 128 * 2560 * 4);
        let b = sd15().largest(1, false, 2048, 2048, 4);
        assert_eq!(b.bytes, 256 * 2048 * 2048 * 4);
        assert!(
            b.what
                .starts_with("VAE decoder activation [1, 256, 2048, 2048]"),
            "{}",
            b.what
        );
    }

    #[test]
    fn vae_slices_follow_the_budget() {
        // 256 × 512² × 4 bytes = 256 MiB per image at 512²: two per 512 MiB slice.
        assert_eq!(
            sd15().vae_widest_activation(512, 512),
            (256 * 512 * 512, 256, 512, 512)
        );
        assert_eq!(sd15().images_per_decode(512, 512), 2);
        let tiny = BufferProfile {
            vae_channels: vec![32, 64],
            vae_factor: 2,
            ..sd15()
        };
        // 64 × 64² × 4 bytes = 1 MiB per image.
        assert_eq!(tiny.images_per_decode(64, 64), 512);
    }
}
