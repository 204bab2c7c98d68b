"""Reference AU adapter in PyTorch (FineFace layout), shared by the fixture script
(tools/make_au_fixtures.py), the export check (tools/train/check_export.py) and the PyTorch
trainer (tools/train/torch_train.py): the AU encoder and the decoupled cross-attention processor
whose `au_to_k` / `au_to_v` weights are the keys of synfer's `au_adapter/` files.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention
from torch import nn

# FineFace's 12 action units, in the order of its AU vectors.
FINEFACE_AUS = ["AU1", "AU2", "AU4", "AU5", "AU6", "AU9", "AU12", "AU15", "AU17", "AU20", "AU25", "AU26"]


class AUEncoder(nn.Module):
    """x [b, n_aus] -> tokens [b, T, width]: per token concat(x if include_raw, Linear(x)[token]), zero-padded.

    With T = 1 this is FineFace's `AUEncoder.forward` exactly: cat([x, au_encoder(x), zeros]).reshape(-1, 1, width).
    """

    def __init__(self, hidden: int, width: int, num_tokens: int = 1, include_raw: bool = True, n_aus: int = len(FINEFACE_AUS)):
        super().__init__()
        self.au_encoder = nn.Linear(n_aus, hidden * num_tokens)
        self.n_aus, self.hidden, self.width, self.num_tokens, self.include_raw = n_aus, hidden, width, num_tokens, include_raw
        assert hidden + (n_aus if include_raw else 0) <= width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t = x.shape[0], self.num_tokens
        parts = []
        if self.include_raw:
            parts.append(x[:, None, :].expand(b, t, self.n_aus))
        parts.append(self.au_encoder(x).reshape(b, t, self.hidden))
        used = self.hidden + (self.n_aus if self.include_raw else 0)
        if used < self.width:
            parts.append(x.new_zeros(b, t, self.width - used))
        return torch.cat(parts, dim=-1)


class AUAttnProcessor(nn.Module):
    """Cross-attention with a decoupled AU branch.

    out = to_out( SDPA(q, k, v) + au_scale * SDPA(q, au_to_k(au), au_to_v(au)) ), per head.
    The text path is diffusers' AttnProcessor2_0 op for op, so au_scale = 0 reproduces a plain UNet bit for bit.
    """

    def __init__(self, cross_dim: int, inner_dim: int):
        super().__init__()
        self.au_to_k = nn.Linear(cross_dim, inner_dim, bias=False)
        self.au_to_v = nn.Linear(cross_dim, inner_dim, bias=False)

    def __call__(self, attn: Attention, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None,
                 au_tokens=None, au_scale=1.0):
        assert attention_mask is None and attn.spatial_norm is None and attn.group_norm is None
        assert not attn.norm_cross and attn.norm_q is None and attn.norm_k is None
        assert hidden_states.ndim == 3 and encoder_hidden_states is not None
        b = hidden_states.shape[0]
        query = attn.to_q(hidden_states)
        key = attn.to_k(encoder_hidden_states)
        value = attn.to_v(encoder_hidden_states)
        inner = key.shape[-1]
        d = inner // attn.heads

        def heads(x):
            return x.view(b, -1, attn.heads, d).transpose(1, 2)

        query = heads(query)
        out = F.scaled_dot_product_attention(query, heads(key), heads(value), attn_mask=None, dropout_p=0.0, is_causal=False)
        if au_tokens is not None:
            assert au_tokens.shape[0] == b, (au_tokens.shape, b)
            au_k = heads(self.au_to_k(au_tokens))
            au_v = heads(self.au_to_v(au_tokens))
            au_out = F.scaled_dot_product_attention(query, au_k, au_v, attn_mask=None, dropout_p=0.0, is_causal=False)
            out = out + au_scale * au_out
        out = out.transpose(1, 2).reshape(b, -1, attn.heads * d).to(query.dtype)
        out = attn.to_out[0](out)
        out = attn.to_out[1](out)
        if attn.residual_connection:
            out = out + hidden_states
        return out / attn.rescale_output_factor


def attn2_layers(unet) -> dict[str, Attention]:
    """`<path>.attn2` -> Attention, in `unet.attn_processors` order."""
    mods = dict(unet.named_modules())
    out = {}
    for name in unet.attn_processors:
        if name.endswith("attn2.processor"):
            path = name[: -len(".processor")]
            out[path] = mods[path]
    return out


def install_au_processors(unet, cls=AUAttnProcessor) -> dict[str, AUAttnProcessor]:
    """AU processors on every attn2 (fresh, random), everything else keeps its processor."""
    procs = dict(unet.attn_processors)
    au = {}
    for path, attn in attn2_layers(unet).items():
        p = cls(attn.to_k.in_features, attn.to_k.out_features)
        procs[f"{path}.processor"] = p
        au[path] = p
    unet.set_attn_processor(procs)
    return au
