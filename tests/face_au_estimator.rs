//! The geometric AU estimator on real FaceMesh landmarks (24 LFW faces of
//! `tests/fixtures/face/mesh_reference.safetensors`): synthetic landmark edits move the right
//! unit and leave unrelated ones alone, estimates grow with the edit, are invariant under
//! rotation + scale + translation, and a calibrated neutral face reads 0. The population
//! baseline is the median of the 24 DCGAN meshes of `pipeline_reference.safetensors`; the
//! franck video frames (smiling vs neutral) are in `tests/face_pipeline.rs`.

mod common;

use common::fixture;
use safetensors::{Dtype, SafeTensors};
use synfer::au::catalog::FINEFACE;
use synfer::face::au_estimator::{
    AuEstimator, HeadFrame, Landmarks, NeutralBaseline, UNITS, features,
};
use synfer::face::mesh::LANDMARKS;

const N: usize = 24;
/// Intensity change allowed for a unit an edit does not involve.
const EPS: f32 = 1e-3;

fn meshes() -> Vec<Landmarks> {
    read_meshes("face/mesh_reference.safetensors", "landmarks")
}

/// `[24, 468, 3]` f32 landmarks `key` of fixture `rel`.
fn read_meshes(rel: &str, key: &str) -> Vec<Landmarks> {
    let bytes = std::fs::read(fixture(rel)).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let view = st.tensor(key).unwrap();
    assert_eq!(view.dtype(), Dtype::F32);
    assert_eq!(view.shape(), [N, LANDMARKS, 3]);
    let values: Vec<f32> = view
        .data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    values
        .chunks_exact(LANDMARKS * 3)
        .map(|face| {
            let mut mesh = [[0.0f32; 3]; LANDMARKS];
            for (p, v) in mesh.iter_mut().zip(face.chunks_exact(3)) {
                *p = [v[0], v[1], v[2]];
            }
            mesh
        })
        .collect()
}

fn au(code: &str) -> usize {
    FINEFACE.index_of(code).unwrap()
}

/// An estimator calibrated on `mesh` itself, so the unedited mesh reads 0 everywhere.
fn calibrated(mesh: &Landmarks) -> AuEstimator {
    let mut e = AuEstimator::default();
    e.calibrate(std::slice::from_ref(mesh)).unwrap();
    e
}

/// Image-plane unit vectors of the face: `(right → left eye axis, up the face)`, and the
/// inter-ocular distance.
fn face_axes(mesh: &Landmarks) -> ([f32; 2], [f32; 2], f32) {
    let f = HeadFrame::of(mesh).unwrap();
    let a = [f.x[0], f.x[1]];
    let n = (a[0] * a[0] + a[1] * a[1]).sqrt();
    let a = [a[0] / n, a[1] / n];
    // y points down in the image: "up" is the eye axis turned by −90°.
    (a, [a[1], -a[0]], f.iod)
}

/// Moves `points` by `(along, up)` inter-ocular distances in the image plane.
fn moved(mesh: &Landmarks, points: &[(usize, f32, f32)], amount: f32) -> Landmarks {
    let (axis, up, iod) = face_axes(mesh);
    let mut out = *mesh;
    for &(i, along, rise) in points {
        for c in 0..2 {
            out[i][c] += amount * iod * (along * axis[c] + rise * up[c]);
        }
    }
    out
}

fn up(points: &[usize], dir: f32) -> Vec<(usize, f32, f32)> {
    points.iter().map(|&i| (i, 0.0, dir)).collect()
}

const LIP_CORNERS: [usize; 2] = [61, 291];
const INNER_BROWS: [usize; 8] = [107, 55, 66, 65, 336, 285, 296, 295];
const UPPER_LIDS: [usize; 10] = [161, 160, 159, 158, 157, 388, 387, 386, 385, 384];
/// Chin and lower lip (outer and inner), moved together by a jaw drop.
const JAW: [usize; 16] = [
    152, 148, 377, 176, 400, 199, 175, 200, 18, 17, 84, 314, 14, 87, 317, 16,
];

fn raise_corners(mesh: &Landmarks, amount: f32) -> Landmarks {
    moved(mesh, &up(&LIP_CORNERS, 1.0), amount)
}

fn raise_inner_brows(mesh: &Landmarks, amount: f32) -> Landmarks {
    moved(mesh, &up(&INNER_BROWS, 1.0), amount)
}

