//! Training with burn autodiff: the VAE, a CLIP text encoder from scratch, the UNet with its
//! AU branch, and fine-tuning of loaded folders.

pub mod adamw;
pub mod data;
pub mod diffusion;
pub mod ema;
pub mod export;
pub mod lora;
pub mod params;
pub mod run;
pub mod schedule;
pub mod tensors;
pub mod vae;
