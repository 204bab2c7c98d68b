#!/usr/bin/env python3
"""Half-precision references for `tests/half_precision.rs`: diffusers with `torch_dtype=torch.float16` on
the CPU, on the same inputs as tools/make_fixtures.py's fp32 references.

    .venv/bin/python tools/make_f16_fixtures.py          # → tests/fixtures/reference/f16.safetensors

Keys: `sd1.unet.out` (the sd1-tiny UNet on `unet.sample/timestep/encoder_hidden_states` of
reference/sd1.safetensors, cast to fp16), `sd1.e2e.image` (the sd1-tiny pipeline, the e2e
request of reference/sd1.json from `e2e.latents`, guidance 7.5), both stored as f32.
"""

import json
import os
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"

import numpy as np  # noqa: E402
import torch  # noqa: E402
from diffusers import StableDiffusionPipeline  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
FIX = ROOT / "tests" / "fixtures"
OUT = FIX / "reference" / "f16.safetensors"


@torch.no_grad()
def main() -> None:
    refs = load_file(str(FIX / "reference" / "sd1.safetensors"))
    meta = json.loads((FIX / "reference" / "sd1.json").read_text())
    e = meta["e2e"]
    pipe = StableDiffusionPipeline.from_pretrained(
        str(FIX / "sd1-tiny"), torch_dtype=torch.float16, local_files_only=True
    )
    pipe.set_progress_bar_config(disable=True)
    half = torch.float16
    out = {}
    unet_out = pipe.unet(
        refs["unet.sample"].to(half),
        refs["unet.timestep"].to(torch.int64),
        encoder_hidden_states=refs["unet.encoder_hidden_states"].to(half),
    ).sample
    out["sd1.unet.out"] = unet_out.float().contiguous()
    res = pipe(
        prompt=e["prompt"],
        negative_prompt=e["negative_prompt"],
        num_inference_steps=e["num_inference_steps"],
        guidance_scale=e["guidance_scale"],
        height=e["height"],
        width=e["width"],
        latents=refs["e2e.latents"].to(half),
        output_type="np",
    )
    out["sd1.e2e.image"] = torch.from_numpy(np.ascontiguousarray(res.images)).float()
    for k, v in out.items():
        assert torch.isfinite(v).all(), k
    fp32 = {"sd1.unet.out": refs["unet.out"], "sd1.e2e.image": refs["e2e.image"]}
    info = {
        k: f"fp16 vs fp32 max |d| {float((out[k] - fp32[k]).abs().max()):.3e}, "
        f"rel L2 {float((out[k] - fp32[k]).norm() / fp32[k].norm()):.3e}"
        for k in out
    }
    info["torch"] = torch.__version__
    import diffusers

    info["diffusers"] = diffusers.__version__
    save_file(out, str(OUT), metadata=info)
    print(json.dumps(info, indent=1))


if __name__ == "__main__":
    main()
