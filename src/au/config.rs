//! `au_adapter/config.json`: the AU adapter's shape (set, widths, tokens), its default branch
//! weight, and the calibration of requests to the scale of its training labels.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::catalog::AuSet;
use super::vector::AuVector;
use crate::error::{Error, Result};

/// `au_adapter/config.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuAdapterConfig {
    /// `fineface` or `opengraphau`.
    #[serde(default = "default_set")]
    pub au_set: String,
    /// Output width of the linear layer per token.
    #[serde(default = "default_hidden")]
    pub hidden_dim: usize,
    /// Prepend the raw AU values to each token.
    #[serde(default = "yes")]
    pub include_raw: bool,
    /// Number of AU tokens.
    #[serde(default = "one")]
    pub num_tokens: usize,
    /// Token width (the UNet's `cross_attention_dim`; `null`: take it from the UNet); tokens are
    /// zero-padded to it.
    #[serde(default)]
    pub cross_attention_dim: Option<usize>,
    /// Default `au_scale` of requests that do not set one.
    #[serde(default = "one_f")]
    pub default_au_scale: f64,
    /// Calibration of requests to the training labels: for each listed unit, the label
    /// intensity that a request of 5 (the FACS maximum) maps to; requests scale linearly,
    /// `v ↦ v · au_range[code] / 5`, before the encoder. A model trained on estimated AUs that
    /// rarely exceed 2 sets it (synfer-tiny: the labels' 99th percentile, `synfer data audit`),
    /// so that expression prototypes and sliders stay in the range the AU branch was trained
    /// on. Absent (FineFace's files): requests go to the encoder unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub au_range: Option<BTreeMap<String, f64>>,
}

fn default_set() -> String {
    "fineface".into()
}
fn default_hidden() -> usize {
    64
}
fn yes() -> bool {
    true
}
fn one() -> usize {
    1
}
fn one_f() -> f64 {
    1.0
}

impl AuAdapterConfig {
    /// FineFace's released configuration (the token width follows the UNet).
    pub fn fineface() -> Self {
        AuAdapterConfig {
            au_set: default_set(),
            hidden_dim: 64,
            include_raw: true,
            num_tokens: 1,
            cross_attention_dim: None,
            default_au_scale: 1.0,
            au_range: None,
        }
    }

    /// Parses and validates `config.json` bytes.
    pub fn from_json(bytes: &[u8], file: &str) -> Result<Self> {
        let cfg: AuAdapterConfig =
            serde_json::from_slice(bytes).map_err(|e| Error::json(file, e))?;
        cfg.validate(file)?;
        Ok(cfg)
    }

    /// Checks the set, the token count and, when known, that the token fits its width.
    pub fn validate(&self, file: &str) -> Result<()> {
        let set = self.set(file)?;
        if self.num_tokens == 0 {
            return Err(Error::config(file, "num_tokens", 0, "must be at least 1"));
        }
        if self.au_range.is_some() && set.binary {
            return Err(Error::config(
                file,
                "au_range",
                "a map",
                format!(
                    "the {} set is binary: there is no intensity to calibrate",
                    set.name
                ),
            ));
        }
        for (code, &top) in self.au_range.iter().flatten() {
            if set.index_of(code).is_none() {
                return Err(Error::config(
                    file,
                    "au_range",
                    format!("\"{code}\""),
                    format!("not a unit of the {} set", set.name),
                ));
            }
            if !(top > 0.0 && top <= f64::from(set.max)) {
                return Err(Error::config(
                    file,
                    "au_range",
                    format!("{code} = {top}"),
                    format!("must be in (0, {}]", set.max),
                ));
            }
        }
        if let Some(width) = self.cross_attention_dim {
            let used = self.token_payload(set);
            if used > width {
                return Err(Error::config(
                    file,
                    "hidden_dim",
                    self.hidden_dim,
                    format!("raw AUs + hidden ({used}) exceed cross_attention_dim {width}"),
                ));
            }
        }
        Ok(())
    }

    /// The AU set.
    pub fn set(&self, file: &str) -> Result<AuSet> {
        AuSet::by_name(&self.au_set).ok_or_else(|| {
            Error::config(
                file,
                "au_set",
                format!("\"{}\"", self.au_set),
                "supported: fineface, opengraphau",
            )
        })
    }

    /// A request's AU vector (FACS scale 0–5) in the scale of the training labels, by
    /// [`AuAdapterConfig::au_range`]; unchanged when the config has none.
    pub fn calibrate(&self, request: &AuVector) -> AuVector {
        let mut out = request.clone();
        for (code, &top) in self.au_range.iter().flatten() {
            if let Some(v) = request.get(code) {
                // In range by construction: v ≤ max and top ≤ max (validated, intensity sets).
                let _ = out.set(code, v * (top / 5.0) as f32);
            }
        }
        out
    }

    fn token_payload(&self, set: AuSet) -> usize {
        self.hidden_dim + if self.include_raw { set.codes.len() } else { 0 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::au::FINEFACE;

    #[test]
    fn au_range_maps_a_request_of_five_to_the_range() {
        let json = br#"{"au_range": {"AU12": 2.0, "AU6": 1.5}}"#;
        let cfg = AuAdapterConfig::from_json(json, "au_adapter/config.json").unwrap();
        let v = AuVector::parse(FINEFACE, "AU12=5,AU6=2,AU4=3").unwrap();
        let c = cfg.calibrate(&v);
        // 5 · 2/5 = 2, 2 · 1.5/5 = 0.6, unlisted AU4 unchanged.
        assert_eq!(c.get("AU12"), Some(2.0));
        assert!((c.get("AU6").unwrap() - 0.6).abs() < 1e-6);
        assert_eq!(c.get("AU4"), Some(3.0));
        assert_eq!(AuAdapterConfig::fineface().calibrate(&v), v);
        for (bad, needle) in [
            (&br#"{"au_range": {"AU7": 2.0}}"#[..], "AU7"),
            (&br#"{"au_range": {"AU12": 0.0}}"#[..], "AU12 = 0"),
            (&br#"{"au_range": {"AU12": 6.0}}"#[..], "AU12 = 6"),
            (
                &br#"{"au_set": "opengraphau", "hidden_dim": 16, "include_raw": false, "au_range": {"AU12": 1.0}}"#[..],
                "binary",
            ),
        ] {
            let err = AuAdapterConfig::from_json(bad, "au_adapter/config.json")
                .unwrap_err()
                .to_string();
            assert!(err.contains("au_range") && err.contains(needle), "{err}");
        }
    }
}
