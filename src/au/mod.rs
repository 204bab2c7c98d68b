//! Facial action units and the AU adapter: the FACS catalogue, validated AU vectors, the
//! prototypical units of each expression, and the decoupled cross-attention adapter that
//! conditions the UNet on them (FineFace / IP-Adapter layout).
//!
//! - [`catalog`]: the action units and the sets models use (FineFace's 12, OpenGraphAU's 41);
//! - [`vector`]: an AU vector of one set, range-checked;
//! - [`prototype`]: each expression's prototypical units;
//! - [`config`]: the adapter's `config.json` and the calibration of requests;
//! - [`adapter`]: the adapter's files and its attachment to a UNet;
//! - [`encoder`]: AU vector → conditioning tokens;
//! - [`conditioning`]: requests → the tokens of one UNet batch, both guidance halves.
//!
//! The branch itself is a layer of the UNet's cross-attention
//! ([`AuBranch`](crate::unet::attention::AuBranch)), fed an
//! [`AuContext`](crate::unet::attention::AuContext).

pub mod adapter;
pub mod catalog;
pub mod conditioning;
pub mod config;
pub mod encoder;
pub mod prototype;
pub mod vector;

pub use adapter::{AdapterWeights, AuAdapter};
pub use catalog::{ACTION_UNITS, ActionUnit, AuSet, FINEFACE, OPENGRAPHAU};
pub use config::AuAdapterConfig;
pub use vector::AuVector;

/// The text of `synfer aus`: every unit of `set` (code, name, muscle, description) and the
/// expression prototypes in it.
pub fn describe(set: AuSet) -> String {
    use std::fmt::Write as _;
    let range = if set.binary {
        "0/1".to_string()
    } else {
        format!("0–{}", set.max)
    };
    let mut out = format!(
        "{} set: {} action units, values {range}\n\n",
        set.name,
        set.codes.len()
    );
    for unit in set.units() {
        let _ = writeln!(
            out,
            "{:<6} {:<22} {:<48} {}",
            unit.code, unit.name, unit.muscle, unit.description
        );
    }
    out.push_str("\nexpression prototypes (--expression):\n");
    for e in crate::expression::Expression::EIGHT {
        let spec = e.prototype(set).to_spec();
        let _ = writeln!(
            out,
            "{:<10} {}",
            e.name(),
            if spec.is_empty() {
                "(all zero)".into()
            } else {
                spec
            }
        );
    }
    out
}
