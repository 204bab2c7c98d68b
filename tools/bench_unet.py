#!/usr/bin/env python3
"""CPU fp32 reference timing of an SD-1.5-shaped UNet2DConditionModel (random weights).

    .venv/bin/python tools/bench_unet.py [THREADS] [K]

THREADS: torch.set_num_threads (default: all cores), K: timed forwards after 1 warm-up (default 5).
Batch 2 (i.e. one CFG step), latent 4x32x32 (256x256 image), 77x768 text context.
Prints one JSON line: {"mean_s", "min_s", "threads", "torch", ...}.
"""

import json
import os
import sys
import time

os.environ["HF_HUB_OFFLINE"] = "1"

import torch  # noqa: E402
from diffusers import UNet2DConditionModel  # noqa: E402


def main() -> None:
    threads = int(sys.argv[1]) if len(sys.argv) > 1 else (os.cpu_count() or 1)
    k = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    torch.set_num_threads(threads)
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
    ).eval()
    g = torch.Generator().manual_seed(1)
    sample = torch.randn(2, 4, 32, 32, generator=g)
    context = torch.randn(2, 77, 768, generator=g)
    t = torch.tensor([999, 999])
    times = []
    with torch.inference_mode():
        unet(sample, t, encoder_hidden_states=context)  # warm-up
        for _ in range(k):
            t0 = time.perf_counter()
            unet(sample, t, encoder_hidden_states=context)
            times.append(time.perf_counter() - t0)
    print(
        json.dumps(
            {
                "mean_s": sum(times) / len(times),
                "min_s": min(times),
                "threads": threads,
                "torch": torch.__version__,
                "k": k,
                "batch": 2,
                "latent_hw": [32, 32],
                "params": sum(p.numel() for p in unet.parameters()),
            }
        )
    )


if __name__ == "__main__":
    main()
