//! Geometric action-unit estimator: FineFace intensities (0–5 for AU1, AU2, AU4, AU5, AU6, AU9,
//! AU12, AU15, AU17, AU20, AU25, AU26) from the 468 MediaPipe FaceMesh landmarks of
//! [`mesh::FaceMesh`](super::mesh::FaceMesh), on host `f32`.
//!
//! # Head frame (normalisation)
//!
//! Every landmark `p` is mapped to `q = R (p − o) / iod`, where
//!
//! - `o` is the midpoint of the two eye centres, each eye centre being the midpoint of its
//!   corners (subject's right eye: outer 33, inner 133; left eye: inner 362, outer 263);
//! - `iod` is the 3-D distance between the two eye centres (inter-ocular distance), so every
//!   feature is in units of `iod`;
//! - `R` rotates into a head frame: `x̂` along the eye axis (right eye centre → left eye
//!   centre), `ŷ` the component orthogonal to `x̂` of the midline vector from 168 (between the
//!   eyes, top of the nose bridge) to 2 (base of the nose), pointing down the face, and
//!   `ẑ = x̂ × ŷ`.
//!
//! The frame is built from 3-D points, so roll is removed exactly, and yaw and pitch are
//! *corrected* (not merely attenuated) to the extent that FaceMesh's relative depth `z` is right:
//! the face is rotated back to frontal before any feature is measured. All features use the
//! frame's `x` (towards the subject's left) and `y` (down the face); heights above the eye line
//! are `−y`. Only eye corners, 168 and 2 define the frame, points no FineFace unit moves much.
//! The whole pipeline is invariant under any rotation, uniform scale and translation of the mesh.
//!
//! # Features (one scalar per unit, in `iod`, larger = more of the unit)
//!
//! Notation: `h(i) = −y(i)` (height above the eye line), `mean` over the listed indices,
//! right-side indices first.
//!
//! | AU | feature |
//! |----|---------|
//! | AU1 inner brow raiser | `mean h(107, 55, 336, 285)`: inner brow height |
//! | AU2 outer brow raiser | `mean h(70, 46, 300, 276)`: outer brow height |
//! | AU4 brow lowerer | `−mean h(107, 55, 105, 52, 336, 285, 334, 282) − 0.5 · (x(285) − x(55))`: brows lowered and inner ends drawn together |
//! | AU5 upper lid raiser | `mean h(160, 159, 158, 385, 386, 387)`: upper-lid height |
//! | AU6 cheek raiser | `mean h(145, 144, 153, 374, 373, 380) + 0.5 · mean h(50, 280)`: lower lid and cheeks raised |
//! | AU9 nose wrinkler | `mean h(64, 98, 294, 327)`: nose wings raised towards the eyes |
//! | AU12 lip corner puller | `(y(0) − mean y(61, 291)) + 0.25 · (x(291) − x(61))`: lip corners raised (relative to the upper-lip midpoint) and pulled apart |
//! | AU15 lip corner depressor | `mean y(61, 291) − y(0)`: lip corners lowered (relative to the upper-lip midpoint) |
//! | AU17 chin raiser | `−(mean y(152, 199) − y(17))`: chin-to-lower-lip distance shrinking |
//! | AU20 lip stretcher | `x(291) − x(61)`: mouth width |
//! | AU25 lips part | `mean(y(14) − y(13), y(87) − y(82), y(317) − y(312))`: inner lip gap |
//! | AU26 jaw drop | `y(17) − y(0)`: lower-lip midpoint (carried by the jaw) below the upper-lip midpoint |
//!
//! The mouth features are measured against the outer upper-lip midpoint (0), which sits on the
//! maxilla and so neither moves with the jaw nor depends on the length of the face: lip-corner
//! heights relative to it are close to the same across faces (FaceMesh of the 24 DCGAN faces:
//! 0.02–0.15 `iod`), where heights relative to the eye line vary with face proportions by more
//! than a full intensity scale (a long-chinned subject reads AU15 = AU26 = 5 when neutral).
//! Opening the jaw therefore does not read as a smile. AU26 measures the jaw through the lower
//! lip rather than the chin (152), whose height below the eyes mostly measures the chin's length.
//!
//! # Intensities
//!
//! `intensity = clamp(5 · (f − f₀) / full, 0, 5)` with `f₀` the [`NeutralBaseline`] feature and
//! `full` the deviation (in `iod`) read as intensity 5 ([`FULL_SCALE`]), except AU20, whose
//! deviation is `Δwidth − 4 · |Δ(AU15 feature)|` (the corners' height change relative to the
//! upper-lip midpoint) so that only a stretch *without* corner elevation or
//! depression counts (a smile widens the mouth too).
//!
//! # Neutral baseline
//!
//! [`NeutralBaseline::POPULATION`] holds the per-feature medians over the FaceMesh landmarks of
//! the 24 DCGAN faces (diverse identities, whole faces in frame) of
//! `tests/fixtures/face/pipeline_reference.safetensors` (`gan.landmarks`, made by
//! `tools/face/make_face_pipeline.js`); `tests/face_au_estimator.rs` checks the constants
//! against the fixture. (The LFW faces are unsuitable: their 25×25 crops cut off chin and brows,
//! and FaceMesh compresses the lower face to fit.) [`AuEstimator::calibrate`] replaces it with the median features of one
//! subject's neutral frames, which is what should be used whenever such frames exist.
//!
//! # Limits
//!
//! - The scales in [`FULL_SCALE`] are anatomical guesses (typical maximal displacements, e.g.
//!   ≈ 10 mm of inner-brow raise for a 60 mm `iod`), **not** fitted to FACS-coded data: no coded
//!   data set ships with synfer. Treat the output as a monotone geometric proxy, not a FACS coder.
//! - The population baseline comes from 24 GAN-drawn faces, a few of them smiling or with parted
//!   lips, so a slight smile of an uncalibrated face may read as 0 and a truly neutral face may
//!   show non-zero values: people differ in brow height, lip thickness and chin length by a good
//!   part of a full intensity scale (franck's neutral frames read AU26 ≈ 1, AU15 ≈ 2 and AU17 = 0
//!   uncalibrated). Per-subject calibration (`synfer analyze --neutral FILE`) is strongly
//!   preferred whenever a neutral picture of the person exists.
//! - Geometry only: units that mostly change texture (AU6's crow's feet, AU9's nose wrinkles,
//!   AU17's chin dimpling) are seen only through the landmark shifts FaceMesh reports, which are
//!   small and model-dependent. FaceMesh itself regularises towards typical shapes, so it
//!   under-reports extreme or asymmetric expressions.
//! - Bilateral units average both sides; one-sided actions read at about half intensity.
//! - Pose correction relies on FaceMesh's relative depth; beyond roughly ±30° yaw or pitch the
//!   hidden half of the mesh is hallucinated and estimates degrade.
//! - Coupled units are not disentangled beyond AU20's penalty: e.g. brow raising (AU1/AU2)
//!   lowers the AU4 feature (clamped at 0), a pure sideways stretch also moves AU12's widening
//!   term (about a fifth of the AU20 reading), a real jaw drop also pulls the lip corners
//!   down (AU15), and AU26 reads lips parted by the lips alone (AU25) as a small jaw drop.
//! - The tests check direction, separation, monotonicity and invariance with synthetic edits
//!   of real meshes; the absolute intensity calibration is unvalidated.

