//! The AU encoder (FineFace layout): the part of the AU adapter that turns an AU vector into
//! conditioning tokens.
//!
//! `x → concat(x, Linear(n_aus → hidden·tokens)(x))`, zero-padded to the cross-attention width,
//! split into `num_tokens` tokens. FineFace: 12 AUs, hidden 64, raw AUs included, one token.
//! SynFER's variant: 41 binary AUs, `include_raw = false`, `hidden = cross_attention_dim`.

use burn::module::Module;
use burn::tensor::{Device, Tensor, TensorData};

use super::catalog::AuSet;
use super::config::AuAdapterConfig;
use super::vector::AuVector;
use crate::error::Result;
use crate::nn::Linear;
use crate::weights::Weights;

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
}
