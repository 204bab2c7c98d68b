//! Expression classifiers trained by synfer: the downstream half of SynFER (train a FER model
//! on synthetic faces, evaluate it on real ones) and a third voter / guide for the pipeline.
//!
//! - [`augment`]: training-time augmentation;
//! - [`net`]: ResNet-18 and mini-Xception (GroupNorm);
//! - [`classifier`]: a stored model (`fer.json` + `model.safetensors`), loadable from bytes;
//! - [`metrics`]: accuracy, per-class accuracy, macro-F1, confusion matrix;
//! - [`train`]: the training run;
//! - [`session`]: `synfer fer` from dataset paths: training sessions, evaluation, prediction.

pub mod augment;
pub mod classifier;
pub mod metrics;
pub mod net;
#[cfg(not(target_family = "wasm"))]
pub mod session;
#[cfg(not(target_family = "wasm"))]
pub mod train;

pub use classifier::{FerClassifier, FerConfig};
pub use net::Arch;
