//! The AU encoder (FineFace layout) and the `au_adapter/` component that carries it.
//!
//! `x → concat(x, Linear(n_aus → hidden·tokens)(x))`, zero-padded to the cross-attention width,
//! split into `num_tokens` tokens. FineFace: 12 AUs, hidden 64, raw AUs included, one token.
//! SynFER's variant: 41 binary AUs, `include_raw = false`, `hidden = cross_attention_dim`.

use std::collections::BTreeMap;

use burn::module::Module;
use burn::tensor::{Device, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use super::catalog::AuSet;
use super::vector::AuVector;
use crate::error::{Error, Result};
use crate::nn::Linear;
use crate::weights::Weights;

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

/// The AU encoder: key `au_encoder.weight` `[hidden·tokens, n_aus]`, `au_encoder.bias`.
#[derive(Module, Debug)]
pub struct AuEncoder {
    /// The linear layer.
    pub au_encoder: Linear,
    /// AUs in.
    pub n_aus: usize,
    /// Linear width per token.
    pub hidden: usize,
    /// Tokens out.
    pub tokens: usize,
    /// Raw AUs prepended.
    pub include_raw: bool,
    /// Token width.
    pub width: usize,
}

impl AuEncoder {
    /// Loads from `au_encoder.*` under `w`.
    pub fn load(w: &Weights, cfg: &AuAdapterConfig, set: AuSet) -> Result<Self> {
        let n = set.codes.len();
        Ok(AuEncoder {
            au_encoder: Linear::load(
                &w.pp("au_encoder"),
                n,
                cfg.hidden_dim * cfg.num_tokens,
                true,
            )?,
            n_aus: n,
            hidden: cfg.hidden_dim,
            tokens: cfg.num_tokens,
            include_raw: cfg.include_raw,
            width: cfg.cross_attention_dim.unwrap_or(n + cfg.hidden_dim),
        })
    }

    /// `[b, n_aus]` → `[b, tokens, width]`.
    pub fn forward(&self, aus: Tensor<2>) -> Tensor<3> {
        let [b, n] = aus.dims();
        let (t, h) = (self.tokens, self.hidden);
        let projected = self.au_encoder.forward(aus.clone()).reshape([b, t, h]);
        let mut parts = Vec::with_capacity(3);
        if self.include_raw {
            parts.push(aus.reshape([b, 1, n]).expand([b, t, n]));
        }
        parts.push(projected);
        let used = h + if self.include_raw { n } else { 0 };
        if used < self.width {
            parts.push(Tensor::zeros(
                [b, t, self.width - used],
                &self.au_encoder.weight.device(),
            ));
        }
        Tensor::cat(parts, 2)
    }

    /// Encodes AU vectors (all of this encoder's set) into tokens on `device`.
    pub fn encode(&self, vectors: &[&AuVector], device: &Device) -> Tensor<3> {
        let data: Vec<f32> = vectors
            .iter()
            .flat_map(|v| v.values().iter().copied())
            .collect();
        let x = Tensor::<2>::from_data(TensorData::new(data, [vectors.len(), self.n_aus]), device);
        self.forward(x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::au::{FINEFACE, OPENGRAPHAU};
    use crate::weights::TensorStore;

    fn values(t: Tensor<3>) -> Vec<f32> {
        t.into_data().try_into_vec_as::<f32>().unwrap()
    }

    #[test]
    fn synfer_variant_is_the_same_module_with_another_config() {
        // SynFER: 41 binary AUs → Linear(41 → d), one token, no raw AUs, no padding.
        let device = Device::flex();
        let cfg = AuAdapterConfig {
            au_set: "opengraphau".into(),
            hidden_dim: 16,
            include_raw: false,
            num_tokens: 1,
            cross_attention_dim: Some(16),
            default_au_scale: 1.0,
            au_range: None,
        };
        cfg.validate("test").unwrap();
        let store = TensorStore::synthetic("test", 3);
        let enc = AuEncoder::load(&store.root(&device), &cfg, OPENGRAPHAU).unwrap();
        let v = AuVector::parse(OPENGRAPHAU, "AU12=1,AUL6=1").unwrap();
        let tokens = enc.encode(&[&v], &device);
        assert_eq!(tokens.dims(), [1, 1, 16]);
        let x = Tensor::<2>::from_data(TensorData::new(v.values().to_vec(), [1, 41]), &device);
        let direct = enc.au_encoder.forward(x).reshape([1, 1, 16]);
        assert_eq!(values(tokens), values(direct));
    }

    #[test]
    fn fineface_layout_is_raw_then_hidden_then_zeros() {
        let device = Device::flex();
        let cfg = AuAdapterConfig {
            hidden_dim: 3,
            num_tokens: 2,
            cross_attention_dim: Some(20),
            ..AuAdapterConfig::fineface()
        };
        let store = TensorStore::synthetic("test", 5);
        let enc = AuEncoder::load(&store.root(&device), &cfg, FINEFACE).unwrap();
        let v = AuVector::parse(FINEFACE, "AU1=2,AU26=5").unwrap();
        let got = values(enc.encode(&[&v], &device));
        assert_eq!(got.len(), 2 * 20);
        for token in got.chunks(20) {
            assert_eq!(&token[..12], v.values());
            assert!(token[12..15].iter().any(|x| *x != 0.0));
            assert_eq!(&token[15..], &[0.0; 5]);
        }
        // Too wide for the token: refused with the key named.
        let bad = AuAdapterConfig {
            hidden_dim: 9,
            cross_attention_dim: Some(20),
            ..AuAdapterConfig::fineface()
        };
        assert!(
            bad.validate("cfg.json")
                .unwrap_err()
                .to_string()
                .contains("hidden_dim")
        );
    }

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
