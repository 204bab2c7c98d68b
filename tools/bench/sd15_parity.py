#!/usr/bin/env python3
"""SD-1.5-shaped random pipeline for GPU parity and speed checks (issue 17's device script).

    python3 tools/bench/sd15_parity.py make OUT TOKENIZER_DIR
        random-weight SD-1.5 pipeline (UNet 860 M, VAE, CLIP-L text encoder, DDIM) saved in
        diffusers layout, fp16 safetensors (1.7 GB)
    python3 tools/bench/sd15_parity.py reference MODEL OUTDIR [--device cuda] [--steps 10]
        OUTDIR/lat.npy (seeded latents) and OUTDIR/ref_fp32.npy, ref_fp16.npy: diffusers'
        images ([0, 1], H × W × 3) for "a portrait photo", guidance 7.5, 512², from those
        latents; timings in OUTDIR/reference.json (per step: (t(steps) - t(2)) / (steps - 2))
    python3 tools/bench/sd15_parity.py compare IMAGE.png REF.npy
        prints one JSON line: max and mean |difference| in 1/255 units, the reference's std

Random weights are scaled by 0.5 so activations stay finite in fp16 (timings and parity of
real numbers). TF32 is off: fp32 means fp32.
"""

import json
import os
import sys
import time

os.environ["HF_HUB_OFFLINE"] = "1"

import numpy as np  # noqa: E402

PROMPT = "a portrait photo"


def make(out: str, tokenizer_dir: str) -> None:
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=64,
        block_out_channels=(320, 640, 1280, 1280),
        layers_per_block=2,
        cross_attention_dim=768,
        attention_head_dim=8,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
    )
    vae = AutoencoderKL(
        block_out_channels=(128, 256, 512, 512),
        layers_per_block=2,
        latent_channels=4,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        sample_size=512,
    )
    te = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=49408,
            hidden_size=768,
            intermediate_size=3072,
            num_hidden_layers=12,
            num_attention_heads=12,
            max_position_embeddings=77,
            hidden_act="quick_gelu",
        )
    )
    with torch.no_grad():
        for m in (unet, vae, te):
            for p in m.parameters():
                if p.dim() > 1:
                    p.mul_(0.5)
    tok = CLIPTokenizer.from_pretrained(tokenizer_dir)
    sch = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=te,
        tokenizer=tok,
        unet=unet,
        scheduler=sch,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.to(torch.float16).save_pretrained(out, safe_serialization=True)
    print(json.dumps({"saved": out, "unet_params_m": sum(p.numel() for p in unet.parameters()) / 1e6}))


def reference(model: str, outdir: str, device: str, steps: int) -> None:
    import torch
    from diffusers import StableDiffusionPipeline

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    os.makedirs(outdir, exist_ok=True)
    lat = torch.randn((1, 4, 64, 64), generator=torch.Generator().manual_seed(0))
    np.save(os.path.join(outdir, "lat.npy"), lat.numpy())
    res = {"device": device, "steps": steps}

    def sync():
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    for name, dt in (("fp32", torch.float32), ("fp16", torch.float16)):
        pipe = StableDiffusionPipeline.from_pretrained(model, torch_dtype=dt).to(device)
        pipe.set_progress_bar_config(disable=True)

        def run(n_steps, latents=None, images=1):
            kw = dict(
                num_inference_steps=n_steps,
                guidance_scale=7.5,
                height=512,
                width=512,
                num_images_per_prompt=images,
                output_type="np",
            )
            if latents is not None:
                kw["latents"] = latents.to(device, dt)
            sync()
            t = time.perf_counter()
            img = pipe(PROMPT, **kw).images
            sync()
            return img, time.perf_counter() - t

        img, _ = run(steps, lat)
        np.save(os.path.join(outdir, f"ref_{name}.npy"), img[0].astype(np.float32))
        res[f"{name}_std"] = float(img[0].std())
        _, t2 = run(2, lat)
        _, tn = run(steps, lat)
        res[f"{name}_pipeline_per_step_s"] = (tn - t2) / (steps - 2)
        del pipe
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
    with open(os.path.join(outdir, "reference.json"), "w") as f:
        json.dump(res, f, indent=1)
    print(json.dumps(res))


def compare(image: str, ref: str) -> None:
    from PIL import Image

    a = np.asarray(Image.open(image).convert("RGB"), np.float32) / 255
    r = np.load(ref)
    d = np.abs(a - r) * 255
    print(
        json.dumps(
            {
                "image": image,
                "reference": ref,
                "max_diff_255": float(d.max()),
                "mean_diff_255": float(d.mean()),
                "ref_std": float(r.std()),
            }
        )
    )


def main() -> None:
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "make":
        make(args[0], args[1])
    elif cmd == "reference":
        device = args[args.index("--device") + 1] if "--device" in args else "cuda"
        steps = int(args[args.index("--steps") + 1]) if "--steps" in args else 10
        reference(args[0], args[1], device, steps)
    elif cmd == "compare":
        compare(args[0], args[1])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
