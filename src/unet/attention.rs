//! diffusers `Attention`, `BasicTransformerBlock` and `Transformer2DModel` (the SD variants).

use burn::module::Module;
use burn::tensor::Tensor;
use burn::tensor::activation::gelu;
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;

use crate::error::Result;
use crate::nn::{Conv2d, GroupNorm, LayerNorm, Linear};
use crate::weights::Weights;

/// Largest block of attention scores computed at once, in bytes (`[b·heads, rows, keys]` f32).
/// Queries go through the attention in row chunks under it, so SD-1.5 at 512² (4096 × 4096
/// scores per head) never needs a buffer of gigabytes: wgpu refuses one above the adapter's
/// `max_storage_buffer_binding_size` (128 MiB by default). Rows are independent, so chunking
/// does not change the result; small models never chunk.
pub const ATTENTION_SCORE_BUDGET: usize = 128 << 20;

/// Scaled dot-product attention over `[b, s, h·d]` projections, split into `heads`.
pub fn multi_head(q: Tensor<3>, k: Tensor<3>, v: Tensor<3>, heads: usize) -> Tensor<3> {
    multi_head_within(q, k, v, heads, ATTENTION_SCORE_BUDGET)
}

/// Query rows per chunk so that `[bh, rows, keys]` f32 scores fit in `budget` bytes (at least 1).
pub fn query_rows(bh: usize, keys: usize, budget: usize) -> usize {
    (budget / (4 * bh * keys).max(1)).max(1)
}

/// [`multi_head`] with an explicit score budget (bytes).
pub(crate) fn multi_head_within(
    q: Tensor<3>,
    k: Tensor<3>,
    v: Tensor<3>,
    heads: usize,
    budget: usize,
) -> Tensor<3> {
    let [b, sq, inner] = q.dims();
    let sk = k.dims()[1];
    let d = inner / heads;
    let q = q.reshape([b, sq, heads, d]).swap_dims(1, 2);
    let k = k.reshape([b, sk, heads, d]).swap_dims(1, 2);
    let v = v.reshape([b, sk, heads, d]).swap_dims(1, 2);
    let options = AttentionModuleOptions {
        scale: None,
        softcap: None,
        is_causal: false,
    };
    let rows = query_rows(b * heads, sk, budget);
    let out = if rows >= sq {
        attention(q, k, v, None, None, options)
    } else {
        let parts = q
            .split(rows, 2)
            .into_iter()
            .map(|qc| attention(qc, k.clone(), v.clone(), None, None, options))
            .collect();
        Tensor::cat(parts, 2)
    };
    out.swap_dims(1, 2).reshape([b, sq, inner])
}

/// The decoupled AU cross-attention branch of a cross-attention layer (FineFace / IP-Adapter
/// layout: `processor.au_to_k`, `processor.au_to_v`, no bias), loaded by
/// [`crate::au::adapter::attach_branches`].
#[derive(Module, Debug)]
pub struct AuBranch {
    /// Keys from the AU tokens.
    pub au_to_k: Linear,
    /// Values from the AU tokens.
    pub au_to_v: Linear,
}

/// AU tokens for one UNet call: `[b, tokens, cross_attention_dim]` and the branch weight.
#[derive(Debug, Clone)]
pub struct AuContext {
    /// Encoded AU tokens, one row per batch item.
    pub tokens: Tensor<3>,
    /// `au_scale`: 0 disables the branch's contribution.
    pub scale: f64,
}

/// diffusers `Attention` with `to_q/to_k/to_v` (no bias) and `to_out.0` (bias), plus an
/// optional AU branch.
///
/// `upcast_attention` only changes precision in half-precision runs; we compute in f32.
#[derive(Module, Debug)]
pub struct Attention {
    /// Query projection.
    pub to_q: Linear,
    /// Key projection.
    pub to_k: Linear,
    /// Value projection.
    pub to_v: Linear,
    /// Output projection (`to_out.0`).
    pub to_out: Linear,
    /// AU branch (cross-attention layers of a UNet with an AU adapter).
    pub au: Option<AuBranch>,
    /// Number of heads.
    pub heads: usize,
}

impl Attention {
    /// Loads an attention layer: queries of width `dim`, keys/values from `context_dim`.
    pub fn load(
        w: &Weights,
        dim: usize,
        context_dim: usize,
        heads: usize,
        head_dim: usize,
        qkv_bias: bool,
    ) -> Result<Self> {
        let inner = heads * head_dim;
        Ok(Attention {
            to_q: Linear::load(&w.pp("to_q"), dim, inner, qkv_bias)?,
            to_k: Linear::load(&w.pp("to_k"), context_dim, inner, qkv_bias)?,
            to_v: Linear::load(&w.pp("to_v"), context_dim, inner, qkv_bias)?,
            to_out: Linear::load(&w.pp("to_out").pp(0), inner, dim, true)?,
            au: None,
            heads,
        })
    }