/// Lowers every brow point and draws the inner ends together.
fn knit_brows(mesh: &Landmarks, amount: f32) -> Landmarks {
    let right = [70, 63, 105, 66, 107, 46, 53, 52, 65, 55];
    let left = [300, 293, 334, 296, 336, 276, 283, 282, 295, 285];
    let mut edit = up(&right, -1.0);
    edit.extend(up(&left, -1.0));
    for (i, along) in [(107, 0.5), (55, 0.5), (336, -0.5), (285, -0.5)] {
        edit.push((i, along, 0.0));
    }
    moved(mesh, &edit, amount)
}

fn drop_jaw(mesh: &Landmarks, amount: f32) -> Landmarks {
    moved(mesh, &up(&JAW, -1.0), amount)
}

fn widen_eyes(mesh: &Landmarks, amount: f32) -> Landmarks {
    moved(mesh, &up(&UPPER_LIDS, 1.0), amount)
}

/// Asserts `codes` rose by at least `min` and every code in `unrelated` stayed within `EPS`.
fn check(what: &str, e: &AuEstimator, edited: &Landmarks, raised: &[&str], unrelated: &[&str]) {
    let v = e.intensities(edited);
    eprintln!("{what}: {v:?}");
    for code in raised {
        assert!(v[au(code)] >= 0.5, "{what}: {code} = {}", v[au(code)]);
    }
    for code in unrelated {
        assert!(v[au(code)] <= EPS, "{what}: {code} = {}", v[au(code)]);
    }
}

#[test]
fn population_baseline_is_the_gan_median() {
    let gan = read_meshes("face/pipeline_reference.safetensors", "gan.landmarks");
    let fitted = NeutralBaseline::from_meshes(&gan).unwrap();
    let meshes = meshes();
    eprintln!("{fitted:?}");
    let p = NeutralBaseline::POPULATION;
    for k in 0..UNITS {
        assert!(
            (p.features[k] - fitted.features[k]).abs() <= 1e-5,
            "{}: {} vs {}",
            FINEFACE.codes[k],
            p.features[k],
            fitted.features[k]
        );
    }
    // Every LFW and GAN face reads within range with the default estimator; valid AuVectors.
    let e = AuEstimator::default();
    for mesh in meshes.iter().chain(&gan) {
        let v = e.estimate(mesh);
        assert_eq!(v.au_set(), FINEFACE);
        assert!(v.values().iter().all(|x| (0.0..=5.0).contains(x)));
    }
}

#[test]
fn neutral_face_reads_zero() {
    for mesh in &meshes() {
        let e = calibrated(mesh);
        assert_eq!(e.intensities(mesh), [0.0; UNITS]);
        assert_eq!(e.estimate(mesh).to_spec(), "");
    }
    // Calibrating on several frames takes per-feature medians: the median frame of three
    // brow raises reads as the baseline.
    let mesh = meshes()[0];
    let frames = [
        raise_inner_brows(&mesh, 0.02),
        raise_inner_brows(&mesh, 0.05),
        raise_inner_brows(&mesh, 0.08),
    ];
    let mut e = AuEstimator::default();
    e.calibrate(&frames).unwrap();
    assert!(e.intensities(&frames[1])[au("AU1")] <= EPS);
    assert!(e.intensities(&frames[2])[au("AU1")] > 0.5);
}

#[test]
fn lip_corner_raise_is_au12_only() {
    for mesh in &meshes() {
        let e = calibrated(mesh);
        check(
            "corners up",
            &e,
            &raise_corners(mesh, 0.06),
            &["AU12"],
            &[
                "AU1", "AU2", "AU4", "AU5", "AU9", "AU15", "AU20", "AU25", "AU26",
            ],
        );
    }
}

#[test]
fn lip_corner_depression_is_au15_not_au12() {
    for mesh in &meshes() {
        let e = calibrated(mesh);
        check(
            "corners down",
            &e,
            &raise_corners(mesh, -0.05),
            &["AU15"],
            &["AU1", "AU2", "AU4", "AU5", "AU9", "AU12", "AU20", "AU26"],
        );
    }
}

#[test]
fn inner_brow_raise_is_au1() {
    for mesh in &meshes() {
        let e = calibrated(mesh);
        check(
            "inner brows up",
            &e,
            &raise_inner_brows(mesh, 0.06),
            &["AU1"],
            &["AU2", "AU4", "AU5", "AU9", "AU12", "AU15", "AU25", "AU26"],
        );
    }
}

#[test]
fn brow_lowering_and_knitting_is_au4() {
    for mesh in &meshes() {
        let e = calibrated(mesh);
        check(
            "brows down",
            &e,
            &knit_brows(mesh, 0.05),
            &["AU4"],
            &["AU1", "AU2", "AU5", "AU9", "AU12", "AU15", "AU25", "AU26"],
        );
    }
}

