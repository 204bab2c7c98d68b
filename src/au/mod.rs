//! Facial action units: the FACS catalogue, validated AU vectors, expression prototypes and the
//! AU encoder that turns a vector into a conditioning token.

pub mod catalog;
pub mod encoder;
pub mod expression;
pub mod vector;

pub use catalog::{ACTION_UNITS, ActionUnit, AuSet, FINEFACE, OPENGRAPHAU};
pub use expression::Expression;
pub use vector::AuVector;