use super::mesh::LANDMARKS;
use crate::au::catalog::FINEFACE;
use crate::au::vector::AuVector;
use crate::error::{Error, Result};

/// FaceMesh landmarks `(x, y, z)` of one face.
pub type Landmarks = [[f32; 3]; LANDMARKS];

/// Number of estimated units (the FineFace set, in [`FINEFACE`] order).
pub const UNITS: usize = 12;

/// Deviation from neutral, in inter-ocular distances, read as intensity 5, per unit in
/// [`FINEFACE`] order (AU1, AU2, AU4, AU5, AU6, AU9, AU12, AU15, AU17, AU20, AU25, AU26).
pub const FULL_SCALE: [f32; UNITS] = [
    0.15, // AU1: inner brow raise ≈ 9 mm
    0.15, // AU2: outer brow raise
    0.10, // AU4: brow lowering + knitting
    0.06, // AU5: upper lid raise ≈ 3.5 mm
    0.08, // AU6: lower lid + cheek raise
    0.08, // AU9: nose wing raise
    0.20, // AU12: corner raise + widening
    0.10, // AU15: corner depression
    0.10, // AU17: chin-to-lower-lip shortening
    0.15, // AU20: lip stretch
    0.25, // AU25: inner lip gap
    0.30, // AU26: lower lip (jaw) drop ≈ 18 mm
];