#[test]
fn jaw_drop_is_au26_and_au25() {
    for mesh in &meshes() {
        let e = calibrated(mesh);
        check(
            "jaw down",
            &e,
            &drop_jaw(mesh, 0.15),
            &["AU25", "AU26"],
            &["AU1", "AU2", "AU4", "AU5", "AU9", "AU12", "AU15", "AU17"],
        );
    }
}

#[test]
fn widened_eyes_are_au5() {
    for mesh in &meshes() {
        let e = calibrated(mesh);
        check(
            "eyes wide",
            &e,
            &widen_eyes(mesh, 0.03),
            &["AU5"],
            &[
                "AU1", "AU2", "AU4", "AU6", "AU9", "AU12", "AU15", "AU25", "AU26",
            ],
        );
    }
}

#[test]
fn larger_edits_never_read_smaller() {
    type Edit = fn(&Landmarks, f32) -> Landmarks;
    let edits: [(&str, Edit, f32); 6] = [
        ("AU12", raise_corners, 1.0),
        ("AU15", raise_corners, -1.0),
        ("AU1", raise_inner_brows, 1.0),
        ("AU4", knit_brows, 1.0),
        ("AU26", drop_jaw, 1.0),
        ("AU5", widen_eyes, 1.0),
    ];
    for mesh in meshes().iter().take(6) {
        let e = calibrated(mesh);
        for (code, edit, sign) in edits {
            let mut last = 0.0f32;
            let mut top = 0.0f32;
            for step in 0..=60 {
                let v = e.intensities(&edit(mesh, sign * step as f32 * 0.01))[au(code)];
                assert!(v >= last - 1e-4, "{code}: {v} < {last} at step {step}");
                last = v;
                top = top.max(v);
            }
            assert_eq!(top, 5.0, "{code} saturates at 5");
        }
    }
}

/// Rotates by `angle` about the image origin in the x–y plane, scales every axis by `s` and
/// translates by `t`.
fn similarity(mesh: &Landmarks, angle: f32, s: f32, t: [f32; 3]) -> Landmarks {
    let (sin, cos) = angle.sin_cos();
    let mut out = *mesh;
    for p in out.iter_mut() {
        let [x, y, z] = *p;
        *p = [
            s * (cos * x - sin * y) + t[0],
            s * (sin * x + cos * y) + t[1],
            s * z + t[2],
        ];
    }
    out
}

#[test]
fn rotation_scale_translation_leave_estimates_unchanged() {
    let meshes = meshes();
    let e = AuEstimator::default();
    for (n, mesh) in meshes.iter().enumerate() {
        // An expressive variant too, so non-zero intensities are compared.
        let expressive = drop_jaw(&raise_corners(&raise_inner_brows(mesh, 0.03), 0.03), 0.08);
        for face in [*mesh, expressive] {
            let before = e.intensities(&face);
            let f0 = features(&face);
            for (angle, s, t) in [
                (0.4f32, 1.7f32, [35.0f32, -12.0, 4.0]),
                (-1.1, 0.45, [-80.0, 140.0, -20.0]),
                (3.0, 3.0, [0.5, 0.5, 0.0]),
            ] {
                let moved = similarity(&face, angle, s, t);
                let after = e.intensities(&moved);
                let f1 = features(&moved);
                for k in 0..UNITS {
                    assert!(
                        (before[k] - after[k]).abs() <= 1e-3,
                        "mesh {n} {}: {} vs {}",
                        FINEFACE.codes[k],
                        before[k],
                        after[k]
                    );
                    assert!((f0[k] - f1[k]).abs() <= 1e-4, "mesh {n} feature {k}");
                }
                let roll = HeadFrame::of(&moved).unwrap().pose_degrees()[2];
                let roll0 = HeadFrame::of(&face).unwrap().pose_degrees()[2];
                let d = (roll - roll0 - angle.to_degrees() + 540.0).rem_euclid(360.0) - 180.0;
                assert!(d.abs() < 1e-2, "roll {roll} vs {roll0} + {angle}");
            }
        }
    }
}

#[test]
fn degenerate_meshes_are_refused_or_read_zero() {
    let flat = [[0.0f32; 3]; LANDMARKS];
    assert!(HeadFrame::of(&flat).is_none());
    assert!(features(&flat).iter().all(|v| v.is_nan()));
    let e = AuEstimator::default();
    assert_eq!(e.intensities(&flat), [0.0; UNITS]);
    assert_eq!(e.estimate(&flat).to_spec(), "");
    let err = NeutralBaseline::from_meshes(&[]).unwrap_err().to_string();
    assert!(err.contains("at least one"), "{err}");
    let mut e = calibrated(&meshes()[0]);
    let before = e;
    let err = e.calibrate(&[flat]).unwrap_err().to_string();
    assert!(err.contains("degenerate"), "{err}");
    assert_eq!(e, before, "a failed calibration keeps the baseline");
}

