#!/usr/bin/env python3
"""Check an exported synfer model (e.g. models/synfer-tiny) against diffusers.

Usage (from the repository root, same venv as tools/make_fixtures.py):

    .venv/bin/python tools/train/check_export.py models/synfer-tiny [--synfer target/release/synfer]

1. Loads the folder with diffusers' `StableDiffusionPipeline.from_pretrained` (fp32) and checks
   each component's loading info (`output_loading_info=True`): no missing, unexpected or
   mismatched key.
2. Attaches `au_adapter/` with this project's reference AU processor and AU encoder
   (tools/make_au_fixtures.py) and runs StableDiffusionPipeline's loop step by step with the
   AU tokens ([zero AUs, requested AUs] for the two guidance halves; requests scaled by the
   adapter's `au_range` as synfer does), from fixed latents.
3. Runs `synfer generate` on the same folder, prompt, AUs and latents (`--latents x.npy`) and
   compares the two images: exits non-zero when any pixel differs by more than --tolerance
   (8-bit levels).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import make_au_fixtures as au  # noqa: E402  (offline env, 1 thread, deterministic algorithms)

import numpy as np  # noqa: E402
import torch  # noqa: E402
from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel  # noqa: E402
from PIL import Image  # noqa: E402
from safetensors.torch import load_file  # noqa: E402
from transformers import CLIPTextModel  # noqa: E402

COMPONENTS = {"text_encoder": CLIPTextModel, "unet": UNet2DConditionModel, "vae": AutoencoderKL}


def check_keys(folder: Path) -> None:
    """Each component loads with no missing, unexpected or mismatched key."""
    for name, cls in COMPONENTS.items():
        _, info = cls.from_pretrained(folder / name, output_loading_info=True)
        bad = {k: v for k, v in info.items() if k != "error_msgs" and v}
        assert not bad and not info.get("error_msgs"), (name, bad, info.get("error_msgs"))
        print(f"{name}: every stored tensor loaded, none missing")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model", type=Path)
    ap.add_argument("--synfer", default="target/release/synfer")
    ap.add_argument("--prompt", default="a photo of a surprised woman")
    ap.add_argument("--aus", default="AU1=3,AU2=3,AU26=4")
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--guidance", type=float, default=7.5)
    ap.add_argument("--tolerance", type=int, default=2)
    args = ap.parse_args()

    pipe = StableDiffusionPipeline.from_pretrained(args.model, torch_dtype=torch.float32, safety_checker=None)
    check_keys(args.model)

    cfg = json.loads((args.model / "au_adapter" / "config.json").read_text())
    sd = load_file(args.model / "au_adapter" / "diffusion_pytorch_model.safetensors")
    sd = {k: v.float() for k, v in sd.items()}
    au.load_au_processors(pipe.unet, {k: v for k, v in sd.items() if not k.startswith("au_encoder.")})
    width = cfg.get("cross_attention_dim") or pipe.unet.config.cross_attention_dim
    enc = au.AUEncoder(cfg["hidden_dim"], width, cfg["num_tokens"], cfg["include_raw"]).eval()
    enc.load_state_dict({k: v for k, v in sd.items() if k.startswith("au_encoder.")}, strict=True)

    side = pipe.unet.config.sample_size
    latents = torch.randn((1, pipe.unet.config.in_channels, side, side), generator=torch.Generator().manual_seed(1))
    # au_range (synfer's calibration of FACS requests to the training labels): v -> v * range / 5.
    au_range = cfg.get("au_range") or {}
    model_aus = ",".join(f"{c}={float(v) * au_range.get(c, 5.0) / 5.0}"
                         for c, v in (part.split("=") for part in args.aus.split(",")))
    run = {"prompt": args.prompt, "negative_prompt": "", "aus": model_aus,
           "num_inference_steps": args.steps, "guidance_scale": args.guidance}
    with torch.no_grad():
        image = au.run_loop(pipe, enc, run, latents, cfg.get("default_au_scale", 1.0), capture=False)[0]
    ref = (image[0].numpy() * 255).round().astype(np.int16)

    with tempfile.TemporaryDirectory() as tmp:
        lat = Path(tmp) / "latents.npy"
        np.save(lat, latents.numpy())
        out = Path(tmp) / "synfer.png"
        subprocess.run([args.synfer, "generate", "--model", str(args.model), "--prompt", args.prompt,
                        "--au", args.aus, "--steps", str(args.steps), "--guidance", str(args.guidance),
                        "--scheduler", "ddim", "--latents", str(lat), "--device", "cpu", "--out", str(out)],
                       check=True)
        ours = np.asarray(Image.open(out).convert("RGB")).astype(np.int16)
    diff = np.abs(ours - ref)
    print(f"synfer vs diffusers ({args.steps} DDIM steps, guidance {args.guidance}, {args.aus}): "
          f"max |diff| {diff.max()} levels, mean {diff.mean():.3f}")
    if diff.max() > args.tolerance:
        sys.exit(f"images differ by more than {args.tolerance} levels")
    print("ok")


if __name__ == "__main__":
    main()