    /// Width of the key/value input (`cross_attention_dim` for cross-attention).
    pub fn context_dim(&self) -> usize {
        self.to_k.weight.dims()[0]
    }

    /// Width of the projected queries/keys/values (`heads × head_dim`).
    pub fn inner_dim(&self) -> usize {
        self.to_k.weight.dims()[1]
    }

    /// `x`: `[b, s, dim]`; `context`: `[b, t, context_dim]` or `None` for self-attention;
    /// `au`: AU tokens, used only if this layer has an AU branch:
    /// `softmax(q kᵀ/√d) v + au_scale · softmax(q k_auᵀ/√d) v_au`, per head, before `to_out`.
    pub fn forward(
        &self,
        x: Tensor<3>,
        context: Option<Tensor<3>>,
        au: Option<&AuContext>,
    ) -> Tensor<3> {
        let context = context.unwrap_or_else(|| x.clone());
        let q = self.to_q.forward(x);
        let k = self.to_k.forward(context.clone());
        let v = self.to_v.forward(context);
        let mut out = multi_head(q.clone(), k, v, self.heads);
        if let (Some(branch), Some(au)) = (&self.au, au) {
            let k_au = branch.au_to_k.forward(au.tokens.clone());
            let v_au = branch.au_to_v.forward(au.tokens.clone());
            out = out + multi_head(q, k_au, v_au, self.heads) * au.scale;
        }
        self.to_out.forward(out)
    }
}

/// GEGLU feed-forward: `ff.net.0.proj` (→ 2·inner), gate with GELU, `ff.net.2`.
#[derive(Module, Debug)]
pub struct FeedForward {
    /// `net.0.proj`.
    pub proj: Linear,
    /// `net.2`.
    pub out: Linear,
}

impl FeedForward {
    fn load(w: &Weights, dim: usize) -> Result<Self> {
        let inner = 4 * dim;
        Ok(FeedForward {
            proj: Linear::load(&w.pp("net").pp(0).pp("proj"), dim, 2 * inner, true)?,
            out: Linear::load(&w.pp("net").pp(2), inner, dim, true)?,
        })
    }

    fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let h = self.proj.forward(x);
        let [b, s, two_inner] = h.dims();
        let inner = two_inner / 2;
        let hidden = h.clone().slice([0..b, 0..s, 0..inner]);
        let gate = h.slice([0..b, 0..s, inner..two_inner]);
        self.out.forward(hidden * gelu(gate))
    }
}

/// Self-attention, cross-attention and GEGLU MLP, each pre-LayerNorm with a residual.
#[derive(Module, Debug)]
pub struct BasicTransformerBlock {
    /// Norm before `attn1`.
    pub norm1: LayerNorm,
    /// Self-attention (cross-attention when `only_cross_attention`).
    pub attn1: Attention,
    /// Norm before `attn2`.
    pub norm2: LayerNorm,
    /// Cross-attention on the text context.
    pub attn2: Attention,
    /// Norm before `ff`.
    pub norm3: LayerNorm,
    /// Feed-forward.
    pub ff: FeedForward,
    /// `attn1` attends to the context too.
    pub only_cross_attention: bool,
}

/// Shape parameters of one `Transformer2DModel`.
#[derive(Debug, Clone, Copy)]
pub struct TransformerSpec {
    /// Channels of the feature map.
    pub channels: usize,
    /// Heads.
    pub heads: usize,
    /// Number of `BasicTransformerBlock`s.
    pub layers: usize,
    /// Width of the text context.
    pub context_dim: usize,
    /// GroupNorm groups.
    pub groups: usize,
    /// Linear (`true`) or 1×1-conv (`false`) `proj_in`/`proj_out`.
    pub linear_projection: bool,
    /// `attn1` is cross-attention too.
    pub only_cross_attention: bool,
}

impl BasicTransformerBlock {
    fn load(w: &Weights, spec: &TransformerSpec) -> Result<Self> {
        let dim = spec.channels;
        let head_dim = dim / spec.heads;
        let attn1_context = if spec.only_cross_attention {
            spec.context_dim
        } else {
            dim
        };
        Ok(BasicTransformerBlock {
            norm1: LayerNorm::load(&w.pp("norm1"), dim, 1e-5)?,
            attn1: Attention::load(
                &w.pp("attn1"),
                dim,
                attn1_context,
                spec.heads,
                head_dim,
                false,
            )?,
            norm2: LayerNorm::load(&w.pp("norm2"), dim, 1e-5)?,
            attn2: Attention::load(
                &w.pp("attn2"),
                dim,
                spec.context_dim,
                spec.heads,
                head_dim,
                false,
            )?,
            norm3: LayerNorm::load(&w.pp("norm3"), dim, 1e-5)?,
            ff: FeedForward::load(&w.pp("ff"), dim)?,
            only_cross_attention: spec.only_cross_attention,
        })
    }

