//! CLIP text transformer (transformers' `CLIPTextModel`), field names = checkpoint keys
//! (`text_model.encoder.layers.N.self_attn.q_proj`, ...).

use burn::module::{Module, Param};
use burn::tensor::activation::{gelu, sigmoid};
use burn::tensor::module::{attention, embedding};
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Int, Tensor};
use serde::Deserialize;

use crate::error::{Error, Result};
use crate::nn::{LayerNorm, Linear};
use crate::weights::{TensorStore, Weights, keys};

/// `text_encoder/config.json` (the keys we read; others are ignored as transformers does).
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
pub struct ClipTextConfig {
    /// Vocabulary size (49408 for CLIP).
    #[serde(default = "default_vocab")]
    pub vocab_size: usize,
    /// Width of the residual stream.
    #[serde(default = "default_hidden")]
    pub hidden_size: usize,
    /// Width of the MLP.
    #[serde(default = "default_intermediate")]
    pub intermediate_size: usize,
    /// Number of transformer layers.
    #[serde(default = "default_layers")]
    pub num_hidden_layers: usize,
    /// Attention heads per layer.
    #[serde(default = "default_heads")]
    pub num_attention_heads: usize,
    /// Context length (77).
    #[serde(default = "default_positions")]
    pub max_position_embeddings: usize,
    /// `quick_gelu` (SD 1.x) or `gelu` (SD 2.x).
    #[serde(default = "default_act")]
    pub hidden_act: String,
    /// LayerNorm epsilon.
    #[serde(default = "default_ln_eps")]
    pub layer_norm_eps: f64,
    /// diffusers passes a padding mask when set; SD checkpoints leave it unset.
    #[serde(default)]
    pub use_attention_mask: bool,
}

fn default_vocab() -> usize {
    49408
}
fn default_hidden() -> usize {
    512
}
fn default_intermediate() -> usize {
    2048
}
fn default_layers() -> usize {
    12
}
fn default_heads() -> usize {
    8
}
fn default_positions() -> usize {
    77
}
fn default_act() -> String {
    "quick_gelu".into()
}
fn default_ln_eps() -> f64 {
    1e-5
}

/// Activation of the CLIP MLP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClipActivation {
    /// `x · σ(1.702 x)`.
    QuickGelu,
    /// Exact (erf) GELU.
    Gelu,
}

impl ClipTextConfig {
    /// Parses and validates `config.json` bytes; `file` names the source in errors.
    pub fn from_json(bytes: &[u8], file: &str) -> Result<Self> {
        let cfg: ClipTextConfig =
            serde_json::from_slice(bytes).map_err(|e| Error::json(file, e))?;
        cfg.activation(file)?;
        if cfg.use_attention_mask {
            return Err(Error::config(
                file,
                "use_attention_mask",
                true,
                "padding-masked text encoders are not supported (SD 1.x/2.x use the causal mask only)",
            ));
        }
        Error::check_positive(file, "layer_norm_eps", cfg.layer_norm_eps)?;
        for (key, v) in [
            ("vocab_size", cfg.vocab_size),
            ("hidden_size", cfg.hidden_size),
            ("max_position_embeddings", cfg.max_position_embeddings),
        ] {
            if v == 0 {
                return Err(Error::config(file, key, v, "must be at least 1"));
            }
        }
        if cfg.num_attention_heads == 0 || !cfg.hidden_size.is_multiple_of(cfg.num_attention_heads)
        {
            return Err(Error::config(
                file,
                "num_attention_heads",
                cfg.num_attention_heads,
                format!("must divide hidden_size {}", cfg.hidden_size),
            ));
        }
        Ok(cfg)
    }

    fn activation(&self, file: &str) -> Result<ClipActivation> {
        match self.hidden_act.as_str() {
            "quick_gelu" => Ok(ClipActivation::QuickGelu),
            "gelu" => Ok(ClipActivation::Gelu),
            other => Err(Error::config(
                file,
                "hidden_act",
                format!("\"{other}\""),
                "supported: quick_gelu, gelu",
            )),
        }
    }
}

/// Multi-head self-attention with a causal mask.
#[derive(Module, Debug)]
pub struct ClipAttention {
    /// Query projection.
    pub q_proj: Linear,
    /// Key projection.
    pub k_proj: Linear,
    /// Value projection.
    pub v_proj: Linear,
    /// Output projection.
    pub out_proj: Linear,
    /// Number of heads.
    pub heads: usize,
}

impl ClipAttention {
    fn load(w: &Weights, d: usize, heads: usize) -> Result<Self> {
        Ok(ClipAttention {
            q_proj: Linear::load(&w.pp("q_proj"), d, d, true)?,
            k_proj: Linear::load(&w.pp("k_proj"), d, d, true)?,
            v_proj: Linear::load(&w.pp("v_proj"), d, d, true)?,
            out_proj: Linear::load(&w.pp("out_proj"), d, d, true)?,
            heads,
        })
    }

    fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let [b, s, d] = x.dims();
        let split = |t: Tensor<3>| {
            t.reshape([b, s, self.heads, d / self.heads])
                .swap_dims(1, 2)
        };
        let q = split(self.q_proj.forward(x.clone()));
        let k = split(self.k_proj.forward(x.clone()));
        let v = split(self.v_proj.forward(x));
        let options = AttentionModuleOptions {
            scale: None,
            softcap: None,
            is_causal: true,
        };
        let out = attention(q, k, v, None, None, options)
            .swap_dims(1, 2)
            .reshape([b, s, d]);
        self.out_proj.forward(out)
    }
}

