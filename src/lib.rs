//! # synfer
//!
//! SynFER (Synthesis of Facial Expressions with Refined Control) in Rust on burn: a latent
//! diffusion pipeline compatible with Stable Diffusion 1.x/2.x folders in diffusers layout,
//! running on wgpu (Vulkan/Metal/DX12/WebGPU) or on burn's flex CPU backend.
//!
//! ```no_run
//! # fn main() -> synfer::Result<()> {
//! use synfer::{Expression, GenerateRequest, Pipeline};
//! let device = synfer::device::select(synfer::device::DeviceChoice::Auto)?;
//! let pipe = Pipeline::builder("path/to/stable-diffusion-v1-5")
//!     .device(&device.device)
//!     .buffer_limit(device.max_buffer)
//!     .build()?;
//! let request = GenerateRequest {
//!     expression: Some(Expression::Happy),
//!     ..GenerateRequest::new("a photo of a woman")
//! };
//! let out = pipe.generate(&request)?;
//! # Ok(()) }
//! ```

pub mod au;
#[cfg(not(target_family = "wasm"))]
pub mod bench;
pub mod dataset;
#[cfg(not(target_family = "wasm"))]
pub mod default_model;
pub mod device;
pub mod error;
#[cfg(not(target_family = "wasm"))]
pub mod eval;
pub mod expression;
pub mod face;
pub mod facetext;
pub mod fer;
pub mod files;
pub mod gan;
pub mod guidance;
pub mod image;
pub mod label;
#[cfg(not(target_family = "wasm"))]
pub mod layout;
pub mod nn;
pub mod pipeline;
pub mod plot;
#[cfg(feature = "native")]
pub mod progress;
pub mod rng;
pub mod scheduler;
#[cfg(not(target_family = "wasm"))]
pub mod synth;
pub mod tensor;
pub mod text_encoder;
pub mod tokenizer;
pub mod train;
pub mod unet;
pub mod vae;
#[cfg(target_family = "wasm")]
pub mod web;
pub mod weights;

pub use au::AuVector;
pub use error::{Error, Result};
pub use expression::Expression;
pub use pipeline::{GenerateOptions, GenerateOutput, GenerateRequest, Pipeline};