// Landmark indices (MediaPipe FaceMesh canonical topology; "right" = the subject's right).
pub(crate) const RIGHT_EYE_OUTER: usize = 33;
pub(crate) const RIGHT_EYE_INNER: usize = 133;
pub(crate) const LEFT_EYE_INNER: usize = 362;
pub(crate) const LEFT_EYE_OUTER: usize = 263;
/// Between the eyes, top of the nose bridge.
const NOSE_BRIDGE: usize = 168;
/// Base of the nose (above the philtrum).
const NOSE_BASE: usize = 2;
const INNER_BROWS: [usize; 4] = [107, 55, 336, 285];
const OUTER_BROWS: [usize; 4] = [70, 46, 300, 276];
const INNER_MID_BROWS: [usize; 8] = [107, 55, 105, 52, 336, 285, 334, 282];
const RIGHT_INNER_BROW_LOWER: usize = 55;
const LEFT_INNER_BROW_LOWER: usize = 285;
const UPPER_LIDS: [usize; 6] = [160, 159, 158, 385, 386, 387];
const LOWER_LIDS: [usize; 6] = [145, 144, 153, 374, 373, 380];
const CHEEKS: [usize; 2] = [50, 280];
const NOSE_WINGS: [usize; 4] = [64, 98, 294, 327];
const RIGHT_MOUTH_CORNER: usize = 61;
const LEFT_MOUTH_CORNER: usize = 291;
const LOWER_LIP_OUTER: usize = 17;
/// Outer upper-lip midpoint (on the maxilla: moves neither with the jaw nor the corners).
const UPPER_LIP_OUTER: usize = 0;
const CHIN: [usize; 2] = [152, 199];
/// Inner-lip `(upper, lower)` pairs: centre, right, left.
const INNER_LIP_PAIRS: [(usize, usize); 3] = [(13, 14), (82, 87), (312, 317)];

const AU15: usize = 7;
const AU20: usize = 9;

fn sub(a: [f32; 3], b: [f32; 3]) -> [f32; 3] {
    [a[0] - b[0], a[1] - b[1], a[2] - b[2]]
}

fn dot(a: [f32; 3], b: [f32; 3]) -> f32 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}

fn scale(a: [f32; 3], s: f32) -> [f32; 3] {
    [a[0] * s, a[1] * s, a[2] * s]
}

fn mid(a: [f32; 3], b: [f32; 3]) -> [f32; 3] {
    [
        (a[0] + b[0]) / 2.0,
        (a[1] + b[1]) / 2.0,
        (a[2] + b[2]) / 2.0,
    ]
}

fn cross(a: [f32; 3], b: [f32; 3]) -> [f32; 3] {
    [
        a[1] * b[2] - a[2] * b[1],
        a[2] * b[0] - a[0] * b[2],
        a[0] * b[1] - a[1] * b[0],
    ]
}

/// The head frame of one mesh: origin, inter-ocular distance and axes (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HeadFrame {
    /// Midpoint of the eye centres (mesh units).
    pub origin: [f32; 3],
    /// Distance between the eye centres (mesh units).
    pub iod: f32,
    /// Unit eye axis, towards the subject's left.
    pub x: [f32; 3],
    /// Unit axis down the face.
    pub y: [f32; 3],
    /// `x × y`.
    pub z: [f32; 3],
}

