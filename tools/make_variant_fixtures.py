#!/usr/bin/env python3
"""Generate randomly varied tiny UNet/VAE/scheduler variants of sd1-tiny and their diffusers references.

Usage (from the repository root, same venv/pins as tools/make_fixtures.py):

    .venv/bin/python tools/make_variant_fixtures.py            # regenerate tests/fixtures/variants + verify
    .venv/bin/python tools/make_variant_fixtures.py --verify   # only re-check the committed variants

Every variant reuses sd1-tiny's tokenizer and text encoder (CLIP hidden size 16, so every
`cross_attention_dim` is 16) and gets its own `UNet2DConditionModel`, `AutoencoderKL` and scheduler.
To keep the repository small, `tests/fixtures/variants/<name>/` holds only `model_index.json`,
`unet/`, `vae/` and `scheduler/`; the complete diffusers folder is `tests/fixtures/sd1-tiny/{tokenizer,
text_encoder}` + those (the Rust test `tests/diffusers_variants.rs` assembles it in memory, this script in a
temporary directory, which `StableDiffusionPipeline.from_pretrained` loads).

References (`reference.safetensors`, all F32, + `reference.json`), computed from the weights as saved:

* `unet.sample` / `unet.timestep` / `unet.encoder_hidden_states` → `unet.out`  (one UNet forward, batch 2)
* `vae.image` → `vae.enc_mean` / `vae.enc_logvar`; `vae.latents` → `vae.dec_out` (raw decode)
* `e2e.latents` → `e2e.image` (`StableDiffusionPipeline(...)`, `output_type="np"`, NHWC in [0, 1])

Deterministic: fixed seeds, one CPU thread, deterministic algorithms.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_fixtures as mf  # noqa: E402  (sets offline env, 1 thread, deterministic algorithms)

import torch  # noqa: E402
import transformers  # noqa: E402
from diffusers import (  # noqa: E402
    AutoencoderKL,
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from safetensors.torch import load_file  # noqa: E402

transformers.utils.logging.disable_progress_bar()
ROOT = mf.ROOT
SD1 = mf.SD1_DIR
OUT = mf.FIX / "variants"
SCHEDULERS = {"DDIMScheduler": DDIMScheduler, "DPMSolverMultistepScheduler": DPMSolverMultistepScheduler,
              "EulerDiscreteScheduler": EulerDiscreteScheduler}
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
CA, CU = "CrossAttnDownBlock2D", "CrossAttnUpBlock2D"
D, U = "DownBlock2D", "UpBlock2D"
BETAS = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
DDIM = dict(BETAS, clip_sample=False, set_alpha_to_one=False, steps_offset=1, timestep_spacing="leading")
DPM = dict(BETAS, algorithm_type="dpmsolver++", solver_order=2, solver_type="midpoint", lower_order_final=True,
           timestep_spacing="leading", steps_offset=1)
EULER = dict(BETAS, timestep_spacing="linspace", steps_offset=1, interpolation_type="linear")


def vae(n: int, channels, layers=1, latent=4, groups=4, **kw) -> dict:
    return dict(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * n,
                up_block_types=("UpDecoderBlock2D",) * n, block_out_channels=tuple(channels), layers_per_block=layers,
                latent_channels=latent, norm_num_groups=groups, act_fn="silu", sample_size=32, **kw)


def unet(down, up, channels, **kw) -> dict:
    cfg = dict(sample_size=8, in_channels=4, out_channels=4, down_block_types=tuple(down), up_block_types=tuple(up),
               block_out_channels=tuple(channels), layers_per_block=1, attention_head_dim=2, cross_attention_dim=16,
               norm_num_groups=4, act_fn="silu")
    cfg.update(kw)
    return cfg


# Each variant: what it covers, its UNet/VAE/scheduler kwargs, the storage dtype of unet/ and vae/, the UNet
# forward input size (odd sizes exercise diffusers' forward_upsample_size path), the VAE test image size
# and the end-to-end request.  Latent size = image size / 2^(len(vae block_out_channels) - 1).
VARIANTS = [
    dict(
        name="v01-downfirst-3lvl",
        covers="DownBlock2D first (down D,CA,CA / up CU,CU,U); block_out (8,8,12); layers_per_block list [1,2,1]; "
        "attention_head_dim list [2,4,3] (mid: 3 heads on 12 ch); transformer_layers_per_block 2; conv proj; "
        "VAE f=2 layers 2; DDIM eps leading; 40x24 image -> latent 20x12",
        unet=unet([D, CA, CA], [CU, CU, U], (8, 8, 12), layers_per_block=[1, 2, 1], attention_head_dim=[2, 4, 3],
                  transformer_layers_per_block=2),
        vae=vae(2, (8, 8), layers=2),
        sched=("DDIMScheduler", dict(DDIM, prediction_type="epsilon")),
        dtype=dict(unet="fp16", vae="fp16"),
        unet_hw=(9, 7), vae_hw=(16, 24), timesteps=[999, 37],
        e2e=dict(prompt="a red cube on a blue table", negative_prompt=None, num_inference_steps=4, guidance_scale=6.0,
                 height=40, width=24),
    ),
    dict(
        name="v02-4lvl-odd-linear",
        covers="4 levels, alternating (down CA,D,CA,D / up U,CU,U,CU); block_out (8,8,8,16); attention_head_dim "
        "list [2,2,4,4]; transformer_layers_per_block list [1,1,2,2]; use_linear_projection; upcast_attention; "
        "VAE f=2; DPM++ v_prediction; 40x24 -> latent 20x12 -> odd upsample path 3->5, 2->3",
        unet=unet([CA, D, CA, D], [U, CU, U, CU], (8, 8, 8, 16), attention_head_dim=[2, 2, 4, 4],
                  transformer_layers_per_block=[1, 1, 2, 2], use_linear_projection=True, upcast_attention=True),
        vae=vae(2, (8, 8)),
        sched=("DPMSolverMultistepScheduler", dict(DPM, prediction_type="v_prediction")),
        dtype=dict(unet="fp16", vae="fp16"),
        unet_hw=(11, 7), vae_hw=(24, 16), timesteps=[999, 500],
        e2e=dict(prompt="a watercolor fox", negative_prompt="blurry", num_inference_steps=4, guidance_scale=6.0,
                 height=40, width=24),
    ),
    dict(
        name="v03-1lvl-nomid-oca",
        covers="single level (down CA / up CU, no down/upsamplers); mid_block_type null; only_cross_attention true "
        "(bool); layers_per_block 2; latent_channels 3 (UNet in/out 3); VAE 1 block (f=1); Euler eps linspace",
        unet=unet([CA], [CU], (16,), layers_per_block=2, attention_head_dim=4, mid_block_type=None,
                  only_cross_attention=True, in_channels=3, out_channels=3),
        vae=vae(1, (8,), latent=3),
        sched=("EulerDiscreteScheduler", dict(EULER, prediction_type="epsilon")),
        dtype=dict(unet="fp16", vae="fp16"),
        unet_hw=(5, 6), vae_hw=(8, 8), timesteps=[999, 1],
        e2e=dict(prompt="a lighthouse", negative_prompt=None, num_inference_steps=3, guidance_scale=6.0,
                 height=16, width=24),
    ),
    dict(
        name="v04-nomid-kernels-flip",
        covers="down D,CA / up CU,U; mid_block_type null; only_cross_attention list [false,true]; block_out (12,24), "
        "norm_num_groups 3; attention_head_dim 3; flip_sin_to_cos false + freq_shift 1; conv_in_kernel 1, "
        "conv_out_kernel 5; VAE f=4 layers 2 groups 2, mid_block_add_attention false; DDIM v_prediction trailing",
        unet=unet([D, CA], [CU, U], (12, 24), attention_head_dim=3, norm_num_groups=3, mid_block_type=None,
                  only_cross_attention=[False, True], flip_sin_to_cos=False, freq_shift=1, conv_in_kernel=1,
                  conv_out_kernel=5),
        vae=vae(3, (8, 8, 8), layers=2, groups=2, mid_block_add_attention=False),
        sched=("DDIMScheduler", dict(DDIM, prediction_type="v_prediction", timestep_spacing="trailing", steps_offset=0)),
        dtype=dict(unet="fp16", vae="fp16"),
        unet_hw=(9, 5), vae_hw=(16, 24), timesteps=[800, 3],
        e2e=dict(prompt="a castle at night", negative_prompt="ugly", num_inference_steps=4, guidance_scale=6.0,
                 height=40, width=24),
    ),
    dict(
        name="v05-center-pad0-eps",
        covers="center_input_sample; downsample_padding 0 (pad right/bottom); norm_eps 1e-2; norm_num_groups 2; "
        "block_out (6,12); attention_head_dim list [3,2] (head dims 2 and 6); layers_per_block list [2,1]; "
        "transformer_layers_per_block list [2,1]; use_linear_projection; VAE f=4; Euler v_prediction; "
        "odd UNet input 7x9 (floor downsampling + forward_upsample_size)",
        unet=unet([CA, CA], [CU, CU], (6, 12), attention_head_dim=[3, 2], norm_num_groups=2, norm_eps=1e-2,
                  layers_per_block=[2, 1], transformer_layers_per_block=[2, 1], use_linear_projection=True,
                  center_input_sample=True, downsample_padding=0),
        vae=vae(3, (8, 8, 8)),
        sched=("EulerDiscreteScheduler", dict(EULER, prediction_type="v_prediction")),
        dtype=dict(unet="fp16", vae="fp16"),
        unet_hw=(7, 9), vae_hw=(24, 16), timesteps=[999, 250],
        e2e=dict(prompt="a bowl of fruit", negative_prompt=None, num_inference_steps=4, guidance_scale=6.0,
                 height=24, width=40),
    ),
    dict(
        name="v06-odd-width-timeproj",
        covers="block_out (9,18) with norm_num_groups 3 -> odd time_proj width 9 (zero-padded sinusoid); "
        "attention_head_dim 3 (head dims 3, 6); cross_attention_dim as per-block list [16,16]; time_embedding_dim 20; "
        "VAE block_out (6,12) groups 3, latent_channels 2; DDIM eps linspace steps_offset 0",
        unet=unet([CA, D], [U, CU], (9, 18), attention_head_dim=3, norm_num_groups=3, cross_attention_dim=[16, 16],
                  time_embedding_dim=20, in_channels=2, out_channels=2, layers_per_block=2),
        vae=vae(2, (6, 12), groups=3, latent=2),
        sched=("DDIMScheduler", dict(DDIM, prediction_type="epsilon", timestep_spacing="linspace", steps_offset=0)),
        dtype=dict(unet="fp16", vae="fp16"),
        unet_hw=(6, 10), vae_hw=(16, 16), timesteps=[999, 499],
        e2e=dict(prompt="an astronaut", negative_prompt=None, num_inference_steps=3, guidance_scale=6.0,
                 height=16, width=32),
    ),
    dict(
        name="v07-4lvl-f8-noquant-fp32vae",
        covers="4 levels (down CA,CA,D,CA / up CU,U,CU,CU); block_out (8,8,8,8); attention_head_dim list [1,2,4,8] "
        "(mid: 8 heads of dim 1); layers_per_block list [1,2,1,2]; VAE 4 blocks (f=8), "
        "use_quant_conv/use_post_quant_conv false, scaling_factor 0.5; fp32 VAE weights; DPM++ eps trailing; 40x24 -> latent 5x3 (odd path at every level)",
        unet=unet([CA, CA, D, CA], [CU, U, CU, CU], (8, 8, 8, 8), attention_head_dim=[1, 2, 4, 8],
                  layers_per_block=[1, 2, 1, 2]),
        vae=vae(4, (4, 4, 8, 8), groups=2, use_quant_conv=False, use_post_quant_conv=False, scaling_factor=0.5),
        sched=("DPMSolverMultistepScheduler", dict(DPM, prediction_type="epsilon", timestep_spacing="trailing")),
        dtype=dict(unet="fp16", vae="fp32"),
        unet_hw=(5, 3), vae_hw=(16, 24), timesteps=[999, 100],
        e2e=dict(prompt="a city street in the rain", negative_prompt=None, num_inference_steps=4, guidance_scale=6.0,
                 height=40, width=24),
    ),
    dict(
        name="v08-oca-list-kernels-bf16vae",
        covers="SD1 block types (CA,CA,D / U,CU,CU); only_cross_attention list [true,false,false] (up: reversed); "
        "upcast_attention; conv_in_kernel 5, conv_out_kernel 1; norm_eps 1e-6; VAE layers 2, latent 4, no mid "
        "attention, bf16 VAE weights; Euler eps leading; guidance 4.5 with negative prompt",
        unet=unet([CA, CA, D], [U, CU, CU], (8, 16, 16), attention_head_dim=4, only_cross_attention=[True, False, False],
                  upcast_attention=True, conv_in_kernel=5, conv_out_kernel=1, norm_eps=1e-6),
        vae=vae(2, (8, 8), layers=2, mid_block_add_attention=False),
        sched=("EulerDiscreteScheduler", dict(EULER, prediction_type="epsilon", timestep_spacing="leading")),
        dtype=dict(unet="fp16", vae="bf16"),
        unet_hw=(8, 12), vae_hw=(16, 16), timesteps=[999, 640],
        e2e=dict(prompt="a portrait of a cat", negative_prompt="low quality, blurry", num_inference_steps=3,
                 guidance_scale=4.5, height=24, width=40),
    ),
    dict(
        name="v09-scale-factors",
        covers="resnet_out_scale_factor 2.0 (diffusers does NOT apply it to DownBlock2D/CrossAttnDownBlock2D/"
        "UpBlock2D/CrossAttnUpBlock2D resnets); mid_block_scale_factor 1.414; time_embedding_dim 24; "
        "block_out (8,16); VAE f=2; DDIM eps; guidance 1.0 (no CFG)",
        unet=unet([CA, D], [U, CU], (8, 16), attention_head_dim=[2, 4], resnet_out_scale_factor=2.0,
                  mid_block_scale_factor=1.414, time_embedding_dim=24),
        vae=vae(2, (8, 8)),
        sched=("DDIMScheduler", dict(DDIM, prediction_type="epsilon")),
        dtype=dict(unet="fp16", vae="fp16"),
        unet_hw=(8, 8), vae_hw=(16, 16), timesteps=[999, 37],
        e2e=dict(prompt="a mountain lake", negative_prompt=None, num_inference_steps=4, guidance_scale=1.0,
                 height=32, width=32),
    ),
    dict(
        name="v10-plain-blocks-midattn",
        covers="no cross-attention down/up blocks (D,D / U,U) but a UNetMidBlock2DCrossAttn (text enters only in the "
        "mid block, attention_head_dim list [2,4] -> 4 mid heads); transformer_layers_per_block list [1,3] (mid: 3); "
        "use_linear_projection; VAE f=2 scaling 1.0; DPM++ v_prediction, Karras sigmas",
        unet=unet([D, D], [U, U], (8, 16), attention_head_dim=[2, 4], transformer_layers_per_block=[1, 3],
                  use_linear_projection=True),
        vae=vae(2, (8, 8), scaling_factor=1.0),
        sched=("DPMSolverMultistepScheduler", dict(DPM, prediction_type="v_prediction", use_karras_sigmas=True)),
        dtype=dict(unet="fp16", vae="fp16"),
        unet_hw=(6, 6), vae_hw=(16, 16), timesteps=[999, 20],
        e2e=dict(prompt="an owl", negative_prompt=None, num_inference_steps=4, guidance_scale=6.0,
                 height=32, width=16),
    ),
    dict(
        name="v11-sched-pipeline-fixups",
        covers="scheduler config written with steps_offset 0 and clip_sample true: StableDiffusionPipeline.__init__ "
        "rewrites both (steps_offset -> 1, clip_sample -> false; see e2e.effective_scheduler_config), so timesteps "
        "are [667, 334, 1] not [666, 333, 0]; norm_num_groups 1; attention_head_dim 8 (head dims 1 and 2); "
        "VAE groups 1; DDIM eps leading",
        unet=unet([CA, CA], [CU, CU], (8, 16), attention_head_dim=8, norm_num_groups=1),
        vae=vae(2, (8, 8), groups=1),
        sched=("DDIMScheduler", dict(DDIM, prediction_type="epsilon", steps_offset=0, clip_sample=True)),
        dtype=dict(unet="fp16", vae="fp16"),
        unet_hw=(6, 9), vae_hw=(16, 16), timesteps=[999, 300],
        e2e=dict(prompt="a dragon made of glass", negative_prompt=None, num_inference_steps=3, guidance_scale=6.0,
                 height=24, width=32),
    ),
]


def seed_of(i: int, k: int) -> int:
    return 5000 + 100 * i + k


def summary(v: dict) -> dict:
    """The kwargs that define a variant (JSON-friendly), for reference.json and failure messages."""
    return {
        "unet": {k: list(x) if isinstance(x, tuple) else x for k, x in v["unet"].items()},
        "vae": {k: list(x) if isinstance(x, tuple) else x for k, x in v["vae"].items()},
        "scheduler": {"class": v["sched"][0], **v["sched"][1]},
        "weights_dtype": v["dtype"],
    }


def write_components(i: int, v: dict, dst: Path) -> None:
    """unet/, vae/, scheduler/ and model_index.json of variant `i` into `dst`."""
    torch.manual_seed(seed_of(i, 1))
    unet = UNet2DConditionModel(**v["unet"]).eval()
    mf.perturb(unet, seed_of(i, 11))
    torch.manual_seed(seed_of(i, 2))
    vae = AutoencoderKL(**v["vae"]).eval()
    mf.perturb(vae, seed_of(i, 12))
    unet.to(DTYPES[v["dtype"]["unet"]]).save_pretrained(str(dst / "unet"), safe_serialization=True)
    vae.to(DTYPES[v["dtype"]["vae"]]).save_pretrained(str(dst / "vae"), safe_serialization=True)
    cls, kw = v["sched"]
    SCHEDULERS[cls](**kw).save_pretrained(str(dst / "scheduler"))
    index = json.loads((SD1 / "model_index.json").read_text(encoding="utf-8"))
    index["scheduler"] = ["diffusers", cls]
    mf.write_json(dst / "model_index.json", index)


def assemble(variant_dir: Path, tmp: Path) -> Path:
    """A complete diffusers folder: sd1-tiny's tokenizer/ and text_encoder/ + the variant's files."""
    full = tmp / variant_dir.name
    if full.exists():
        shutil.rmtree(full)
    full.mkdir(parents=True)
    for comp in ("tokenizer", "text_encoder"):
        shutil.copytree(SD1 / comp, full / comp)
    for comp in ("unet", "vae", "scheduler"):
        shutil.copytree(variant_dir / comp, full / comp)
    shutil.copy2(variant_dir / "model_index.json", full / "model_index.json")
    return full


def load(full: Path) -> StableDiffusionPipeline:
    pipe = StableDiffusionPipeline.from_pretrained(str(full), dtype=torch.float32, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    for comp, f in (("unet", "unet/diffusion_pytorch_model.safetensors"),
                    ("vae", "vae/diffusion_pytorch_model.safetensors")):
        m = getattr(pipe, comp).eval()
        assert all(p.dtype == torch.float32 for p in m.parameters()), comp
        fsd, msd = load_file(str(full / f)), m.state_dict()
        assert set(fsd) == set(msd), (full.name, comp, set(fsd) ^ set(msd))
        for k, t in fsd.items():
            assert torch.equal(t.to(torch.float32), msd[k]), (full.name, comp, k)
    return pipe


@torch.no_grad()
def references(i: int, v: dict, pipe) -> tuple[dict, dict]:
    T: dict[str, torch.Tensor] = {}
    unet, vae = pipe.unet, pipe.vae
    g = torch.Generator().manual_seed(seed_of(i, 21))
    c = unet.config.in_channels
    sample = torch.randn((2, c, *v["unet_hw"]), generator=g)
    ehs = torch.randn((2, 77, 16), generator=g)
    ts = torch.tensor(v["timesteps"], dtype=torch.int64)
    T["unet.sample"], T["unet.timestep"], T["unet.encoder_hidden_states"] = sample, ts.to(torch.float32), ehs
    T["unet.out"] = mf.f32(unet(sample, ts, encoder_hidden_states=ehs).sample)

    f = pipe.vae_scale_factor
    image = torch.rand((1, 3, *v["vae_hw"]), generator=g) * 2 - 1
    latents = torch.randn((1, vae.config.latent_channels, v["vae_hw"][0] // f, v["vae_hw"][1] // f), generator=g)
    dist = vae.encode(image).latent_dist
    T["vae.image"], T["vae.enc_mean"], T["vae.enc_logvar"] = image, mf.f32(dist.mean), mf.f32(dist.logvar)
    T["vae.latents"] = latents
    T["vae.dec_out"] = mf.f32(vae.decode(latents).sample)

    e = dict(v["e2e"])
    e2e_latents = torch.randn((1, c, e["height"] // f, e["width"] // f), generator=g)
    T["e2e.latents"] = e2e_latents
    image, _, _, timesteps = mf.run_e2e(pipe, e, e2e_latents, e["guidance_scale"], capture=True)
    T["e2e.image"] = image
    J = {
        "versions": mf.versions(),
        "name": v["name"],
        "covers": v["covers"],
        "config": summary(v),
        "assembled_from": "tests/fixtures/sd1-tiny/{tokenizer,text_encoder} + this folder's model_index.json, unet/, "
        "vae/, scheduler/",
        "unet": {"timesteps": v["timesteps"], "note": "unet.out = unet(sample, timestep (one per item), "
                 "encoder_hidden_states).sample"},
        "vae": {"scale_factor": f, "scaling_factor": vae.config.scaling_factor,
                "note": "enc_mean/enc_logvar = vae.encode(image).latent_dist; dec_out = vae.decode(latents).sample (raw)"},
        "e2e": {**e, "output_type": "np", "timesteps": timesteps,
                "init_noise_sigma": float(pipe.scheduler.init_noise_sigma),
                "scheduler_class": type(pipe.scheduler).__name__,
                "effective_scheduler_config": mf.clean_config(pipe.scheduler.config)},
    }
    J["tensors"] = {k: {"shape": list(t.shape), "dtype": "float32"} for k, t in sorted(T.items())}
    bad = [k for k, t in T.items() if not bool(torch.isfinite(t).all())]
    if bad:  # e.g. block_out_channels[0] = 3 with freq_shift 1: the sinusoid divides 0 by 0
        raise FloatingPointError(f"{v['name']}: non-finite reference tensors {bad}")
    return T, J


@torch.no_grad()
def verify() -> None:
    dirs = sorted(p for p in OUT.iterdir() if p.is_dir())
    assert [d.name for d in dirs] == [v["name"] for v in VARIANTS], "variant folders do not match VARIANTS"
    with tempfile.TemporaryDirectory() as tmp:
        for i, v in enumerate(VARIANTS):
            d = OUT / v["name"]
            pipe = load(assemble(d, Path(tmp)))
            R = load_file(str(d / "reference.safetensors"))
            J = json.loads((d / "reference.json").read_text(encoding="utf-8"))
            uo = pipe.unet(R["unet.sample"], R["unet.timestep"].long(), encoder_hidden_states=R["unet.encoder_hidden_states"]).sample
            assert torch.equal(uo, R["unet.out"]), v["name"]
            dist = pipe.vae.encode(R["vae.image"]).latent_dist
            assert torch.equal(dist.mean, R["vae.enc_mean"]) and torch.equal(dist.logvar, R["vae.enc_logvar"]), v["name"]
            assert torch.equal(pipe.vae.decode(R["vae.latents"]).sample, R["vae.dec_out"]), v["name"]
            e = J["e2e"]
            img, *_ = mf.run_e2e(pipe, e, R["e2e.latents"], e["guidance_scale"], capture=False)
            assert torch.equal(img, R["e2e.image"]), v["name"]
            print(f"verify: {v['name']} OK (loads with StableDiffusionPipeline.from_pretrained; unet, vae, e2e bit-exact)")


# ----------------------------------------------------------------------------------------
# random configs (--random N): not committed, for fuzzing the Rust side with many more variants
# ----------------------------------------------------------------------------------------


def random_variant(rng, name: str) -> dict:
    """A random SD-class config (UNet + VAE + scheduler + request); may be rejected by diffusers (caller retries)."""
    ch = lambda lo, hi: rng.choice([c for c in range(lo, hi + 1)])  # noqa: E731
    n = rng.randint(1, 4)
    g = rng.choice([1, 2, 3, 4])
    channels = [g * ch(1, max(1, 16 // g)) for _ in range(n)]
    channels = [max(c, 2) if c % g == 0 else c for c in channels]
    heads = [rng.choice([h for h in range(1, 9) if c % h == 0]) for c in channels]
    down = [rng.choice([CA, D]) for _ in range(n)]
    up = [rng.choice([CU, U]) for _ in range(n)]
    pick = lambda one, many: one if rng.random() < 0.5 else many  # noqa: E731
    layers = pick(rng.randint(1, 2), [rng.randint(1, 2) for _ in range(n)])
    tl = pick(rng.randint(1, 2), [rng.randint(1, 2) for _ in range(n)])
    if len(set(heads)) == 1 and rng.random() < 0.5:
        heads = heads[0]
    oca = pick(rng.random() < 0.3, [rng.random() < 0.3 for _ in range(n)])
    latent = rng.choice([2, 3, 4, 4])
    kw = dict(
        layers_per_block=layers, transformer_layers_per_block=tl, attention_head_dim=heads, norm_num_groups=g,
        only_cross_attention=oca, in_channels=latent, out_channels=latent,
        cross_attention_dim=pick(16, [16] * n),
        use_linear_projection=rng.random() < 0.5, upcast_attention=rng.random() < 0.3,
        mid_block_type=rng.choice(["UNetMidBlock2DCrossAttn", "UNetMidBlock2DCrossAttn", None]),
        flip_sin_to_cos=rng.random() < 0.7, freq_shift=rng.choice([0, 0, 1]),
        conv_in_kernel=rng.choice([1, 3, 3, 5]), conv_out_kernel=rng.choice([1, 3, 3, 5]),
        time_embedding_dim=rng.choice([None, None, 12, 20, 24]),
        mid_block_scale_factor=rng.choice([1.0, 1.0, 0.7, 1.414]),
        resnet_out_scale_factor=rng.choice([1.0, 1.0, 2.0]),
        center_input_sample=rng.random() < 0.3, downsample_padding=rng.choice([0, 1, 1]),
        norm_eps=rng.choice([1e-5, 1e-6, 1e-3, 1e-2]),
    )
    nv = rng.randint(1, 4)
    gv = rng.choice([1, 2, 4])
    vch = [gv * ch(1, max(1, 16 // gv)) for _ in range(nv)]
    vk = dict(use_quant_conv=rng.random() < 0.7, use_post_quant_conv=rng.random() < 0.7,
              mid_block_add_attention=rng.random() < 0.7, scaling_factor=rng.choice([0.18215, 0.13025, 0.5, 1.0]))
    cls = rng.choice(list(SCHEDULERS))
    base = {"DDIMScheduler": DDIM, "DPMSolverMultistepScheduler": DPM, "EulerDiscreteScheduler": EULER}[cls]
    sk = dict(base, prediction_type=rng.choice(["epsilon", "v_prediction"]),
              timestep_spacing=rng.choice(["leading", "linspace", "trailing"]), steps_offset=rng.choice([0, 1]))
    if cls != "DDIMScheduler" and rng.random() < 0.3:
        sk["use_karras_sigmas"] = True
    if cls == "DDIMScheduler" and rng.random() < 0.3:
        sk["clip_sample"] = True
    f = 2 ** (nv - 1)
    hw = lambda: 8 * rng.randint(max(1, f // 8), max(2, 48 // 8))  # noqa: E731
    return dict(
        name=name, covers="random config (tools/make_variant_fixtures.py --random)",
        unet=unet(down, up, channels, **kw), vae=vae(nv, vch, layers=rng.randint(1, 2), latent=latent, groups=gv, **vk),
        sched=(cls, sk), dtype=dict(unet=rng.choice(["fp16", "fp32"]), vae=rng.choice(["fp16", "bf16", "fp32"])),
        unet_hw=(rng.randint(3, 12), rng.randint(3, 12)), vae_hw=(f * rng.randint(1, 4), f * rng.randint(1, 4)),
        timesteps=sorted(rng.sample(range(1000), 2), reverse=True),
        e2e=dict(prompt="a random prompt", negative_prompt=rng.choice([None, "blurry"]),
                 num_inference_steps=rng.randint(2, 4), guidance_scale=rng.choice([1.0, 4.5, 6.0]), height=hw(), width=hw()),
    )


def make_random(count: int, seed: int, out: Path) -> None:
    import random

    rng = random.Random(seed)
    out.mkdir(parents=True, exist_ok=True)
    made = rejected = 0
    with tempfile.TemporaryDirectory() as tmp:
        while made < count:
            i = 1000 + made
            v = random_variant(rng, f"r{seed}-{made:03d}")
            d = out / v["name"]
            if d.exists():
                shutil.rmtree(d)
            try:
                write_components(i, v, d)
                pipe = load(assemble(d, Path(tmp)))
                T, J = references(i, v, pipe)
            except Exception as e:  # diffusers refuses the config, cannot run it at this size, or gives NaN
                rejected += 1
                shutil.rmtree(d, ignore_errors=True)
                print(f"  rejected by diffusers: {type(e).__name__}: {str(e)[:120]}")
                continue
            mf.save_tensors(d / "reference.safetensors", T, {"generator": "tools/make_variant_fixtures.py --random"})
            mf.write_json(d / "reference.json", J)
            made += 1
            print(f"{v['name']}: levels {len(v['unet']['block_out_channels'])}, vae f={pipe.vae_scale_factor}, "
                  f"{v['sched'][0]}")
    print(f"{count} random variants in {out} ({rejected} configs rejected by diffusers)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--verify", action="store_true", help="only verify the committed variants")
    ap.add_argument("--random", type=int, metavar="N", help="instead: write N random variants to --out (fuzzing)")
    ap.add_argument("--seed", type=int, default=0, help="seed of --random")
    ap.add_argument("--out", type=Path, help="output folder of --random")
    args = ap.parse_args()
    if args.random:
        if args.out is None:
            ap.error("--random needs --out")
        make_random(args.random, args.seed, args.out)
        return
    if not args.verify:
        names = [v["name"] for v in VARIANTS]
        assert len(names) == len(set(names))
        if OUT.exists():
            shutil.rmtree(OUT)
        OUT.mkdir(parents=True)
        with tempfile.TemporaryDirectory() as tmp:
            for i, v in enumerate(VARIANTS):
                d = OUT / v["name"]
                write_components(i, v, d)
                pipe = load(assemble(d, Path(tmp)))
                T, J = references(i, v, pipe)
                mf.save_tensors(d / "reference.safetensors", T, {"generator": "tools/make_variant_fixtures.py"})
                mf.write_json(d / "reference.json", J)
                img = T["e2e.image"]
                print(f"{v['name']}: unet.out std {float(T['unet.out'].std()):.3f}, e2e image {tuple(img.shape)} "
                      f"mean {float(img.mean()):.3f} clipped {float(((img == 0) | (img == 1)).float().mean()):.3f}, "
                      f"timesteps {J['e2e']['timesteps']}, {mf.dir_size(d) / 1e3:.0f} kB")
    verify()
    print(f"{mf.rel(OUT)}: {mf.dir_size(OUT) / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
