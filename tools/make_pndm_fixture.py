#!/usr/bin/env python3
"""End-to-end PNDM reference: tests/fixtures/sd1-tiny with Stable Diffusion 1.5's own scheduler.

Usage (from the repository root, same environment as tools/make_fixtures.py):

    .venv/bin/python tools/make_pndm_fixture.py            # write + self-verify
    .venv/bin/python tools/make_pndm_fixture.py --verify   # only re-check the committed files

Loads the committed sd1-tiny folder (nothing in it is changed), swaps its scheduler for
`PNDMScheduler.from_config(SD15_PNDM)` (runwayml/stable-diffusion-v1-5's
scheduler/scheduler_config.json: PLMS, `skip_prk_steps`, `steps_offset` 1) and runs
StableDiffusionPipeline for 5 steps with guidance 7.5 from the same latents as sd1's e2e
reference (seed 1234). Writes tests/fixtures/reference/sd1_pndm.{safetensors,json}:

* `e2e.latents`      [1, 4, 16, 16]  the given latents
* `e2e.image`        [1, 32, 32, 3]  output_type="np" image
* `e2e.unet_out`     [6, 2, 4, 16, 16] raw UNet outputs (uncond + cond) per timestep
* `e2e.step_latents` [6, 1, 4, 16, 16] latents after each scheduler step

The JSON holds the exact scheduler config text (`scheduler_config_json`) that the Rust test
(tests/diffusers_parity.rs `sd1_end_to_end_pndm_scheduler_from_folder`) writes into the folder, and the
timesteps (6 for 5 steps: PNDM repeats the second one).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import make_fixtures as mf  # noqa: E402  (sets the offline / determinism switches)
import torch  # noqa: E402
from diffusers import PNDMScheduler  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

SD15_PNDM_JSON = json.dumps(
    {
        "_class_name": "PNDMScheduler",
        "beta_end": 0.012,
        "beta_schedule": "scaled_linear",
        "beta_start": 0.00085,
        "num_train_timesteps": 1000,
        "set_alpha_to_one": False,
        "skip_prk_steps": True,
        "steps_offset": 1,
        "trained_betas": None,
        "clip_sample": False,
    },
    indent=2,
)
STEPS = 5
OUT_T = mf.REF / "sd1_pndm.safetensors"
OUT_J = mf.REF / "sd1_pndm.json"


def pndm_pipe():
    pipe = mf.load_pipe("sd1")
    pipe.scheduler = PNDMScheduler.from_config(json.loads(SD15_PNDM_JSON))
    return pipe


def e2e_cfg() -> dict:
    return dict(mf.E2E["sd1"], num_inference_steps=STEPS)


@torch.no_grad()
def make() -> None:
    pipe = pndm_pipe()
    e = e2e_cfg()
    f = pipe.vae_scale_factor
    g = torch.Generator().manual_seed(e["latents_seed"])
    latents = torch.randn((1, pipe.unet.config.in_channels, e["height"] // f, e["width"] // f), generator=g)
    assert torch.equal(latents, load_file(str(mf.REF / "sd1.safetensors"))["e2e.latents"])
    image, unet_out, step_latents, timesteps = mf.run_e2e(pipe, e, latents, e["guidance_scale"], capture=True)
    assert timesteps == [int(t) for t in pipe.scheduler.timesteps], timesteps
    T = {
        "e2e.latents": latents,
        "e2e.image": image,
        "e2e.unet_out": torch.stack(unet_out),
        "e2e.step_latents": torch.stack(step_latents),
    }
    J = {
        "versions": mf.versions(),
        "fixture_dir": mf.rel(mf.SD1_DIR),
        "generator": "tools/make_pndm_fixture.py",
        "scheduler_config_json": SD15_PNDM_JSON,
        "e2e": {
            "prompt": e["prompt"],
            "negative_prompt": e["negative_prompt"],
            "num_inference_steps": STEPS,
            "guidance_scale": e["guidance_scale"],
            "height": e["height"],
            "width": e["width"],
            "latents_seed": e["latents_seed"],
            "output_type": "np",
            "timesteps": timesteps,
            "init_noise_sigma": float(pipe.scheduler.init_noise_sigma),
            "scheduler_class": type(pipe.scheduler).__name__,
            "scheduler_config": mf.clean_config(pipe.scheduler.config),
        },
        "tensors": {k: {"shape": list(v.shape), "dtype": str(v.dtype).replace("torch.", "")} for k, v in sorted(T.items())},
    }
    mf.save_tensors(OUT_T, T, {"generator": "tools/make_pndm_fixture.py"})
    mf.write_json(OUT_J, J)
    for k, v in sorted(T.items()):
        print(mf.stats(k, v))
    print(f"timesteps {timesteps}; wrote {mf.rel(OUT_T)} ({OUT_T.stat().st_size} bytes), {mf.rel(OUT_J)}")


@torch.no_grad()
def verify() -> None:
    ref = load_file(str(OUT_T))
    meta = json.loads(OUT_J.read_text(encoding="utf-8"))
    assert meta["scheduler_config_json"] == SD15_PNDM_JSON
    pipe = pndm_pipe()
    e = e2e_cfg()
    image, *_ = mf.run_e2e(pipe, e, ref["e2e.latents"], e["guidance_scale"], capture=False)
    assert torch.equal(image, ref["e2e.image"]), "sd1_pndm: e2e.image not reproduced"
    print("verify: sd1_pndm e2e.image bit-exact")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--verify", action="store_true", help="only verify the committed files")
    if not ap.parse_args().verify:
        make()
    verify()


if __name__ == "__main__":
    main()
