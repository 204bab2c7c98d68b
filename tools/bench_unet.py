#!/usr/bin/env python3
"""Reference timing of an SD-1.5-shaped UNet2DConditionModel (random weights) in diffusers.

    .venv/bin/python tools/bench_unet.py [THREADS] [K] [--device cpu|cuda] [--dtype fp32|fp16]
                                         [--size 256] [--batch 1]

THREADS: torch.set_num_threads (default: all cores), K: timed forwards after 1 warm-up
(default 5). One forward = one denoising step with classifier-free guidance: UNet batch
2 × --batch, latent 4 × size/8 × size/8, 77 × 768 text context. On CUDA, TF32 is off (fp32 means
fp32) and each timing is bracketed by synchronisations. Prints one JSON line:
{"mean_s", "min_s", "threads", "torch", "device", "dtype", "batch", "latent_hw", ...}.
Used by `cargo bench --bench unet` and `synfer bench`.
"""

import argparse
import json
import os
import time

os.environ["HF_HUB_OFFLINE"] = "1"

import torch  # noqa: E402
from diffusers import UNet2DConditionModel  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("threads", nargs="?", type=int, default=os.cpu_count() or 1)
    ap.add_argument("k", nargs="?", type=int, default=5)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="fp32", choices=["fp32", "fp16"])
    ap.add_argument("--size", type=int, default=256, help="image side (latent side = size / 8)")
    ap.add_argument("--batch", type=int, default=1, help="images per step (the UNet sees twice as many)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    dtype = torch.float16 if args.dtype == "fp16" else torch.float32
    dev = torch.device(args.device)
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=64,
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        block_out_channels=(320, 640, 1280, 1280),
        layers_per_block=2,
        attention_head_dim=8,
        cross_attention_dim=768,
        norm_num_groups=32,
    ).eval().to(dev, dtype)
    side = args.size // 8
    n = 2 * args.batch
    g = torch.Generator().manual_seed(1)
    sample = torch.randn(n, 4, side, side, generator=g).to(dev, dtype)
    context = torch.randn(n, 77, 768, generator=g).to(dev, dtype)
    t = torch.full((n,), 999, device=dev)

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    times = []
    with torch.inference_mode():
        unet(sample, t, encoder_hidden_states=context)  # warm-up
        sync()
        for _ in range(args.k):
            t0 = time.perf_counter()
            unet(sample, t, encoder_hidden_states=context)
            sync()
            times.append(time.perf_counter() - t0)
    print(
        json.dumps(
            {
                "mean_s": sum(times) / len(times),
                "min_s": min(times),
                "threads": args.threads,
                "torch": torch.__version__,
                "device": str(dev) if dev.type == "cpu" else torch.cuda.get_device_name(dev),
                "dtype": args.dtype,
                "k": args.k,
                "batch": n,
                "latent_hw": [side, side],
                "params": sum(p.numel() for p in unet.parameters()),
            }
        )
    )


if __name__ == "__main__":
    main()
