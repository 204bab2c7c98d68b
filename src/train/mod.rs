//! Training with burn autodiff: the VAE, a CLIP text encoder from scratch, the UNet with its
//! AU branch, and fine-tuning of loaded folders.

pub mod adamw;
pub mod batches;
pub mod data;
pub mod denoiser;
pub mod diffusion;
pub mod ema;
pub mod export;
pub mod folder;
#[cfg(not(target_family = "wasm"))]
pub mod job;
pub mod lora;
pub mod model_files;
pub mod params;
pub mod run;
pub mod tensors;
pub mod vae;