impl HeadFrame {
    /// The frame of `landmarks`; `None` when it is degenerate (coincident eyes, nose line
    /// parallel to the eye axis, non-finite values).
    pub fn of(landmarks: &Landmarks) -> Option<Self> {
        let right = mid(landmarks[RIGHT_EYE_OUTER], landmarks[RIGHT_EYE_INNER]);
        let left = mid(landmarks[LEFT_EYE_INNER], landmarks[LEFT_EYE_OUTER]);
        let origin = mid(right, left);
        let axis = sub(left, right);
        let iod = dot(axis, axis).sqrt();
        if !iod.is_finite() || iod <= f32::EPSILON {
            return None;
        }
        let x = scale(axis, 1.0 / iod);
        let down = sub(landmarks[NOSE_BASE], landmarks[NOSE_BRIDGE]);
        let down = sub(down, scale(x, dot(down, x)));
        let len = dot(down, down).sqrt();
        if !len.is_finite() || len <= 1e-3 * iod {
            return None;
        }
        let y = scale(down, 1.0 / len);
        Some(HeadFrame {
            origin,
            iod,
            x,
            y,
            z: cross(x, y),
        })
    }

    /// `p` in head-frame coordinates, in units of the inter-ocular distance.
    pub fn to_frame(&self, p: [f32; 3]) -> [f32; 3] {
        let d = scale(sub(p, self.origin), 1.0 / self.iod);
        [dot(d, self.x), dot(d, self.y), dot(d, self.z)]
    }

    /// Rough head pose in degrees `(yaw, pitch, roll)` in the landmarks' coordinate system
    /// (image `x` right, `y` down, FaceMesh `z`): yaw and roll from the eye axis, pitch from the
    /// down axis' depth component. Informative only; features are already measured in the
    /// pose-corrected frame.
    pub fn pose_degrees(&self) -> [f32; 3] {
        let yaw = self.x[2].atan2(self.x[0]).to_degrees();
        let roll = self.x[1].atan2(self.x[0]).to_degrees();
        let pitch = (-self.y[2]).atan2(self.y[1]).to_degrees();
        [yaw, pitch, roll]
    }
}

/// The 12 features of `landmarks` (FineFace order, module docs), in inter-ocular distances;
/// all NaN when the head frame is degenerate.
pub fn features(landmarks: &Landmarks) -> [f32; UNITS] {
    let Some(frame) = HeadFrame::of(landmarks) else {
        return [f32::NAN; UNITS];
    };
    let q = |i: usize| frame.to_frame(landmarks[i]);
    let h = |idx: &[usize]| -idx.iter().map(|&i| q(i)[1]).sum::<f32>() / idx.len() as f32;
    let mouth_width = q(LEFT_MOUTH_CORNER)[0] - q(RIGHT_MOUTH_CORNER)[0];
    // Lip-corner height above the upper-lip midpoint.
    let corner_height = h(&[RIGHT_MOUTH_CORNER, LEFT_MOUTH_CORNER]) - h(&[UPPER_LIP_OUTER]);
    let inner_brow_gap = q(LEFT_INNER_BROW_LOWER)[0] - q(RIGHT_INNER_BROW_LOWER)[0];
    let lip_gap = INNER_LIP_PAIRS
        .iter()
        .map(|&(u, l)| q(l)[1] - q(u)[1])
        .sum::<f32>()
        / INNER_LIP_PAIRS.len() as f32;
    [
        h(&INNER_BROWS),
        h(&OUTER_BROWS),
        -h(&INNER_MID_BROWS) - 0.5 * inner_brow_gap,
        h(&UPPER_LIDS),
        h(&LOWER_LIDS) + 0.5 * h(&CHEEKS),
        h(&NOSE_WINGS),
        corner_height + 0.25 * mouth_width,
        -corner_height,
        -(-h(&CHIN) - q(LOWER_LIP_OUTER)[1]),
        mouth_width,
        lip_gap,
        q(LOWER_LIP_OUTER)[1] - q(UPPER_LIP_OUTER)[1],
    ]
}

