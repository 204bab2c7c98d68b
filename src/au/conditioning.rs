//! From requests to the AU branch's input: each request's AU vector (its expression's
//! prototype, then its explicit units), calibrated to the adapter's training scale and encoded
//! into tokens for one UNet batch; under classifier-free guidance the unconditional half gets
//! all-zero AUs, as FineFace trains it.

use std::collections::BTreeMap;

use burn::tensor::Device;

use super::adapter::AuAdapter;
use super::vector::AuVector;
use crate::error::{Error, Result};
use crate::expression::Expression;
use crate::unet::attention::AuContext;

/// What one request asks of the AU branch.
#[derive(Debug, Clone, Copy)]
pub struct AuRequest<'a> {
    /// Target expression: its prototype is the starting vector.
    pub expression: Option<Expression>,
    /// Explicit units over the prototype (`{"AU12": 4}`).
    pub aus: Option<&'a BTreeMap<String, f32>>,
    /// Weight of the branch (default: the adapter's).
    pub au_scale: Option<f64>,
    /// Images of the batch this request contributes.
    pub images: usize,
}

impl AuRequest<'_> {
    fn asks_for_aus(&self) -> bool {
        self.aus.is_some_and(|a| !a.is_empty()) || self.au_scale.is_some()
    }
}

/// The AU vector of every request and the tokens of the whole batch
/// (`[zeros × n; aus_r × n_r …]` with `cfg`, `[aus_r × n_r …]` without). The branch weight is
/// the first request's (a batch shares it). A model without an adapter gets `(None…, None)`,
/// and a request for units on it is an error.
pub fn condition(
    adapter: Option<&AuAdapter>,
    requests: &[AuRequest],
    cfg: bool,
    device: &Device,
) -> Result<(Vec<Option<AuVector>>, Option<AuContext>)> {
    let Some(adapter) = adapter else {
        if requests.iter().any(AuRequest::asks_for_aus) {
            return Err(Error::request(
                "aus",
                "this model has no AU adapter; load one (au_adapter/ or --adapter) to use AUs",
            ));
        }
        return Ok((vec![None; requests.len()], None));
    };
    let mut vectors = Vec::with_capacity(requests.len());
    for req in requests {
        let mut aus = match req.expression {
            Some(e) => e.prototype(adapter.set),
            None => AuVector::zeros(adapter.set),
        };
        for (code, value) in req.aus.into_iter().flatten() {
            aus.set(code, *value)?;
        }
        vectors.push(aus);
    }
    let n: usize = requests.iter().map(|r| r.images).sum();
    let zeros = AuVector::zeros(adapter.set);
    let mut rows: Vec<&AuVector> = Vec::with_capacity(2 * n);
    if cfg {
        rows.extend(std::iter::repeat_n(&zeros, n));
    }
    // The encoder sees the requests in the scale of the training labels.
    let calibrated: Vec<AuVector> = vectors
        .iter()
        .map(|v| adapter.config.calibrate(v))
        .collect();
    for (r, v) in requests.iter().zip(&calibrated) {
        rows.extend(std::iter::repeat_n(v, r.images));
    }
    let tokens = adapter.encoder.encode(&rows, device);
    let scale = requests
        .first()
        .and_then(|r| r.au_scale)
        .unwrap_or(adapter.config.default_au_scale);
    Ok((
        vectors.into_iter().map(Some).collect(),
        Some(AuContext { tokens, scale }),
    ))
}
