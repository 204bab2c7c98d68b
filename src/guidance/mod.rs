//! Guidance: how conditional and unconditional predictions are combined.

pub mod cfg;