    fn forward(&self, x: Tensor<3>, context: Tensor<3>, au: Option<&AuContext>) -> Tensor<3> {
        let self_context = self.only_cross_attention.then(|| context.clone());
        let x = x.clone()
            + self
                .attn1
                .forward(self.norm1.forward(x), self_context, None);
        let x = x.clone() + self.attn2.forward(self.norm2.forward(x), Some(context), au);
        x.clone() + self.ff.forward(self.norm3.forward(x))
    }
}

/// Projection in/out of the transformer: 1×1 conv or linear.
#[derive(Module, Debug)]
pub enum Projection {
    /// `use_linear_projection = false` (SD 1.x).
    Conv(Conv2d),
    /// `use_linear_projection = true` (SD 2.x).
    Linear(Linear),
}

/// `Transformer2DModel`: GroupNorm, `proj_in`, transformer blocks, `proj_out`, residual.
#[derive(Module, Debug)]
pub struct Transformer2DModel {
    /// Input GroupNorm (eps 1e-6).
    pub norm: GroupNorm,
    /// Input projection.
    pub proj_in: Projection,
    /// The blocks.
    pub transformer_blocks: Vec<BasicTransformerBlock>,
    /// Output projection.
    pub proj_out: Projection,
}

impl Transformer2DModel {
    /// Loads a transformer with the given spec.
    pub fn load(w: &Weights, spec: &TransformerSpec) -> Result<Self> {
        let c = spec.channels;
        let projection = |name: &str| -> Result<Projection> {
            Ok(if spec.linear_projection {
                Projection::Linear(Linear::load(&w.pp(name), c, c, true)?)
            } else {
                Projection::Conv(Conv2d::load(&w.pp(name), c, c, 1, 1)?)
            })
        };
        Ok(Transformer2DModel {
            norm: GroupNorm::load(&w.pp("norm"), spec.groups, c, 1e-6)?,
            proj_in: projection("proj_in")?,
            transformer_blocks: (0..spec.layers)
                .map(|i| BasicTransformerBlock::load(&w.pp("transformer_blocks").pp(i), spec))
                .collect::<Result<_>>()?,
            proj_out: projection("proj_out")?,
        })
    }

    /// `[b, c, h, w]` with text context `[b, t, d]` (and AU tokens) → `[b, c, h, w]`.
    pub fn forward(&self, x: Tensor<4>, context: Tensor<3>, au: Option<&AuContext>) -> Tensor<4> {
        let [b, c, h, w] = x.dims();
        let residual = x.clone();
        let x = self.norm.forward(x);
        let to_tokens = |t: Tensor<4>| t.reshape([b, c, h * w]).swap_dims(1, 2);
        let mut tokens = match &self.proj_in {
            Projection::Conv(conv) => to_tokens(conv.forward(x)),
            Projection::Linear(lin) => lin.forward(to_tokens(x)),
        };
        for block in &self.transformer_blocks {
            tokens = block.forward(tokens, context.clone(), au);
        }
        let to_map = |t: Tensor<3>| t.swap_dims(1, 2).reshape([b, c, h, w]);
        let out = match &self.proj_out {
            Projection::Conv(conv) => conv.forward(to_map(tokens)),
            Projection::Linear(lin) => to_map(lin.forward(tokens)),
        };
        out + residual
    }
}

#[cfg(test)]
mod tests {
    use burn::tensor::activation::softmax;
    use burn::tensor::{Device, Distribution};

    use super::*;

    fn close(a: Tensor<3>, b: Tensor<3>) -> f32 {
        (a - b).abs().max().into_scalar::<f32>()
    }

    #[test]
    fn query_chunks_match_the_textbook_formula() {
        let device = Device::flex();
        let (b, sq, sk, heads, d) = (2, 37, 11, 4, 8);
        let q = Tensor::<3>::random([b, sq, heads * d], Distribution::Normal(0.0, 1.0), &device);
        let k = Tensor::<3>::random([b, sk, heads * d], Distribution::Normal(0.0, 1.0), &device);
        let v = Tensor::<3>::random([b, sk, heads * d], Distribution::Normal(0.0, 1.0), &device);
        // softmax(q kᵀ / √d) v per head, from matmuls.
        let split = |x: Tensor<3>, s: usize| x.reshape([b, s, heads, d]).swap_dims(1, 2);
        let scores =
            split(q.clone(), sq).matmul(split(k.clone(), sk).swap_dims(2, 3)) / (d as f64).sqrt();
        let reference = softmax(scores, 3)
            .matmul(split(v.clone(), sk))
            .swap_dims(1, 2)
            .reshape([b, sq, heads * d]);
        // 5 query rows per chunk: 37 rows → 8 chunks, the last of 2.
        let budget = 4 * b * heads * sk * 5;
        assert_eq!(query_rows(b * heads, sk, budget), 5);
        let chunked = multi_head_within(q.clone(), k.clone(), v.clone(), heads, budget);
        let whole = multi_head_within(q, k, v, heads, usize::MAX);
        assert!(close(chunked.clone(), reference) < 1e-5);
        assert!(close(chunked, whole) < 1e-6);
    }
}
