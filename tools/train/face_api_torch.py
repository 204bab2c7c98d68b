"""face-api.js' FaceExpressionNet in PyTorch, from the crate's own converted weights
(`assets/face/fer_a_face_api.safetensors`, PyTorch layouts; see assets/face/PROVENANCE.md).

The same architecture as `src/face/face_api.rs`: four dense blocks (32/64/128/256 channels, each
halving the resolution, TensorFlow SAME padding), 7×7/2 average pool, fc 256 → 7. Used by
`torch_vae.py` as the perceptual feature extractor (the block outputs) of VAE v2's decoder loss.

    python tools/train/face_api_torch.py     # parity with tfjs on the committed LFW fixture

checks the probabilities against `tests/fixtures/face/fer_reference.safetensors` (made by tfjs
4.22.0 from the original package) and exits 1 above 1e-4.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

ROOT = Path(__file__).resolve().parents[2]
WEIGHTS = ROOT / "assets/face/fer_a_face_api.safetensors"
MEAN_RGB = (122.782, 117.001, 104.298)
CHANNELS = (32, 64, 128, 256)


def same_pad(x: torch.Tensor, kernel: int, stride: int) -> torch.Tensor:
    """TensorFlow SAME padding (the extra pixel at the bottom/right)."""
    h, w = x.shape[-2:]
    ph = max((-(-h // stride) - 1) * stride + kernel - h, 0)
    pw = max((-(-w // stride) - 1) * stride + kernel - w, 0)
    return F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))


class FaceApiExpression(nn.Module):
    def __init__(self, weights: Path = WEIGHTS):
        super().__init__()
        sd = load_file(str(weights))
        self.params = nn.ParameterDict({k.replace(".", "__"): nn.Parameter(v, requires_grad=False) for k, v in sd.items()})

    def p(self, key: str) -> torch.Tensor:
        return self.params[key.replace(".", "__")]

    def conv(self, x: torch.Tensor, key: str, stride: int) -> torch.Tensor:
        if (key + ".weight").replace(".", "__") in self.params:
            return F.conv2d(same_pad(x, 3, stride), self.p(key + ".weight"), self.p(key + ".bias"), stride)
        dw = F.conv2d(same_pad(x, 3, stride), self.p(key + ".depthwise.weight"), None, stride, groups=x.shape[1])
        return F.conv2d(dw, self.p(key + ".pointwise.weight"), self.p(key + ".pointwise.bias"))

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The four block outputs for a preprocessed [n, 3, 112, 112] input."""
        feats = []
        for b in range(4):
            out = F.relu(self.conv(x, f"dense{b}.conv0", 2))
            total = out
            for k in (1, 2, 3):
                total = total + self.conv(out, f"dense{b}.conv{k}", 1)
                out = F.relu(total)
            feats.append(out)
            x = out
        return feats

    def logits_from(self, last: torch.Tensor) -> torch.Tensor:
        pooled = F.avg_pool2d(last, 7, 2)
        return F.linear(pooled.flatten(1), self.p("fc.weight"), self.p("fc.bias"))

    @staticmethod
    def preprocess(rgb01: torch.Tensor) -> torch.Tensor:
        """[n, 3, h, w] RGB in [0, 1] → face-api's input at 112×112 (bilinear, half-pixel)."""
        x = F.interpolate(rgb01, size=(112, 112), mode="bilinear", align_corners=False)
        mean = torch.tensor(MEAN_RGB, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        return (x * 255.0 - mean) / 255.0


def check() -> float:
    ref = load_file(str(ROOT / "tests/fixtures/face/fer_reference.safetensors"))
    grey = ref["fer_a.input"].float()
    rgb = grey.unsqueeze(1).repeat(1, 3, 1, 1)
    mean = torch.tensor(MEAN_RGB).view(1, 3, 1, 1)
    x = (rgb - mean) / 255.0
    net = FaceApiExpression()
    with torch.no_grad():
        probs = torch.softmax(net.logits_from(net.features(x)[-1]), 1)
    return (probs - ref["fer_a.probs"]).abs().max().item()


if __name__ == "__main__":
    diff = check()
    print(f"face-api in torch vs tfjs on 100 LFW faces: max |Δp| = {diff:.2e}")
    sys.exit(0 if diff <= 1e-4 else 1)
