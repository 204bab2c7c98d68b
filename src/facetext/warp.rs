//! Landmark-driven expression warps: FaceMesh points move the way an action unit moves the
//! face (brows up/down, lids up, cheeks up, nose wrinkle, lip corners up/down/out, chin up, jaw
//! drop), and the image follows by a smooth backward warp. A warped image is labelled by
//! analysing it again, never by the warp that was asked for.
//!
//! The displacement field is a normalised Gaussian kernel regression of the control points'
//! displacements, with the face contour and the nose as fixed anchors and an implicit zero
//! far from every point: `D(x) = Σ wᵢ dᵢ / (Σ wᵢ + w₀)`, `wᵢ = exp(−|x − qᵢ|² / 2σ²)`, evaluated
//! at the *moved* points `qᵢ = pᵢ + dᵢ` so that output pixel `x` samples the source at
//! `x − D(x)`. When the jaw drops, the opening between the inner lip contours is painted as a
//! dark mouth cavity with the upper teeth showing (a stretched lip is not an open mouth).

use crate::face::align::{eye_distance, mesh_eye_centres};
use crate::face::au_estimator::Landmarks;
use crate::face::mesh::LANDMARKS;
use crate::image::RgbView;

const RIGHT_BROW: [usize; 10] = [70, 63, 105, 66, 107, 46, 53, 52, 65, 55];
const LEFT_BROW: [usize; 10] = [300, 293, 334, 296, 336, 276, 283, 282, 295, 285];
/// Brow points from outer (0) to inner (1) end, per index above.
const BROW_T: [f32; 10] = [0.0, 0.25, 0.5, 0.75, 1.0, 0.0, 0.25, 0.5, 0.75, 1.0];
const RIGHT_UPPER_LID: [usize; 7] = [246, 161, 160, 159, 158, 157, 173];
const LEFT_UPPER_LID: [usize; 7] = [466, 388, 387, 386, 385, 384, 398];
const RIGHT_LOWER_LID: [usize; 7] = [7, 163, 144, 145, 153, 154, 155];
const LEFT_LOWER_LID: [usize; 7] = [249, 390, 373, 374, 380, 381, 382];
const RIGHT_CHEEK: [usize; 4] = [50, 101, 118, 117];
const LEFT_CHEEK: [usize; 4] = [280, 330, 347, 346];
const NOSE_SIDES: [usize; 6] = [129, 358, 98, 327, 48, 278];
const UPPER_LIP_OUTER: [usize; 9] = [185, 40, 39, 37, 0, 267, 269, 270, 409];
const UPPER_LIP_INNER: [usize; 11] = [78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308];
const LOWER_LIP_INNER: [usize; 9] = [95, 88, 178, 87, 14, 317, 402, 318, 324];
const LOWER_LIP_OUTER: [usize; 9] = [146, 91, 181, 84, 17, 314, 405, 321, 375];
const MOUTH_CORNERS: [usize; 2] = [61, 291];
const CHIN: [usize; 9] = [152, 148, 176, 377, 400, 175, 199, 200, 18];
const JAW_SIDES: [usize; 6] = [149, 150, 136, 378, 379, 365];
/// Points that never move (the upper face contour and the nose).
const ANCHORS: [usize; 22] = [
    10, 338, 297, 332, 109, 67, 103, 54, 21, 251, 284, 162, 127, 234, 93, 356, 454, 323, 1, 4, 6,
    197,
];

/// A warp: action units with intensities in `0..=1` (1 = a strong expression).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WarpProgram {
    /// `(AU code, intensity)`.
    pub units: Vec<(&'static str, f32)>,
}

impl WarpProgram {
    /// A short name for provenance, e.g. `AU1:0.80+AU26:0.50`.
    pub fn describe(&self) -> String {
        self.units
            .iter()
            .map(|(c, v)| format!("{c}:{v:.2}"))
            .collect::<Vec<_>>()
            .join("+")
    }
}

/// Codes a warp can move.
pub const WARPABLE: [&str; 12] = [
    "AU1", "AU2", "AU4", "AU5", "AU6", "AU9", "AU12", "AU15", "AU17", "AU20", "AU25", "AU26",
];

