//! The two pretrained FER classifiers against their tfjs originals on 100 real LFW faces
//! (fixture and weights made by `tools/face/make_face_assets.js`), their gradients under
//! autodiff against finite differences, and typed errors for bad weight files.

mod common;

use burn::tensor::{Device, Tensor, TensorData};
use common::{StrictCase, assert_strict_loading, fixture, host, max_abs};
use safetensors::{Dtype, SafeTensors};
use synfer::Error;
use synfer::face::face_api::{self, FaceApiExpression};
use synfer::face::mini_xception::{self, MiniXception};

const TOL: f64 = 1e-4;
const N: usize = 100;
/// Faces per forward pass (keeps memory modest).
const BATCH: usize = 25;

fn asset(name: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("assets/face")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `(input u8 grey [N, s, s], tfjs probabilities [N, 7])` for `model` (`fer_a` / `fer_b`).
fn reference(model: &str, size: usize) -> (Vec<u8>, Vec<f32>) {
    let bytes = std::fs::read(fixture("face/fer_reference.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let input = st.tensor(&format!("{model}.input")).unwrap();
    assert_eq!(input.dtype(), Dtype::U8);
    assert_eq!(input.shape(), [N, size, size]);
    let probs = st.tensor(&format!("{model}.probs")).unwrap();
    assert_eq!(probs.dtype(), Dtype::F32);
    assert_eq!(probs.shape(), [N, 7]);
    let p = probs
        .data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    (input.data().to_vec(), p)
}

/// Grey `[n, s, s]` → RGB `[n, s, s, 3]` with R = G = B (as the fixture script feeds tfjs).
fn grey_to_rgb(grey: &[u8]) -> Vec<u8> {
    grey.iter().flat_map(|&v| [v, v, v]).collect()
}

/// Runs `run` on the faces in batches and checks it against `reference` (the model's own
/// order; `to_canonical[c]` is canonical class `c`'s index there): max abs difference ≤ `TOL`,
/// same argmax on every face, rows summing to 1. Returns the max abs difference.
fn compare(
    what: &str,
    rgb: &[u8],
    size: usize,
    reference: &[f32],
    to_canonical: [usize; 7],
    run: impl Fn(&[u8]) -> Tensor<2>,
) -> f64 {
    let per = size * size * 3;
    let mut ours = Vec::with_capacity(N * 7);
    for chunk in rgb.chunks(BATCH * per) {
        let (shape, data) = host(run(chunk));
        assert_eq!(shape, [chunk.len() / per, 7], "{what}: output shape");
        ours.extend(data);
    }
    // The reference in canonical order.
    let canonical: Vec<f32> = reference
        .chunks_exact(7)
        .flat_map(|row| to_canonical.map(|i| row[i]))
        .collect();
    let err = max_abs(&ours, &canonical);
    let argmax = |r: &[f32]| {
        (0..7)
            .max_by(|&a, &b| r[a].total_cmp(&r[b]))
            .expect("7 classes")
    };
    let flips = ours
        .chunks_exact(7)
        .zip(canonical.chunks_exact(7))
        .filter(|(a, b)| argmax(a) != argmax(b))
        .count();
    for row in ours.chunks_exact(7) {
        let sum: f32 = row.iter().sum();
        assert!(
            (sum - 1.0).abs() < 1e-5,
            "{what}: probabilities sum to {sum}"
        );
    }
    eprintln!("{what}: max |ours − tfjs| = {err:.3e} over {N} faces, {flips} argmax flips");
    assert!(err <= TOL, "{what}: max abs difference {err:.3e} > {TOL:e}");
    assert_eq!(flips, 0, "{what}: argmax differs on {flips} faces");
    err
}

#[test]
fn fer_a_face_api_matches_tfjs_on_lfw() {
    let device = Device::flex();
    let net = FaceApiExpression::from_bytes(
        "fer_a_face_api.safetensors",
        &asset("fer_a_face_api.safetensors"),
        &device,
    )
    .unwrap();
    let (grey, probs) = reference("fer_a", face_api::INPUT_SIZE);
    let rgb = grey_to_rgb(&grey);
    // face-api's output order is the canonical one.
    compare(
        "FER A (u8 path)",
        &rgb,
        112,
        &probs,
        [0, 1, 2, 3, 4, 5, 6],
        |chunk| net.forward(face_api::preprocess_u8(chunk, &device).unwrap()),
    );
    // The float path on [0, 1] images gives the same answer.
    compare(
        "FER A (float path)",
        &rgb,
        112,
        &probs,
        [0, 1, 2, 3, 4, 5, 6],
        |chunk| net.forward(face_api::preprocess(float_images(chunk, 112, &device)).unwrap()),
    );
}

#[test]
fn fer_b_mini_xception_matches_tfjs_on_lfw() {
    let device = Device::flex();
    let net = MiniXception::from_bytes(
        "fer_b_mini_xception.safetensors",
        &asset("fer_b_mini_xception.safetensors"),
        &device,
    )
    .unwrap();
    let (grey, probs) = reference("fer_b", mini_xception::INPUT_SIZE);
    let rgb = grey_to_rgb(&grey);
    compare(
        "FER B (u8 path)",
        &rgb,
        64,
        &probs,
        mini_xception::TO_CANONICAL,
        |chunk| net.forward(mini_xception::preprocess_u8(chunk, &device).unwrap()),
    );
    compare(
        "FER B (float path)",
        &rgb,
        64,
        &probs,
        mini_xception::TO_CANONICAL,
        |chunk| {
            let x = mini_xception::preprocess(float_images(chunk, 64, &device)).unwrap();
            net.forward(x)
        },
    );
    // The native order is the tfjs output itself.
    let x = mini_xception::preprocess_u8(&rgb[..64 * 64 * 3 * 4], &device).unwrap();
    let (_, native) = host(net.forward_native(x));
    let err = max_abs(&native, &probs[..4 * 7]);
    assert!(err <= TOL, "FER B native order: {err:.3e}");
}

#[test]
fn canonical_class_mapping() {
    use synfer::expression::CLASSES;
    use synfer::face::mini_xception::{NATIVE_CLASSES, TO_CANONICAL};
    // FER2013 names → canonical names.
    let rename = |s: &'static str| -> &'static str {
        match s {
            "disgust" => "disgusted",
            "fear" => "fearful",
            "surprise" => "surprised",
            other => other,
        }
    };
    for (c, &i) in TO_CANONICAL.iter().enumerate() {
        assert_eq!(CLASSES[c], rename(NATIVE_CLASSES[i]));
    }
    assert_eq!(face_api::CLASSES, CLASSES);
}

/// u8 RGB `[n, s, s, 3]` → float tensor in `[0, 1]`.
fn float_images(chunk: &[u8], size: usize, device: &Device) -> Tensor<4> {
    let n = chunk.len() / (size * size * 3);
    let values: Vec<f32> = chunk.iter().map(|&v| v as f32 / 255.0).collect();
    Tensor::from_data(TensorData::new(values, [n, size, size, 3]), device)
}

type LoadFn = fn(&str, &[u8], &Device) -> synfer::Result<()>;

fn load_a(name: &str, bytes: &[u8], device: &Device) -> synfer::Result<()> {
    FaceApiExpression::from_bytes(name, bytes, device).map(|_| ())
}

fn load_b(name: &str, bytes: &[u8], device: &Device) -> synfer::Result<()> {
    MiniXception::from_bytes(name, bytes, device).map(|_| ())
}

#[test]
fn bad_weight_files_give_typed_errors() {
    let device = Device::flex();
    let cases: [(&str, LoadFn, &str); 2] = [
        ("fer_a_face_api.safetensors", load_a, "dense0.conv0.bias"),
        ("fer_b_mini_xception.safetensors", load_b, "conv1.bias"),
    ];
    for (file, load, key) in cases {
        let case = StrictCase {
            shrink: key,
            relayout: None,
            missing: key,
            extra: ("stray.weight", Dtype::F32, vec![1], vec![0; 4]),
        };
        assert_strict_loading(file, &asset(file), |b| load(file, b, &device), case);
    }
}

#[test]
fn wrong_image_sizes_are_refused() {
    let device = Device::flex();
    assert!(matches!(
        face_api::preprocess_u8(&[0; 64 * 64 * 3], &device),
        Err(Error::InvalidRequest { .. })
    ));
    assert!(matches!(
        mini_xception::preprocess_u8(&[], &device),
        Err(Error::InvalidRequest { .. })
    ));
    let t = Tensor::<4>::zeros([1, 64, 64, 3], &device);
    assert!(matches!(
        face_api::preprocess(t),
        Err(Error::InvalidRequest { .. })
    ));
}

/// `−Σ log p[class]` of `probs` `[n, 7]`.
fn nll(probs: Tensor<2>, class: usize) -> Tensor<1> {
    let n = probs.dims()[0];
    probs.slice([0..n, class..class + 1]).log().sum().neg()
}

/// Under autodiff, on two LFW faces: the same probabilities as on flex, and the input gradient
/// of `−Σ log p[class]` (through the differentiable `preprocess`) agrees with central finite
/// differences along the gradient itself and along a fixed pseudo-random direction (what
/// semantic guidance back-propagates through).
fn check_autodiff(
    what: &str,
    rgb: &[u8],
    size: usize,
    class: usize,
    run: impl Fn(Tensor<4>, &Device) -> Tensor<2>,
) {
    let plain = Device::flex();
    let ad = Device::flex().autodiff();
    let x = float_images(rgb, size, &ad).require_grad();
    let probs = run(x.clone(), &ad);
    let (_, ours) = host(probs.clone());
    let (_, flex) = host(run(float_images(rgb, size, &plain), &plain));
    let diff = max_abs(&ours, &flex);
    assert!(diff < 1e-6, "{what}: autodiff forward differs by {diff}");
    let grads = nll(probs, class).backward();
    let (shape, grad) = host(x.grad(&grads).expect("gradient reaches the image"));
    assert_eq!(shape, [2, size, size, 3]);
    let norm = grad
        .iter()
        .map(|g| f64::from(*g).powi(2))
        .sum::<f64>()
        .sqrt();
    assert!(norm.is_finite() && norm > 0.0, "{what}: |grad| = {norm}");

    let loss_at = |dir: &[f32], eps: f32| -> f64 {
        let base = float_images(rgb, size, &plain);
        let d = Tensor::<4>::from_data(TensorData::new(dir.to_vec(), [2, size, size, 3]), &plain);
        let (_, v) = host(nll(run(base + d * eps, &plain), class).reshape([1]));
        f64::from(v[0])
    };
    let central =
        |dir: &[f32], eps: f32| (loss_at(dir, eps) - loss_at(dir, -eps)) / (2.0 * f64::from(eps));
    // Along the gradient: the directional derivative is |grad|.
    let unit: Vec<f32> = grad.iter().map(|g| (f64::from(*g) / norm) as f32).collect();
    let numeric = central(&unit, 1e-4);
    eprintln!("{what}: |grad| {norm:.6e}, finite difference along it {numeric:.6e}");
    assert!(
        (numeric - norm).abs() < 2e-2 * norm,
        "{what}: |grad| {norm} vs {numeric}"
    );
    // The five largest components, one pixel value at a time (±1e-4 of the 0–1 range: the
    // ReLU networks are piecewise linear with dense kinks, so larger steps bias the estimate).
    let mut order: Vec<usize> = (0..grad.len()).collect();
    order.sort_by(|&i, &j| grad[j].abs().total_cmp(&grad[i].abs()));
    for &i in &order[..5] {
        let mut one = vec![0.0f32; grad.len()];
        one[i] = 1.0;
        let numeric = central(&one, 1e-4);
        let analytic = f64::from(grad[i]);
        eprintln!("{what}: d/dx[{i}] {analytic:.6e}, finite difference {numeric:.6e}");
        assert!(
            (numeric - analytic).abs() < 2e-2 * analytic.abs(),
            "{what}: d/dx[{i}] {analytic} vs {numeric}"
        );
    }
}

#[test]
fn classifiers_differentiate_under_autodiff() {
    let bytes_a = asset("fer_a_face_api.safetensors");
    let bytes_b = asset("fer_b_mini_xception.safetensors");
    let (grey, _) = reference("fer_a", face_api::INPUT_SIZE);
    let s = face_api::INPUT_SIZE;
    check_autodiff(
        "FER A",
        &grey_to_rgb(&grey[..2 * s * s]),
        s,
        1,
        |x, device| {
            let net = FaceApiExpression::from_bytes("fer_a", &bytes_a, device).unwrap();
            net.forward(face_api::preprocess(x).unwrap())
        },
    );
    let (grey, _) = reference("fer_b", mini_xception::INPUT_SIZE);
    let s = mini_xception::INPUT_SIZE;
    check_autodiff(
        "FER B",
        &grey_to_rgb(&grey[..2 * s * s]),
        s,
        2,
        |x, device| {
            let net = MiniXception::from_bytes("fer_b", &bytes_b, device).unwrap();
            net.forward(mini_xception::preprocess(x).unwrap())
        },
    );
}
