//! Expression classifiers trained by synfer: the downstream half of SynFER (train a FER model
//! on synthetic faces, evaluate it on real ones) and a third voter / guide for the pipeline.
//!
//! - [`classes`]: canonical classes and the label codes of FER2013, RAF-DB and AffectNet;
//! - [`dataset`]: the published dataset layouts, decoded to one square size;
//! - [`augment`]: training-time augmentation;
//! - [`net`]: ResNet-18 and mini-Xception (GroupNorm);
//! - [`classifier`]: a stored model (`fer.json` + `model.safetensors`), loadable from bytes;
//! - [`metrics`]: accuracy, per-class accuracy, macro-F1, confusion matrix;
//! - [`train`]: the training run.

pub mod augment;
pub mod classes;
pub mod classifier;
#[cfg(not(target_family = "wasm"))]
pub mod dataset;
pub mod metrics;
pub mod net;
#[cfg(not(target_family = "wasm"))]
pub mod train;

pub use classifier::{FerClassifier, FerConfig};
pub use net::Arch;