/// Control-point displacements (image pixels) for `program` on a face with landmarks `p`.
/// Returns `(index, dx, dy)` for every moved landmark.
pub fn displacements(p: &Landmarks, program: &WarpProgram) -> Vec<(usize, f32, f32)> {
    let (eye_r, eye_l) = mesh_eye_centres(p);
    // Face frame: unit vectors along the eye line (to the subject's left) and down the face.
    let ex = [eye_l[0] - eye_r[0], eye_l[1] - eye_r[1]];
    let s = eye_distance((eye_r, eye_l)).max(1.0);
    let right = [ex[0] / s, ex[1] / s];
    let down = [-right[1], right[0]];
    let mut d = vec![[0.0f32; 2]; LANDMARKS];
    let mut moved = vec![false; LANDMARKS];
    let mut add = |i: usize, along: f32, vertical: f32| {
        d[i][0] += (right[0] * along + down[0] * vertical) * s;
        d[i][1] += (right[1] * along + down[1] * vertical) * s;
        moved[i] = true;
    };
    // The subject's right side is the image's left: "outward" is −right there.
    let outward = |i: usize| {
        if p[i][0] < mid(eye_r, eye_l)[0] {
            -1.0
        } else {
            1.0
        }
    };
    for &(code, a) in &program.units {
        match code {
            "AU1" => brows(&mut add, a, |t| -0.16 * t, |_| 0.0),
            "AU2" => brows(&mut add, a, |t| -0.16 * (1.0 - t), |_| 0.0),
            "AU4" => brows(&mut add, a, |t| 0.07 + 0.05 * t, |t| 0.08 * t),
            "AU5" => {
                for (k, &i) in RIGHT_UPPER_LID.iter().chain(&LEFT_UPPER_LID).enumerate() {
                    let bell = bell(k % 7, 7);
                    add(i, 0.0, -0.07 * a * bell);
                }
                brows(&mut add, a, |_| -0.04, |_| 0.0);
            }
            "AU6" => {
                for &i in RIGHT_LOWER_LID.iter().chain(&LEFT_LOWER_LID) {
                    add(i, 0.0, -0.035 * a);
                }
                for &i in RIGHT_CHEEK.iter().chain(&LEFT_CHEEK) {
                    add(i, 0.0, -0.09 * a);
                }
            }
            "AU9" => {
                for &i in &NOSE_SIDES {
                    add(i, 0.0, -0.06 * a);
                }
                for &i in &UPPER_LIP_OUTER {
                    add(i, 0.0, -0.06 * a);
                }
                for &i in &UPPER_LIP_INNER {
                    add(i, 0.0, -0.04 * a);
                }
                brows(&mut add, a, |t| 0.06 * t, |t| 0.04 * t);
            }
            "AU12" => {
                for &i in &MOUTH_CORNERS {
                    add(i, 0.12 * a * outward(i), -0.16 * a);
                }
                for &i in UPPER_LIP_INNER.iter().chain(&LOWER_LIP_INNER) {
                    let o = outward(i);
                    let side = (p[i][0] - p[13][0]).abs() / s;
                    add(i, 0.06 * a * o * side * 2.0, -0.07 * a * side * 2.0);
                }
                for &i in RIGHT_CHEEK.iter().chain(&LEFT_CHEEK) {
                    add(i, 0.0, -0.04 * a);
                }
            }
            "AU15" => {
                for &i in &MOUTH_CORNERS {
                    add(i, 0.0, 0.13 * a);
                }
                for &i in UPPER_LIP_INNER.iter().chain(&LOWER_LIP_INNER) {
                    let side = (p[i][0] - p[13][0]).abs() / s;
                    add(i, 0.0, 0.08 * a * side * 2.0);
                }
            }
            "AU17" => {
                for &i in &CHIN {
                    add(i, 0.0, -0.07 * a);
                }
                for &i in LOWER_LIP_OUTER.iter().chain(&LOWER_LIP_INNER) {
                    add(i, 0.0, -0.05 * a);
                }
            }
            "AU20" => {
                for &i in &MOUTH_CORNERS {
                    add(i, 0.16 * a * outward(i), 0.03 * a);
                }
                for &i in UPPER_LIP_INNER.iter().chain(&LOWER_LIP_INNER) {
                    let side = (p[i][0] - p[13][0]) / s;
                    add(i, 0.12 * a * side * 2.0, 0.0);
                }
            }
            "AU25" => {
                for &i in LOWER_LIP_INNER.iter().chain(&LOWER_LIP_OUTER) {
                    add(i, 0.0, 0.08 * a);
                }
            }
            "AU26" => {
                for &i in LOWER_LIP_INNER.iter().chain(&LOWER_LIP_OUTER) {
                    add(i, 0.0, 0.32 * a);
                }
                for &i in &CHIN {
                    add(i, 0.0, 0.30 * a);
                }
                for &i in &JAW_SIDES {
                    add(i, 0.0, 0.18 * a);
                }
                for &i in &MOUTH_CORNERS {
                    add(i, 0.0, 0.10 * a);
                }
            }
            _ => {}
        }
    }
    (0..LANDMARKS)
        .filter(|&i| moved[i])
        .map(|i| (i, d[i][0], d[i][1]))
        .collect()
}