/// `fc1 → act → fc2`.
#[derive(Module, Debug)]
pub struct ClipMlp {
    /// Up projection.
    pub fc1: Linear,
    /// Down projection.
    pub fc2: Linear,
    /// `true`: quick GELU (`x · σ(1.702 x)`); `false`: exact GELU.
    pub quick_gelu: bool,
}

impl ClipMlp {
    fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let h = self.fc1.forward(x);
        let h = if self.quick_gelu {
            h.clone() * sigmoid(h * 1.702)
        } else {
            gelu(h)
        };
        self.fc2.forward(h)
    }
}

/// One pre-norm transformer layer.
#[derive(Module, Debug)]
pub struct ClipEncoderLayer {
    /// Self-attention.
    pub self_attn: ClipAttention,
    /// Norm before attention.
    pub layer_norm1: LayerNorm,
    /// MLP.
    pub mlp: ClipMlp,
    /// Norm before the MLP.
    pub layer_norm2: LayerNorm,
}

impl ClipEncoderLayer {
    fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let x = x.clone() + self.self_attn.forward(self.layer_norm1.forward(x));
        x.clone() + self.mlp.forward(self.layer_norm2.forward(x))
    }
}

/// `CLIPTextModel`: token + position embeddings, causal transformer, final LayerNorm.
#[derive(Module, Debug)]
pub struct ClipTextModel {
    /// `[vocab, d]`.
    pub token_embedding: Param<Tensor<2>>,
    /// `[positions, d]`.
    pub position_embedding: Param<Tensor<2>>,
    /// Transformer layers.
    pub layers: Vec<ClipEncoderLayer>,
    /// Final LayerNorm.
    pub final_layer_norm: LayerNorm,
}

impl ClipTextModel {
    /// Loads from a store holding `text_model.*` keys; every key must be consumed.
    pub fn load(
        store: &TensorStore,
        cfg: &ClipTextConfig,
        device: &burn::tensor::Device,
    ) -> Result<Self> {
        for key in keys::IGNORED_BUFFERS {
            store.ignore(key);
            store.ignore(key.trim_start_matches("text_model."));
        }
        let act = cfg.activation(store.name())?;
        // Hub checkpoints prefix every key with `text_model.`; transformers 5 saves without it.
        let root = if store.contains("text_model.final_layer_norm.weight") {
            store.root(device).pp("text_model")
        } else {
            store.root(device)
        };
        let d = cfg.hidden_size;
        let emb = root.pp("embeddings");
        let token_embedding = emb
            .pp("token_embedding")
            .tensor("weight", [cfg.vocab_size, d])?;
        let position_embedding = emb
            .pp("position_embedding")
            .tensor("weight", [cfg.max_position_embeddings, d])?;
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| {
                let l = root.pp("encoder").pp("layers").pp(i);
                Ok(ClipEncoderLayer {
                    self_attn: ClipAttention::load(&l.pp("self_attn"), d, cfg.num_attention_heads)?,
                    layer_norm1: LayerNorm::load(&l.pp("layer_norm1"), d, cfg.layer_norm_eps)?,
                    mlp: ClipMlp {
                        fc1: Linear::load(&l.pp("mlp").pp("fc1"), d, cfg.intermediate_size, true)?,
                        fc2: Linear::load(&l.pp("mlp").pp("fc2"), cfg.intermediate_size, d, true)?,
                        quick_gelu: act == ClipActivation::QuickGelu,
                    },
                    layer_norm2: LayerNorm::load(&l.pp("layer_norm2"), d, cfg.layer_norm_eps)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let final_layer_norm =
            LayerNorm::load(&root.pp("final_layer_norm"), d, cfg.layer_norm_eps)?;
        store.finish()?;
        Ok(ClipTextModel {
            token_embedding: Param::from_tensor(token_embedding),
            position_embedding: Param::from_tensor(position_embedding),
            layers,
            final_layer_norm,
        })
    }

    /// Maximum sequence length.
    pub fn max_positions(&self) -> usize {
        self.position_embedding.dims()[0]
    }

    /// `[b, s]` token ids → `last_hidden_state` `[b, s, d]`.
    pub fn forward(&self, ids: Tensor<2, Int>) -> Tensor<3> {
        self.forward_skip(ids, 0)
    }

    /// Like [`forward`](Self::forward) but stops `clip_skip` layers early (diffusers'
    /// `clip_skip`: the final LayerNorm is still applied).
    pub fn forward_skip(&self, ids: Tensor<2, Int>, clip_skip: usize) -> Tensor<3> {
        let [_, s] = ids.dims();
        let d = self.position_embedding.dims()[1];
        let tokens = embedding(self.token_embedding.val(), ids);
        let positions = self
            .position_embedding
            .val()
            .slice([0..s, 0..d])
            .unsqueeze::<3>();
        let mut x = tokens + positions;
        let n = self.layers.len().saturating_sub(clip_skip);
        for layer in &self.layers[..n] {
            x = layer.forward(x);
        }
        self.final_layer_norm.forward(x)
    }
}
