"""An LCM-distilled-style tiny UNet (a UNet with `time_cond_proj_dim`, the guidance-scale
embedding of LCM models) and diffusers' output for it, for tests/lcm.rs.

    python tools/make_lcm_fixture.py

Writes tests/fixtures/lcm-tiny/: `unet/` (sd1-tiny's UNet config plus `time_cond_proj_dim = 8`,
seeded random weights, `cond_proj` scaled up so that the guidance embedding matters),
`scheduler/` (LCMScheduler), `model_index.json`, and `reference.safetensors` with
* `latents`: the initial latents [1, 4, 8, 8]; `encoder_hidden_states`: random [1, 77, 8];
* `unet.w<g>`: the UNet's output at t = 999 for them with `timestep_cond` = the embedding of
  w = g − 1, g in {1.5, 8};
* `image.w<g>`: diffusers 0.42.1 `StableDiffusionPipeline` (sd1-tiny's text encoder, tokenizer and
  VAE with this UNet and scheduler), prompt "a photo of a face", 1 LCM step (no noise is drawn),
  guidance scale g, `output_type="np"` [1, 16, 16, 3];
* `embedding`: `get_guidance_scale_embedding(tensor([0.5, 7.0]), 8)` of the LCM pipeline.
"""

import json
import shutil
from pathlib import Path

import torch
from diffusers import LCMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from diffusers.pipelines.latent_consistency_models.pipeline_latent_consistency_text2img import (
    LatentConsistencyModelPipeline,
)
from safetensors.torch import save_file

FIX = Path("tests/fixtures")
OUT = FIX / "lcm-tiny"


def main():
    torch.manual_seed(0)
    cfg = json.loads((FIX / "sd1-tiny/unet/config.json").read_text())
    cfg["time_cond_proj_dim"] = 8
    unet = UNet2DConditionModel.from_config(cfg)
    with torch.no_grad():
        for p in unet.parameters():
            p.normal_(0, 0.2)
        unet.time_embedding.cond_proj.weight.mul_(50)
    if OUT.exists():
        shutil.rmtree(OUT)
    unet.save_pretrained(OUT / "unet")
    sched = LCMScheduler.from_config(json.loads((FIX / "sd1-tiny/scheduler/scheduler_config.json").read_text()))
    sched.save_pretrained(OUT / "scheduler")
    index = json.loads((FIX / "sd1-tiny/model_index.json").read_text())
    index["scheduler"] = ["diffusers", "LCMScheduler"]
    (OUT / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")

    base = StableDiffusionPipeline.from_pretrained(str(FIX / "sd1-tiny"), safety_checker=None)
    pipe = StableDiffusionPipeline(vae=base.vae, text_encoder=base.text_encoder, tokenizer=base.tokenizer,
                                   unet=UNet2DConditionModel.from_pretrained(OUT / "unet"),
                                   scheduler=LCMScheduler.from_pretrained(OUT / "scheduler"),
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    latents = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    lcm = LatentConsistencyModelPipeline.__new__(LatentConsistencyModelPipeline)
    ehs = torch.randn(1, 77, cfg["cross_attention_dim"], generator=torch.Generator().manual_seed(4))
    ref = {"latents": latents, "encoder_hidden_states": ehs}
    for g in (1.5, 8.0):
        img = pipe("a photo of a face", num_inference_steps=1, guidance_scale=g, latents=latents.clone(),
                   height=16, width=16, output_type="np").images
        ref[f"image.w{g}"] = torch.from_numpy(img).float()
        emb = lcm.get_guidance_scale_embedding(torch.tensor([g - 1.0]), embedding_dim=8)
        with torch.no_grad():
            ref[f"unet.w{g}"] = pipe.unet(latents, 999, encoder_hidden_states=ehs, timestep_cond=emb).sample
    ref["embedding"] = lcm.get_guidance_scale_embedding(torch.tensor([0.5, 7.0]), embedding_dim=8)
    save_file({k: v.contiguous() for k, v in ref.items()}, OUT / "reference.safetensors")
    diff = (ref["unet.w1.5"] - ref["unet.w8.0"]).abs().max().item()
    assert diff > 0.01, f"the guidance embedding barely matters ({diff})"
    print(f"{OUT}: UNet outputs at w 1.5 and 8 differ by up to {diff:.3f}")


if __name__ == "__main__":
    main()