/// Moves both brows: `vertical(t)` and inward `inward(t)` (face units) at position `t` from
/// the outer (0) to the inner (1) end, scaled by `a`.
fn brows(
    add: &mut impl FnMut(usize, f32, f32),
    a: f32,
    vertical: impl Fn(f32) -> f32,
    inward: impl Fn(f32) -> f32,
) {
    for (k, (&r, &l)) in RIGHT_BROW.iter().zip(&LEFT_BROW).enumerate() {
        let t = BROW_T[k];
        // Inward is +right for the subject's right brow and −right for the left one.
        add(r, inward(t) * a, vertical(t) * a);
        add(l, -inward(t) * a, vertical(t) * a);
    }
}

fn bell(k: usize, n: usize) -> f32 {
    let x = (k as f32 + 0.5) / n as f32;
    (std::f32::consts::PI * x).sin()
}

fn mid(a: [f32; 2], b: [f32; 2]) -> [f32; 2] {
    [(a[0] + b[0]) / 2.0, (a[1] + b[1]) / 2.0]
}

fn mouth_gap(p: &Landmarks) -> f32 {
    p[14][1] - p[13][1]
}

/// Applies `program` to `image` (`size`² RGB) with landmarks `p`: returns the warped image
/// and the moved landmarks.
pub fn warp(image: RgbView, p: &Landmarks, program: &WarpProgram) -> (Vec<u8>, Landmarks) {
    let moves = displacements(p, program);
    let (w, h) = (image.width, image.height);
    let eye_dist = eye_distance(mesh_eye_centres(p)).max(1.0);
    let sigma = 0.22 * eye_dist;
    let inv2s2 = 1.0 / (2.0 * sigma * sigma);
    let mut q = *p;
    for &(i, dx, dy) in &moves {
        q[i][0] += dx;
        q[i][1] += dy;
    }
    // Control points: moved ones with their displacement, anchors (and every other landmark
    // within the face) with zero.
    let moved: std::collections::BTreeMap<usize, (f32, f32)> =
        moves.iter().map(|&(i, dx, dy)| (i, (dx, dy))).collect();
    let mut controls: Vec<([f32; 2], [f32; 2])> = moves
        .iter()
        .map(|&(i, dx, dy)| ([q[i][0], q[i][1]], [dx, dy]))
        .collect();
    let features = RIGHT_BROW
        .iter()
        .chain(&LEFT_BROW)
        .chain(&RIGHT_UPPER_LID)
        .chain(&LEFT_UPPER_LID)
        .chain(&RIGHT_LOWER_LID)
        .chain(&LEFT_LOWER_LID)
        .chain(&NOSE_SIDES)
        .chain(&UPPER_LIP_OUTER)
        .chain(&UPPER_LIP_INNER)
        .chain(&LOWER_LIP_INNER)
        .chain(&LOWER_LIP_OUTER)
        .chain(&MOUTH_CORNERS)
        .chain(&CHIN)
        .chain(&[33, 133, 362, 263]);
    // Unmoved features and anchors hold their place, so a move stays local to its feature.
    for &i in ANCHORS.iter().chain(features) {
        if !moved.contains_key(&i) {
            controls.push(([p[i][0], p[i][1]], [0.0, 0.0]));
        }
    }
    let w0 = (-9.0f32 / 2.0).exp(); // the weight of a point 3σ away: zero displacement far out
    let mut out = vec![0u8; w * h * 3];
    let mut src = Vec::with_capacity(3);
    for y in 0..h {
        for x in 0..w {
            let (fx, fy) = (x as f32 + 0.5, y as f32 + 0.5);
            let (mut sx, mut sy, mut sw) = (0.0f32, 0.0f32, w0);
            for (c, dv) in &controls {
                let r2 = (fx - c[0]).powi(2) + (fy - c[1]).powi(2);
                let wt = (-r2 * inv2s2).exp();
                sx += wt * dv[0];
                sy += wt * dv[1];
                sw += wt;
            }
            src.clear();
            image.push_clamped(fx - sx / sw - 0.5, fy - sy / sw - 0.5, &mut src);
            let o = (y * w + x) * 3;
            for k in 0..3 {
                out[o + k] = src[k].round().clamp(0.0, 255.0) as u8;
            }
        }
    }
    if mouth_gap(&q) > mouth_gap(p) + 0.03 * eye_dist {
        paint_mouth(&mut out, w, h, &q);
    }
    (out, q)
}

