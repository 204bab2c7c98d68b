//! # synfer
//!
//! SynFER (Synthesis of Facial Expressions with Refined Control) in Rust on burn: a latent
//! diffusion pipeline compatible with Stable Diffusion 1.x/2.x folders in diffusers layout,
//! running on wgpu (Vulkan/Metal/DX12/WebGPU) or on burn's flex CPU backend.
//!
//! ```no_run
//! # fn main() -> synfer::Result<()> {
//! use synfer::pipeline::{GenerateRequest, Pipeline};
//! let device = synfer::device::select(synfer::device::DeviceChoice::Auto)?;
//! let pipe = Pipeline::load("path/to/stable-diffusion-v1-5", &device.device)?;
//! let out = pollster::block_on(pipe.generate(&GenerateRequest::new("a smiling woman"), None, |_| {}))?;
//! # Ok(()) }
//! ```

pub mod au;
#[cfg(not(target_family = "wasm"))]
pub mod bench;
#[cfg(not(target_family = "wasm"))]
pub mod default_model;
pub mod device;
pub mod error;
#[cfg(not(target_family = "wasm"))]
pub mod eval;
pub mod face;
pub mod facetext;
pub mod fer;
pub mod files;
pub mod gan;
pub mod guidance;
pub mod nn;
pub mod pipeline;
pub mod plot;
pub mod scheduler;
#[cfg(not(target_family = "wasm"))]
pub mod synth;
pub mod text_encoder;
pub mod tokenizer;
pub mod train;
pub mod unet;
pub mod vae;
#[cfg(target_family = "wasm")]
pub mod web;
pub mod weights;

pub use error::{Error, Result};
pub use pipeline::{GenerateRequest, Pipeline};
