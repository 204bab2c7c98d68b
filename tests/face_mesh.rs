//! MediaPipe FaceMesh against its tfjs original on 24 real LFW faces (fixture and weights made
//! by `tools/face/make_face_mesh.js`), and typed errors for bad weight files and inputs.

mod common;

use burn::tensor::{Device, Tensor, TensorData};
use common::{StrictCase, assert_strict_loading, fixture, host, max_abs};
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use synfer::Error;
use synfer::face::mesh::{FaceMesh, INPUT_SIZE, LANDMARKS};

const N: usize = 24;
/// Landmarks: 1e-3 of the crop side, in pixels.
const LANDMARK_TOL: f64 = 1e-3 * INPUT_SIZE as f64;
const SCORE_TOL: f64 = 1e-4;
/// Faces per forward pass.
const BATCH: usize = 8;
const FILE: &str = "facemesh.safetensors";

fn weights() -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("assets/face")
        .join(FILE);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn f32s(view: &TensorView) -> Vec<f32> {
    assert_eq!(view.dtype(), Dtype::F32);
    view.data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

/// `(u8 grey [N, 192, 192], tfjs landmarks [N, 468, 3], tfjs scores [N])`.
fn reference() -> (Vec<u8>, Vec<f32>, Vec<f32>) {
    let bytes = std::fs::read(fixture("face/mesh_reference.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let input = st.tensor("input").unwrap();
    assert_eq!(input.dtype(), Dtype::U8);
    assert_eq!(input.shape(), [N, INPUT_SIZE, INPUT_SIZE]);
    let landmarks = st.tensor("landmarks").unwrap();
    assert_eq!(landmarks.shape(), [N, LANDMARKS, 3]);
    let score = st.tensor("score").unwrap();
    assert_eq!(score.shape(), [N]);
    (input.data().to_vec(), f32s(&landmarks), f32s(&score))
}

/// u8 grey `[n, s, s]` → RGB `[n, s, s, 3]` in `[0, 1]` (R = G = B, `v / 255` as tfjs).
fn rgb_images(grey: &[u8], device: &Device) -> Tensor<4> {
    let s = INPUT_SIZE;
    let n = grey.len() / (s * s);
    let values: Vec<f32> = grey.iter().flat_map(|&v| [v as f32 / 255.0; 3]).collect();
    Tensor::from_data(TensorData::new(values, [n, s, s, 3]), device)
}

#[test]
fn facemesh_matches_tfjs_on_lfw() {
    let device = Device::flex();
    let net = FaceMesh::from_bytes(FILE, &weights(), &device).unwrap();
    let (grey, ref_landmarks, ref_scores) = reference();
    let per = INPUT_SIZE * INPUT_SIZE;
    for nchw in [false, true] {
        let mut landmarks = Vec::with_capacity(N * LANDMARKS * 3);
        let mut scores = Vec::with_capacity(N);
        for chunk in grey.chunks(BATCH * per) {
            let n = chunk.len() / per;
            let mut x = rgb_images(chunk, &device);
            if nchw {
                x = x.permute([0, 3, 1, 2]);
            }
            let (l, s) = net.forward(x).unwrap();
            let (ls, lv) = host(l);
            let (ss, sv) = host(s);
            assert_eq!(ls, [n, LANDMARKS, 3]);
            assert_eq!(ss, [n]);
            landmarks.extend(lv);
            scores.extend(sv);
        }
        let dl = max_abs(&landmarks, &ref_landmarks);
        let ds = max_abs(&scores, &ref_scores);
        let layout = if nchw { "NCHW" } else { "NHWC" };
        eprintln!(
            "FaceMesh ({layout}): max |ours − tfjs| landmarks {dl:.3e} px, scores {ds:.3e} over {N} faces"
        );
        assert!(
            dl <= LANDMARK_TOL,
            "landmarks: {dl:.3e} px > {LANDMARK_TOL:e}"
        );
        assert!(ds <= SCORE_TOL, "scores: {ds:.3e} > {SCORE_TOL:e}");
    }
    // The landmarks are real: the mesh of a detected face lies mostly inside the crop.
    let inside = ref_landmarks
        .chunks_exact(3)
        .filter(|p| (0.0..192.0).contains(&p[0]) && (0.0..192.0).contains(&p[1]))
        .count();
    assert!(inside > N * LANDMARKS * 9 / 10, "{inside} landmarks inside");
}

#[test]
fn bad_weight_files_give_typed_errors() {
    let device = Device::flex();
    let load = |b: &[u8]| FaceMesh::from_bytes(FILE, b, &device).map(|_| ());
    let case = StrictCase {
        shrink: "backbone.2.alpha",
        // The mesh output conv with the layout of the HWIO original.
        relayout: Some(("mesh.out.weight", vec![3, 3, 32, 1404])),
        missing: "flag.out.bias",
        // Say, the unported contours head.
        extra: ("contours.out.bias", Dtype::F16, vec![266], vec![0; 532]),
    };
    assert_strict_loading(FILE, &weights(), load, case);
}

#[test]
fn wrong_image_shapes_are_refused() {
    let device = Device::flex();
    let net = FaceMesh::from_bytes(FILE, &weights(), &device).unwrap();
    for dims in [[1, 112, 112, 3], [1, 192, 192, 1], [1, 4, 192, 192]] {
        match net.forward(Tensor::<4>::zeros(dims, &device)) {
            Err(Error::InvalidRequest { .. }) => {}
            other => panic!("{dims:?}: {:?}", other.map(|_| ())),
        }
    }
}
