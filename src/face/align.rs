//! Similarity-aligned face crops: the image rotated, scaled and shifted so that the two eye
//! centres land on fixed points of a square output (eyes level), as face datasets are usually
//! aligned. The eye centres come from FaceMesh landmarks (the midpoints of the eye corners
//! 33/133 and 362/263, as in [`super::au_estimator`]).
//!
//! Output pixel `(u, v)` (centres at `+0.5`) samples the source at `A·(u + 0.5, v + 0.5) + t − 0.5`
//! bilinearly, where the similarity `A, t` maps the target eye points onto the source ones;
//! samples outside the image take the nearest edge pixel (no black borders in training data).

use super::au_estimator::{
    LEFT_EYE_INNER, LEFT_EYE_OUTER, Landmarks, RIGHT_EYE_INNER, RIGHT_EYE_OUTER,
};
use crate::error::{Error, Result};
use crate::image::RgbView;

/// Where the eyes go in an aligned crop, as fractions of its side.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Alignment {
    /// Output side in pixels.
    pub size: usize,
    /// Height of the eye line, from the top.
    pub eye_y: f32,
    /// Distance between the eye centres.
    pub eye_distance: f32,
}

impl Alignment {
    /// Eyes at 40 % of the height, 36 % of the side apart: the whole face from brows to chin
    /// with a margin, close to the framing of the DCGAN faces.
    pub fn new(size: usize) -> Self {
        Alignment {
            size,
            eye_y: 0.40,
            eye_distance: 0.36,
        }
    }

    /// Target eye centres `(subject's right eye, left eye)` in output pixels (the subject's
    /// right eye is on the image's left).
    pub fn targets(&self) -> ([f32; 2], [f32; 2]) {
        let s = self.size as f32;
        let y = self.eye_y * s;
        let half = self.eye_distance * s / 2.0;
        ([s / 2.0 - half, y], [s / 2.0 + half, y])
    }
}

/// Eye centres `(subject's right, left)` in image pixels from 468 FaceMesh landmarks.
pub fn eye_centres(landmarks: &[[f32; 3]]) -> Result<([f32; 2], [f32; 2])> {
    let mesh: &Landmarks = landmarks.try_into().map_err(|_| {
        Error::request(
            "landmarks",
            format!(
                "{} points, expected {}",
                landmarks.len(),
                super::mesh::LANDMARKS
            ),
        )
    })?;
    Ok(mesh_eye_centres(mesh))
}

/// [`eye_centres`] of a full mesh (nothing to check).
pub fn mesh_eye_centres(landmarks: &Landmarks) -> ([f32; 2], [f32; 2]) {
    let mid = |a: usize, b: usize| {
        [
            (landmarks[a][0] + landmarks[b][0]) / 2.0,
            (landmarks[a][1] + landmarks[b][1]) / 2.0,
        ]
    };
    (
        mid(RIGHT_EYE_OUTER, RIGHT_EYE_INNER),
        mid(LEFT_EYE_INNER, LEFT_EYE_OUTER),
    )
}

/// Distance between two eye centres.
pub fn eye_distance((right, left): ([f32; 2], [f32; 2])) -> f32 {
    ((left[0] - right[0]).powi(2) + (left[1] - right[1]).powi(2)).sqrt()
}

/// A similarity `p ↦ (a·x − b·y + tx, b·x + a·y + ty)` (rotation, uniform scale, shift).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Similarity {
    /// `scale · cos θ`.
    pub a: f32,
    /// `scale · sin θ`.
    pub b: f32,
    /// Shift, x.
    pub tx: f32,
    /// Shift, y.
    pub ty: f32,
}

impl Similarity {
    /// The similarity taking `from.0 ↦ to.0` and `from.1 ↦ to.1`; `None` when `from`'s points
    /// coincide (or `to`'s do).
    pub fn between(from: ([f32; 2], [f32; 2]), to: ([f32; 2], [f32; 2])) -> Option<Self> {
        // A complex multiply by (to.1 − to.0) / (from.1 − from.0), anchored at from.0.
        let (sx, sy) = (to.1[0] - to.0[0], to.1[1] - to.0[1]);
        let (dx, dy) = (from.1[0] - from.0[0], from.1[1] - from.0[1]);
        let norm = dx * dx + dy * dy;
        let (a, b) = ((sx * dx + sy * dy) / norm, (sy * dx - sx * dy) / norm);
        if !(a.is_finite() && b.is_finite()) || a * a + b * b < 1e-12 {
            return None;
        }
        Some(Similarity {
            a,
            b,
            tx: to.0[0] - (a * from.0[0] - b * from.0[1]),
            ty: to.0[1] - (b * from.0[0] + a * from.0[1]),
        })
    }

    /// The image of `p`.
    pub fn apply(&self, p: [f32; 2]) -> [f32; 2] {
        [
            self.a * p[0] - self.b * p[1] + self.tx,
            self.b * p[0] + self.a * p[1] + self.ty,
        ]
    }
}