/// Median of `values` (mean of the middle two for an even count).
fn median(values: &mut [f32]) -> f32 {
    values.sort_by(f32::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

/// The features of a neutral face, subtracted before scaling.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NeutralBaseline {
    /// Features in FineFace order (AU20's penalty uses the AU15 feature, the lip-corner depth
    /// below the upper-lip midpoint).
    pub features: [f32; UNITS],
}

impl NeutralBaseline {
    /// Per-feature medians over the 24 DCGAN FaceMesh meshes (`gan.landmarks`) of
    /// `tests/fixtures/face/pipeline_reference.safetensors` (checked by the tests).
    pub const POPULATION: NeutralBaseline = NeutralBaseline {
        features: [
            0.27217785,
            0.244038,
            -0.5159992,
            0.07661834,
            -0.289895,
            -0.6666834,
            0.13467741,
            0.063939035,
            -0.25983316,
            0.7885473,
            0.023522705,
            0.21627483,
        ],
    };

    /// Per-feature medians over `neutral` meshes of one subject; refuses an empty slice and
    /// meshes whose head frame is degenerate.
    pub fn from_meshes(neutral: &[Landmarks]) -> Result<Self> {
        if neutral.is_empty() {
            return Err(Error::request(
                "neutral",
                "calibration needs at least one neutral mesh",
            ));
        }
        let mut columns: Vec<Vec<f32>> = (0..UNITS)
            .map(|_| Vec::with_capacity(neutral.len()))
            .collect();
        for (n, mesh) in neutral.iter().enumerate() {
            let f = features(mesh);
            if f.iter().any(|v| !v.is_finite()) {
                return Err(Error::request(
                    "neutral",
                    format!("mesh {n} has a degenerate head frame (eyes or nose line)"),
                ));
            }
            for (column, value) in columns.iter_mut().zip(f) {
                column.push(value);
            }
        }
        let mut features = [0.0; UNITS];
        for (out, column) in features.iter_mut().zip(columns.iter_mut()) {
            *out = median(column);
        }
        Ok(NeutralBaseline { features })
    }
}

/// Estimates FineFace intensities from FaceMesh landmarks against a neutral baseline.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AuEstimator {
    /// The neutral features.
    pub baseline: NeutralBaseline,
}

impl Default for AuEstimator {
    fn default() -> Self {
        AuEstimator {
            baseline: NeutralBaseline::POPULATION,
        }
    }
}

impl AuEstimator {
    /// An estimator with the given baseline.
    pub fn new(baseline: NeutralBaseline) -> Self {
        AuEstimator { baseline }
    }

    /// Replaces the baseline with the medians of one subject's `neutral` meshes
    /// ([`NeutralBaseline::from_meshes`]); on error the baseline is unchanged.
    pub fn calibrate(&mut self, neutral: &[Landmarks]) -> Result<()> {
        self.baseline = NeutralBaseline::from_meshes(neutral)?;
        Ok(())
    }

    /// The 12 features of `landmarks` ([`features`]).
    pub fn features(&self, landmarks: &Landmarks) -> [f32; UNITS] {
        features(landmarks)
    }

    /// Intensities in `0..=5`, FineFace order; all 0 for a degenerate mesh (no head frame).
    pub fn intensities(&self, landmarks: &Landmarks) -> [f32; UNITS] {
        let f = features(landmarks);
        let mut out = [0.0; UNITS];
        for (k, value) in out.iter_mut().enumerate() {
            let mut delta = f[k] - self.baseline.features[k];
            if k == AU20 {
                // Lip-corner height change = −(AU15 feature change).
                delta -= 4.0 * (f[AU15] - self.baseline.features[AU15]).abs();
            }
            let v = 5.0 * delta / FULL_SCALE[k];
            *value = if v.is_finite() {
                v.clamp(0.0, 5.0)
            } else {
                0.0
            };
        }
        out
    }

    /// Intensities as a validated FineFace [`AuVector`] (see [`AuEstimator::intensities`]).
    pub fn estimate(&self, landmarks: &Landmarks) -> AuVector {
        let mut v = AuVector::zeros(FINEFACE);
        for (code, value) in FINEFACE.codes.iter().zip(self.intensities(landmarks)) {
            v.set(code, value)
                .expect("intensities are finite and clamped to 0..=5");
        }
        v
    }
}
