//! Guidance: how conditional and unconditional predictions are combined, and semantic
//! guidance of the text embedding by an expression classifier.

pub mod cfg;
pub mod semantic;