/// The similarity taking crop coordinates to image coordinates for a face whose eye centres
/// in the image are `eyes` ([`eye_centres`]).
pub fn crop_to_image(eyes: ([f32; 2], [f32; 2]), alignment: Alignment) -> Result<Similarity> {
    if alignment.size == 0 {
        return Err(Error::request(
            "size",
            "an aligned crop needs a side of at least 1",
        ));
    }
    Similarity::between(alignment.targets(), eyes)
        .ok_or_else(|| Error::request("landmarks", "the eye centres coincide: no alignment"))
}

/// The aligned crop of `image` (RGB bytes, `size × size × 3`) for a face with these landmarks.
/// Fails on a landmark count other than 468 or coincident eyes.
pub fn aligned_crop(
    image: RgbView,
    landmarks: &[[f32; 3]],
    alignment: Alignment,
) -> Result<Vec<u8>> {
    let to_image = crop_to_image(eye_centres(landmarks)?, alignment)?;
    resample(image, to_image, alignment.size)
}

/// `size × size` RGB pixels sampled bilinearly from `image` through `to_image` (crop → image
/// coordinates), nearest edge pixel outside.
pub fn resample(image: RgbView, to_image: Similarity, size: usize) -> Result<Vec<u8>> {
    image.validate()?;
    let mut out: Vec<f32> = Vec::with_capacity(size * size * 3);
    for v in 0..size {
        for u in 0..size {
            let p = to_image.apply([u as f32 + 0.5, v as f32 + 0.5]);
            image.push_clamped(p[0] - 0.5, p[1] - 0.5, &mut out);
        }
    }
    Ok(out
        .into_iter()
        .map(|v| v.round().clamp(0.0, 255.0) as u8)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Landmarks with only the four eye corners set.
    fn eyes(right: [f32; 2], left: [f32; 2]) -> Vec<[f32; 3]> {
        let mut l = vec![[0.0; 3]; crate::face::mesh::LANDMARKS];
        for (i, p) in [(33, right), (133, right), (362, left), (263, left)] {
            l[i] = [p[0], p[1], 0.0];
        }
        l
    }

    /// An image whose pixel `(x, y)` encodes its coordinates: R = x, G = y.
    fn ramp(w: usize, h: usize) -> Vec<u8> {
        (0..h)
            .flat_map(|y| (0..w).flat_map(move |x| [x as u8, y as u8, 0]))
            .collect()
    }

    #[test]
    fn eyes_land_on_their_targets() {
        let pixels = ramp(200, 160);
        let image = RgbView::new(200, 160, &pixels).unwrap();
        // Tilted eyes (≈ 17°), pixel centres at +0.5.
        let (r, l) = ([60.5, 80.5], [124.5, 100.5]);
        let al = Alignment::new(50);
        let out = aligned_crop(image, &eyes(r, l), al).unwrap();
        let (tr, tl) = al.targets();
        for (target, source) in [(tr, r), (tl, l)] {
            let (u, v) = (
                (target[0] - 0.5).round() as usize,
                (target[1] - 0.5).round() as usize,
            );
            let px = &out[(v * 50 + u) * 3..(v * 50 + u) * 3 + 2];
            // The ramp is linear, so bilinear sampling gives back the coordinates (±1 for the
            // target's sub-pixel offset times the scale, and rounding).
            let scale = ((l[0] - r[0]).hypot(l[1] - r[1])) / (tl[0] - tr[0]);
            let tol = scale + 1.0;
            assert!(
                (f32::from(px[0]) - (source[0] - 0.5)).abs() <= tol,
                "{px:?} vs {source:?}"
            );
            assert!(
                (f32::from(px[1]) - (source[1] - 0.5)).abs() <= tol,
                "{px:?} vs {source:?}"
            );
        }
    }

    #[test]
    fn level_eyes_at_target_scale_copy_pixels() {
        let pixels = ramp(64, 64);
        let image = RgbView::new(64, 64, &pixels).unwrap();
        let al = Alignment::new(64);
        let (tr, tl) = al.targets();
        // Source eyes exactly where the targets are: the crop is the image itself.
        assert_eq!(aligned_crop(image, &eyes(tr, tl), al).unwrap(), pixels);
    }

    #[test]
    fn bad_inputs_are_errors() {
        let pixels = ramp(8, 8);
        let image = RgbView::new(8, 8, &pixels).unwrap();
        let al = Alignment::new(8);
        assert!(aligned_crop(image, &eyes([3.0, 3.0], [3.0, 3.0]), al).is_err());
        assert!(aligned_crop(image, &[[0.0; 3]; 5], al).is_err());
        assert!(aligned_crop(image, &eyes([1.0, 3.0], [6.0, 3.0]), Alignment::new(0)).is_err());
    }
}