/// Share of the opening's height (from the upper lip) that the upper teeth fill.
const TEETH_DEPTH: f32 = 0.35;
/// Share of the opening's half-width (from the centre) where teeth show.
const TEETH_WIDTH: f32 = 0.75;
/// Colour of the teeth (sRGB) in full light; `paint_mouth` dims it to the light around the mouth.
const TOOTH: [f32; 3] = [222.0, 214.0, 198.0];

/// Fills the polygon between the inner lip contours with a dark, vertically shaded cavity,
/// with the upper teeth as an off-white band under the upper lip.
fn paint_mouth(out: &mut [u8], w: usize, h: usize, q: &Landmarks) {
    let poly: Vec<[f32; 2]> = UPPER_LIP_INNER
        .iter()
        .chain(LOWER_LIP_INNER.iter().rev())
        .map(|&i| [q[i][0], q[i][1]])
        .collect();
    let (mut x0, mut y0, mut x1, mut y1) = (f32::MAX, f32::MAX, f32::MIN, f32::MIN);
    for p in &poly {
        x0 = x0.min(p[0]);
        y0 = y0.min(p[1]);
        x1 = x1.max(p[0]);
        y1 = y1.max(p[1]);
    }
    let span = (y1 - y0).max(1.0);
    // Teeth take the scene's light: their brightness follows the skin around the mouth.
    let mut lum = (0.0f32, 0.0f32);
    for y in (y0 - span).max(0.0) as usize..(y1 + span).min(h as f32) as usize {
        for x in x0.max(0.0) as usize..x1.min(w as f32) as usize {
            if !inside(&poly, x as f32 + 0.5, y as f32 + 0.5) {
                let o = (y * w + x) * 3;
                lum.0 += 0.299 * f32::from(out[o])
                    + 0.587 * f32::from(out[o + 1])
                    + 0.114 * f32::from(out[o + 2]);
                lum.1 += 1.0;
            }
        }
    }
    let light = (1.5 * lum.0 / lum.1.max(1.0) / TOOTH[1]).clamp(0.35, 1.0);
    // 4×4 supersampled coverage gives soft edges; the cavity darkens the warped pixels
    // (keeping their texture) towards a red-brown, darkest in the middle.
    for y in (y0.floor().max(0.0) as usize)..(y1.ceil().min(h as f32) as usize) {
        for x in (x0.floor().max(0.0) as usize)..(x1.ceil().min(w as f32) as usize) {
            let mut cover = 0.0f32;
            for sy in 0..4 {
                for sx in 0..4 {
                    let fx = x as f32 + (sx as f32 + 0.5) / 4.0;
                    let fy = y as f32 + (sy as f32 + 0.5) / 4.0;
                    if inside(&poly, fx, fy) {
                        cover += 1.0 / 16.0;
                    }
                }
            }
            if cover == 0.0 {
                continue;
            }
            let t = ((y as f32 + 0.5 - y0) / span).clamp(0.0, 1.0);
            // 0 at the mouth's centre line, 1 at the corners.
            let across = ((x as f32 + 0.5 - (x0 + x1) / 2.0) / ((x1 - x0) / 2.0).max(1.0)).abs();
            let o = (y * w + x) * 3;
            // The teeth's lower edge curves up towards the corners (an arch, not a bar).
            let edge = TEETH_DEPTH * (1.0 - (across / TEETH_WIDTH).powi(2)).max(0.0).sqrt();
            if t < edge {
                // Upper teeth under the upper lip, darker towards the corners and the gap.
                let shade = light * (1.0 - 0.45 * across) * (1.0 - 0.3 * t / edge);
                let blend = 0.8 * cover;
                for k in 0..3 {
                    let v = f32::from(out[o + k]);
                    let tooth = TOOTH[k] * shade;
                    out[o + k] = (v + (tooth - v) * blend).round().clamp(0.0, 255.0) as u8;
                }
                continue;
            }
            let depth = 0.55 + 0.3 * (std::f32::consts::PI * t).sin();
            let tint = [60.0f32, 22.0, 24.0];
            for k in 0..3 {
                let v = f32::from(out[o + k]);
                let dark = v * (1.0 - depth) * 0.5 + tint[k] * depth;
                out[o + k] = (v + (dark - v) * cover).round().clamp(0.0, 255.0) as u8;
            }
        }
    }
}

fn inside(poly: &[[f32; 2]], x: f32, y: f32) -> bool {
    let mut c = false;
    let n = poly.len();
    for i in 0..n {
        let (a, b) = (poly[i], poly[(i + n - 1) % n]);
        if (a[1] > y) != (b[1] > y) && x < (b[0] - a[0]) * (y - a[1]) / (b[1] - a[1]) + a[0] {
            c = !c;
        }
    }
    c
}