#[test]
fn outer_brow_raise_is_au2() {
    for mesh in &meshes() {
        let e = calibrated(mesh);
        check(
            "outer brows up",
            &e,
            &moved(mesh, &up(&[70, 46, 63, 53, 300, 276, 293, 283], 1.0), 0.06),
            &["AU2"],
            &["AU1", "AU4", "AU5", "AU9", "AU12", "AU15", "AU25", "AU26"],
        );
    }
}

#[test]
fn lower_lid_and_cheek_raise_is_au6() {
    let points = [145, 144, 153, 374, 373, 380, 50, 280];
    for mesh in &meshes() {
        let e = calibrated(mesh);
        check(
            "lower lids and cheeks up",
            &e,
            &moved(mesh, &up(&points, 1.0), 0.04),
            &["AU6"],
            &[
                "AU1", "AU2", "AU4", "AU5", "AU9", "AU12", "AU15", "AU25", "AU26",
            ],
        );
    }
}

#[test]
fn nose_wing_raise_is_au9() {
    let points = [64, 98, 48, 129, 294, 327, 278, 358];
    for mesh in &meshes() {
        let e = calibrated(mesh);
        check(
            "nose wings up",
            &e,
            &moved(mesh, &up(&points, 1.0), 0.04),
            &["AU9"],
            &[
                "AU1", "AU2", "AU4", "AU5", "AU12", "AU15", "AU20", "AU25", "AU26",
            ],
        );
    }
}

#[test]
fn chin_raise_is_au17() {
    let chin = [152, 148, 377, 176, 400, 199, 175];
    for mesh in &meshes() {
        let e = calibrated(mesh);
        check(
            "chin up",
            &e,
            &moved(mesh, &up(&chin, 1.0), 0.05),
            &["AU17"],
            &[
                "AU1", "AU2", "AU4", "AU5", "AU9", "AU12", "AU15", "AU25", "AU26",
            ],
        );
    }
}

#[test]
fn sideways_lip_stretch_is_au20() {
    for mesh in &meshes() {
        let e = calibrated(mesh);
        let stretched = moved(mesh, &[(61, -1.0, 0.0), (291, 1.0, 0.0)], 0.03);
        check(
            "corners apart",
            &e,
            &stretched,
            &["AU20"],
            &["AU1", "AU2", "AU4", "AU5", "AU9", "AU15", "AU25", "AU26"],
        );
        // AU12's widening term responds too, but much less than AU20.
        let v = e.intensities(&stretched);
        assert!(v[au("AU12")] < v[au("AU20")] / 4.0, "{v:?}");
        // A smile that widens the mouth as much is not a lip stretch.
        let smile = raise_corners(&stretched, 0.05);
        assert!(e.intensities(&smile)[au("AU20")] <= EPS);
    }
}

/// Rotates about the image `y` axis (`yaw`) then the `x` axis (`pitch`), radians.
fn turn(mesh: &Landmarks, yaw: f32, pitch: f32) -> Landmarks {
    let (sy, cy) = yaw.sin_cos();
    let (sp, cp) = pitch.sin_cos();
    let mut out = *mesh;
    for p in out.iter_mut() {
        let [x, y, z] = *p;
        let (x, z) = (cy * x + sy * z, -sy * x + cy * z);
        let (y, z) = (cp * y - sp * z, sp * y + cp * z);
        *p = [x, y, z];
    }
    out
}

#[test]
fn head_turns_are_corrected_in_the_head_frame() {
    let e = AuEstimator::default();
    for mesh in &meshes() {
        let face = raise_corners(mesh, 0.03);
        let before = e.intensities(&face);
        let pose = HeadFrame::of(&face).unwrap().pose_degrees();
        for (yaw, pitch) in [(0.35f32, 0.0f32), (0.0, -0.25), (-0.3, 0.2)] {
            let turned = turn(&face, yaw, pitch);
            let after = e.intensities(&turned);
            for k in 0..UNITS {
                assert!(
                    (before[k] - after[k]).abs() <= 1e-3,
                    "{k}: {before:?} {after:?}"
                );
            }
            let p = HeadFrame::of(&turned).unwrap().pose_degrees();
            if pitch == 0.0 {
                assert!((p[0] - (pose[0] - yaw.to_degrees())).abs() < 1e-2, "{p:?}");
            }
            if yaw == 0.0 {
                assert!(
                    (p[1] - (pose[1] - pitch.to_degrees())).abs() < 1e-2,
                    "{p:?}"
                );
            }
        }
    }
}
