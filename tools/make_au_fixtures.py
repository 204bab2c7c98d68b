#!/usr/bin/env python3
"""Generate the AU-adapter / LoRA fixtures (FineFace layout) and their PyTorch references.

Usage (from the repository root, same venv/pins as tools/make_fixtures.py, plus `peft`):

    .venv/bin/python tools/make_au_fixtures.py            # regenerate tests/fixtures/au + verify
    .venv/bin/python tools/make_au_fixtures.py --verify   # only re-check the committed fixtures

What is built (see tools/README.md, "AU adapter and LoRA fixtures", for every key):

* a tiny SD-2.x-shaped `UNet2DConditionModel` (linear projections, per-block head counts,
  `upcast_attention`, `cross_attention_dim` 16 so it pairs with `sd1-tiny`'s text encoder and VAE);
* FineFace's three released files, produced the way FineFace's `train.py` produces them:
  `attn_processors.ckpt` (`torch.save` of a plain dict: every `...attn2.processor.au_to_{k,v}.weight`
  of `unet.state_dict()`), `au_encoder.ckpt` (`torch.save(au_encoder.state_dict())`, an OrderedDict)
  and `pytorch_lora_weights.safetensors` (`StableDiffusionPipeline.save_lora_weights(unet_lora_layers=
  get_peft_model_state_dict(unet, adapter_name="unet"))`: PEFT `lora_A`/`lora_B` keys, no alpha);
* the same LoRA converted to the older diffusers key style (`lora.down`/`lora.up`);
* our own `au_adapter/` folder format (config.json + one safetensors), a 1-token variant with AU
  encoder hidden 2 (tokens zero-padded 14 -> 16) and a 2-token variant (hidden 3, padded 15 -> 16);
* malformed files for the error tests (`bad/`).

The AU attention processor and the AU encoder below are this project's own reference
implementation of the mechanism (out = softmax(q k^T/sqrt(d)) v + au_scale * softmax(q k_au^T/sqrt(d)) v_au,
per head, before `to_out`), installed on the attn2 layers of a diffusers UNet with
`unet.set_attn_processor(dict)`; AU tokens and the scale travel in `cross_attention_kwargs`.

Every reference is computed from the files as written (reloaded from disk), LoRA loaded through
diffusers' own loader (`pipe.load_lora_weights` + `fuse_lora(lora_scale)`), and the script ends by
recomputing everything from disk and checking bit-exact reproduction.
"""

from __future__ import annotations

import argparse
import copy
import io
import json
import shutil
import sys
import zipfile
from collections import OrderedDict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_fixtures as mf  # noqa: E402  (offline env, 1 thread, deterministic algorithms)
from au_reference import AUAttnProcessor, AUEncoder, attn2_layers, install_au_processors  # noqa: E402,F401

import numpy as np  # noqa: E402
import peft  # noqa: E402
import torch  # noqa: E402
from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel  # noqa: E402
from diffusers.utils import convert_state_dict_to_diffusers  # noqa: E402
from peft import LoraConfig  # noqa: E402
from peft.utils import get_peft_model_state_dict  # noqa: E402
from safetensors.torch import load_file  # noqa: E402
from transformers import CLIPTextModel, CLIPTokenizer  # noqa: E402
import transformers  # noqa: E402

transformers.utils.logging.disable_progress_bar()

ROOT = mf.ROOT
SD1 = mf.SD1_DIR
OUT = mf.FIX / "au"
UNET_DIR = OUT / "unet"
FF_DIR = OUT / "fineface"
LORA_DIFFUSERS_DIR = OUT / "lora_diffusers"
ADAPTER_DIR = OUT / "au_adapter"
ADAPTER2_DIR = OUT / "au_adapter_2tok"
BAD = OUT / "bad"

FF_PROCESSORS = "attn_processors.ckpt"
FF_ENCODER = "au_encoder.ckpt"
FF_LORA = "pytorch_lora_weights.safetensors"

# FineFace's AU order (fineface_pipeline.py: AUS = [1, 2, 4, 5, 6, 9, 12, 15, 17, 20, 25, 26]).
FINEFACE_AUS = ["AU1", "AU2", "AU4", "AU5", "AU6", "AU9", "AU12", "AU15", "AU17", "AU20", "AU25", "AU26"]
N_AUS = len(FINEFACE_AUS)
CROSS_DIM = 16  # = sd1-tiny text encoder hidden size

UNET_CFG = dict(
    sample_size=8,
    in_channels=4,
    out_channels=4,
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    block_out_channels=(8, 16, 16),
    layers_per_block=1,
    attention_head_dim=[2, 4, 2],  # legacy naming = heads per block: head dims 4, 4; mid 2 heads of 8
    cross_attention_dim=CROSS_DIM,
    norm_num_groups=4,
    norm_eps=1e-5,
    use_linear_projection=True,
    upcast_attention=True,
    flip_sin_to_cos=True,
    freq_shift=0,
    act_fn="silu",
)

LORA_RANK = 4
LORA_TARGETS = ["to_k", "to_q", "to_v", "to_out.0"]  # FineFace train.py / diffusers train_text_to_image_lora.py

# (name, hidden, num_tokens, folder) of the AU encoders.
FINEFACE_HIDDEN = 4  # 12 + 4 = 16: no padding
ADAPTER_HIDDEN = 2  # 12 + 2 = 14: padded with 2 zeros
ADAPTER2_HIDDEN, ADAPTER2_TOKENS = 3, 2  # 2 tokens of 12 + 3 = 15: padded with 1 zero each

AU_ROWS = ["AU12=4,AU6=3", "AU1=2,AU26=5"]
UNET_IN = dict(sample_shape=(2, 4, 8, 8), timesteps=[901, 38], seed=71)
AU_SCALES = [0.0, 1.0, 2.5]
LORA_SCALES = [1.0, 0.5]

E2E = dict(
    prompt="a closeup photo of a smiling woman",
    negative_prompt=None,
    num_inference_steps=4,
    guidance_scale=7.5,
    height=32,
    width=32,
    latents_seed=4242,
    aus="AU12=4,AU6=3",
    au_scale=1.0,
)

SEEDS = dict(unet=3001, unet_perturb=3011, procs=3021, encoder=3031, lora=3041, adapter=3051, adapter2=3061)


# ----------------------------------------------------------------------------------------
# the reference implementation: AU encoder and AU attention processor
# ----------------------------------------------------------------------------------------


def parse_aus(spec: str) -> torch.Tensor:
    """"AU12=4,AU6=3" -> [12] in FineFace order (unnamed AUs 0)."""
    v = torch.zeros(N_AUS)
    for part in spec.split(","):
        code, val = part.split("=")
        v[FINEFACE_AUS.index(code.strip())] = float(val)
    return v


class AUAttnProcessorBmm(AUAttnProcessor):
    """Independent formulation (FineFace's: head_to_batch_dim + get_attention_scores + bmm) for the self-check."""

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None,
                 au_tokens=None, au_scale=1.0):
        q = attn.head_to_batch_dim(attn.to_q(hidden_states))
        k = attn.head_to_batch_dim(attn.to_k(encoder_hidden_states))
        v = attn.head_to_batch_dim(attn.to_v(encoder_hidden_states))
        h = attn.batch_to_head_dim(torch.bmm(attn.get_attention_scores(q, k, None), v))
        if au_tokens is not None:
            ak = attn.head_to_batch_dim(self.au_to_k(au_tokens))
            av = attn.head_to_batch_dim(self.au_to_v(au_tokens))
            h = h + au_scale * attn.batch_to_head_dim(torch.bmm(attn.get_attention_scores(q, ak, None), av))
        return attn.to_out[1](attn.to_out[0](h))


def load_au_processors(unet, sd: dict, cls=AUAttnProcessor) -> None:
    """Installs AU processors and loads `<path>.processor.au_to_{k,v}.weight` from `sd`; every key must be used."""
    au = install_au_processors(unet, cls)
    used = set()
    with torch.no_grad():
        for path, p in au.items():
            for name in ("au_to_k", "au_to_v"):
                key = f"{path}.processor.{name}.weight"
                w = sd[key]
                lin = getattr(p, name)
                assert w.shape == lin.weight.shape, (key, w.shape, lin.weight.shape)
                lin.weight.copy_(w)
                used.add(key)
    assert used == set(sd), set(sd) ^ used


def load_encoder(sd: dict, num_tokens: int = 1, include_raw: bool = True) -> AUEncoder:
    hidden = sd["au_encoder.weight"].shape[0] // num_tokens
    enc = AUEncoder(hidden, CROSS_DIM, num_tokens, include_raw).eval()
    missing, unexpected = enc.load_state_dict({k: v for k, v in sd.items() if k.startswith("au_encoder.")}, strict=True)
    assert not missing and not unexpected
    return enc


# ----------------------------------------------------------------------------------------
# building the fixture files
# ----------------------------------------------------------------------------------------


@torch.no_grad()
def perturb_(params, seed: int, min_scale: float = 0.05) -> None:
    g = torch.Generator().manual_seed(seed)
    for _, p in sorted(params, key=lambda kv: kv[0]):
        std = float(p.float().std()) if p.numel() > 1 else 0.0
        p.add_(torch.randn(p.shape, generator=g) * max(0.1 * std, min_scale))


def torch_save(obj, path: Path) -> None:
    """`torch.save(obj, path)` to a path, as FineFace does: the zip's top folder is the file stem."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(obj, str(path))


def build() -> dict:
    """Writes every file under tests/fixtures/au (except the references). Returns facts for reference.json."""
    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir(parents=True)
    facts: dict = {}

    # --- base UNet ----------------------------------------------------------------------
    torch.manual_seed(SEEDS["unet"])
    unet = UNet2DConditionModel(**UNET_CFG).eval()
    mf.perturb(unet, SEEDS["unet_perturb"])
    unet.save_pretrained(str(UNET_DIR), safe_serialization=True)

    # --- FineFace: processors, LoRA, encoder, exactly like FineFace's train.py ---------------
    # hack_unet_attn_layers + "Init au_adapter weights with copies of cross-attention"
    unet.set_default_attn_processor()
    au = install_au_processors(unet)
    for path, p in au.items():
        attn = attn2_layers(unet)[path]
        p.au_to_k = copy.deepcopy(attn.to_k)
        p.au_to_v = copy.deepcopy(attn.to_v)
    # (trained weights stand-in: perturb every AU weight; FineFace starts from copies of to_k/to_v)
    perturb_([(n, q) for n, q in unet.named_parameters() if ".processor." in n], SEEDS["procs"], 0.1)
    # LoRA exactly as FineFace: LoraConfig(r=rank, init_lora_weights="gaussian", target_modules=[...]), PEFT's
    # default lora_alpha (8) -> scale alpha/r = 2 *during training*.
    cfg = LoraConfig(r=LORA_RANK, init_lora_weights="gaussian", target_modules=LORA_TARGETS)
    unet.add_adapter(cfg, adapter_name="unet")
    facts["peft_lora_alpha_at_training"] = cfg.lora_alpha
    lora_params = [(n, q) for n, q in unet.named_parameters() if ".lora_" in n]
    assert lora_params and not any(".processor." in n for n, _ in lora_params)
    # lora_B starts at zero: perturb it (and A) so the update is ~10-20% of the base weights
    perturb_(lora_params, SEEDS["lora"], 0.1)
    filtered_sd = {name: t for name, t in unet.state_dict().items() if "attn2.processor" in name}
    assert len(filtered_sd) == 2 * len(au), len(filtered_sd)
    torch_save(filtered_sd, FF_DIR / FF_PROCESSORS)
    peft_sd = get_peft_model_state_dict(unet, adapter_name="unet")
    StableDiffusionPipeline.save_lora_weights(save_directory=str(FF_DIR), unet_lora_layers=peft_sd)
    # older diffusers key style (`lora.down` / `lora.up`), same tensors: what train_text_to_image_lora.py writes
    StableDiffusionPipeline.save_lora_weights(save_directory=str(LORA_DIFFUSERS_DIR),
                                              unet_lora_layers=convert_state_dict_to_diffusers(peft_sd))
    torch.manual_seed(SEEDS["encoder"])
    enc = AUEncoder(FINEFACE_HIDDEN, CROSS_DIM)
    perturb_(list(enc.named_parameters()), SEEDS["encoder"] + 1, 0.1)
    torch_save(enc.state_dict(), FF_DIR / FF_ENCODER)  # an OrderedDict, as FineFace's train.py saves it

    # --- our au_adapter/ format ---------------------------------------------------------
    for d, hidden, tokens, seed in ((ADAPTER_DIR, ADAPTER_HIDDEN, 1, SEEDS["adapter"]),
                                    (ADAPTER2_DIR, ADAPTER2_HIDDEN, ADAPTER2_TOKENS, SEEDS["adapter2"])):
        torch.manual_seed(seed)
        base = UNet2DConditionModel(**UNET_CFG)
        procs = install_au_processors(base)
        e = AUEncoder(hidden, CROSS_DIM, tokens)
        tensors = {}
        g = torch.Generator().manual_seed(seed + 1)
        for path, p in procs.items():
            for name in ("au_to_k", "au_to_v"):
                w = getattr(p, name).weight
                tensors[f"{path}.processor.{name}.weight"] = w + 0.1 * torch.randn(w.shape, generator=g)
        for k, v in e.state_dict().items():
            tensors[k] = v + 0.1 * torch.randn(v.shape, generator=g)
        mf.save_tensors(d / "diffusion_pytorch_model.safetensors", tensors, {"format": "pt"})
        mf.write_json(d / "config.json", {"au_set": "fineface", "hidden_dim": hidden, "include_raw": True,
                                          "num_tokens": tokens, "cross_attention_dim": CROSS_DIM})

    # --- malformed files ----------------------------------------------------------------
    good = (FF_DIR / FF_PROCESSORS).read_bytes()
    (BAD / "truncated").mkdir(parents=True)
    (BAD / "truncated" / FF_PROCESSORS).write_bytes(good[: len(good) * 3 // 5])
    lora = load_file(str(FF_DIR / FF_LORA))
    bad_key = "unet.down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.lora_A.weight"
    assert lora[bad_key].shape == (LORA_RANK, CROSS_DIM)
    shape_bad = dict(lora)
    shape_bad[bad_key] = lora[bad_key][:, : CROSS_DIM // 2].contiguous()  # in_features 8, the UNet has 16
    mf.save_tensors(BAD / "lora_shape" / FF_LORA, shape_bad, {"format": "pt"})
    unknown = dict(lora)
    src = "unet.mid_block.attentions.0.transformer_blocks.0.attn1.to_q"
    for s in ("lora_A", "lora_B"):
        unknown[f"unet.mid_block.attentions.0.transformer_blocks.0.attn3.to_q.{s}.weight"] = lora[f"{src}.{s}.weight"]
    mf.save_tensors(BAD / "lora_unknown_module" / FF_LORA, unknown, {"format": "pt"})
    facts["bad"] = {
        "truncated": f"bad/truncated/{FF_PROCESSORS}: the first 3/5 of fineface/{FF_PROCESSORS} (zip without central directory)",
        "lora_shape": {"file": f"bad/lora_shape/{FF_LORA}", "key": bad_key, "shape": [LORA_RANK, CROSS_DIM // 2],
                       "expected_in_features": CROSS_DIM},
        "lora_unknown_module": {"file": f"bad/lora_unknown_module/{FF_LORA}",
                                "module": "unet.mid_block.attentions.0.transformer_blocks.0.attn3.to_q"},
    }
    return facts


# ----------------------------------------------------------------------------------------
# loading the files back (everything below works from disk only)
# ----------------------------------------------------------------------------------------


def load_base_unet() -> UNet2DConditionModel:
    unet = UNet2DConditionModel.from_pretrained(str(UNET_DIR), dtype=torch.float32, local_files_only=True).eval()
    fsd = load_file(str(UNET_DIR / "diffusion_pytorch_model.safetensors"))
    msd = unet.state_dict()
    assert set(fsd) == set(msd) and all(torch.equal(fsd[k], msd[k]) for k in fsd)
    return unet


def sd1_components():
    tok = CLIPTokenizer.from_pretrained(str(SD1), subfolder="tokenizer", local_files_only=True)
    te = CLIPTextModel.from_pretrained(str(SD1), subfolder="text_encoder", dtype=torch.float32, local_files_only=True).eval()
    vae = AutoencoderKL.from_pretrained(str(SD1), subfolder="vae", dtype=torch.float32, local_files_only=True).eval()
    sch = DDIMScheduler.from_pretrained(str(SD1), subfolder="scheduler", local_files_only=True)
    return tok, te, vae, sch


def make_pipe(lora_file: Path | None, lora_scale: float, comps=None) -> StableDiffusionPipeline:
    """sd1-tiny tokenizer/text encoder/VAE/DDIM + the AU UNet, LoRA (if any) loaded by diffusers and fused."""
    tok, te, vae, sch = comps or sd1_components()
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=te, tokenizer=tok, unet=load_base_unet(), scheduler=sch,
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    if lora_file is not None:
        base = {k: v.clone() for k, v in pipe.unet.state_dict().items()}
        pipe.load_lora_weights(str(lora_file.parent), weight_name=lora_file.name, adapter_name="fineface")
        cfg = pipe.unet.peft_config["fineface"]
        assert (cfg.r, cfg.lora_alpha) == (LORA_RANK, LORA_RANK), (cfg.r, cfg.lora_alpha)  # file has no alpha
        pipe.fuse_lora(lora_scale=lora_scale)
        pipe.unload_lora_weights()
        fused = pipe.unet.state_dict()
        assert set(fused) == set(base)
        # independent check of what diffusers did: W + scale * (alpha/r = 1) * up @ down
        lora = load_file(str(lora_file))
        n = 0
        for k in lora:
            if k.endswith((".lora_A.weight", ".lora.down.weight")):
                down_suffix = ".lora_A.weight" if k.endswith(".lora_A.weight") else ".lora.down.weight"
                up_key = k.replace(".lora_A.", ".lora_B.") if down_suffix == ".lora_A.weight" else k.replace(".lora.down.", ".lora.up.")
                module = k[len("unet."): -len(down_suffix)]
                expect = base[f"{module}.weight"] + lora_scale * (lora[up_key] @ lora[k])
                assert torch.allclose(fused[f"{module}.weight"], expect, rtol=1e-5, atol=1e-6), module
                n += 1
        assert n == len(lora) // 2
    pipe.unet.eval()
    return pipe


def read_fineface():
    procs = torch.load(str(FF_DIR / FF_PROCESSORS), map_location="cpu", weights_only=True)
    enc = torch.load(str(FF_DIR / FF_ENCODER), map_location="cpu", weights_only=True)
    assert type(procs) is dict and isinstance(enc, OrderedDict), (type(procs), type(enc))
    return procs, load_encoder(enc)


def read_adapter(d: Path):
    cfg = json.loads((d / "config.json").read_text())
    sd = load_file(str(d / "diffusion_pytorch_model.safetensors"))
    procs = {k: v for k, v in sd.items() if ".processor." in k}
    enc = load_encoder({k: v for k, v in sd.items() if k.startswith("au_encoder.")}, cfg["num_tokens"], cfg["include_raw"])
    assert set(procs) | {"au_encoder.weight", "au_encoder.bias"} == set(sd)
    return procs, enc, cfg


# ----------------------------------------------------------------------------------------
# references
# ----------------------------------------------------------------------------------------


def unet_inputs():
    g = torch.Generator().manual_seed(UNET_IN["seed"])
    sample = torch.randn(UNET_IN["sample_shape"], generator=g)
    ehs = torch.randn((UNET_IN["sample_shape"][0], 77, CROSS_DIM), generator=g)
    ts = torch.tensor(UNET_IN["timesteps"], dtype=torch.int64)
    aus = torch.stack([parse_aus(s) for s in AU_ROWS])
    return sample, ts, ehs, aus


def unet_call(unet, sample, ts, ehs, tokens, scale):
    kw = None if tokens is None else {"au_tokens": tokens, "au_scale": scale}
    return mf.f32(unet(sample, ts, encoder_hidden_states=ehs, cross_attention_kwargs=kw).sample)


def run_loop(pipe, enc, cfg: dict, latents: torch.Tensor, au_scale: float, capture: bool):
    """StableDiffusionPipeline.__call__ step by step, with per-half AU tokens ([zero AUs, requested AUs])."""
    unet, sch = pipe.unet, pipe.scheduler
    cond, uncond = pipe.encode_prompt(cfg["prompt"], "cpu", 1, True, cfg["negative_prompt"])
    embeds = torch.cat([uncond, cond])
    aus = parse_aus(cfg["aus"])[None]
    tokens = torch.cat([enc(torch.zeros_like(aus)), enc(aus)])
    sch.set_timesteps(cfg["num_inference_steps"], device="cpu")
    x = latents.clone() * sch.init_noise_sigma
    unet_out, step_latents = [], []
    for t in sch.timesteps:
        xin = sch.scale_model_input(torch.cat([x] * 2), t)
        eps = unet(xin, t, encoder_hidden_states=embeds, timestep_cond=None,
                   cross_attention_kwargs={"au_tokens": tokens, "au_scale": au_scale}, added_cond_kwargs=None,
                   return_dict=False)[0]
        if capture:
            unet_out.append(mf.f32(eps))
        eps_u, eps_c = eps.chunk(2)
        eps = eps_u + cfg["guidance_scale"] * (eps_c - eps_u)
        x = sch.step(eps, t, x, eta=0.0, return_dict=False)[0]
        if capture:
            step_latents.append(mf.f32(x))
    image = pipe.vae.decode(x / pipe.vae.config.scaling_factor, return_dict=False, generator=None)[0]
    image = (image / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).float()
    return mf.f32(image), tokens, unet_out, step_latents, [int(t) for t in sch.timesteps]


def plain_pipeline_image(pipe, cfg, latents) -> torch.Tensor:
    res = pipe(prompt=cfg["prompt"], negative_prompt=cfg["negative_prompt"], num_inference_steps=cfg["num_inference_steps"],
               guidance_scale=cfg["guidance_scale"], height=cfg["height"], width=cfg["width"], latents=latents.clone(),
               output_type="np")
    return torch.from_numpy(np.ascontiguousarray(res.images)).to(torch.float32)


@torch.no_grad()
def compute_references() -> tuple[dict, dict]:
    T: dict[str, torch.Tensor] = {}
    J: dict = {"versions": {**mf.versions(), "peft": peft.__version__}}
    sample, ts, ehs, aus = unet_inputs()
    T.update({"unet.sample": sample, "unet.timestep": ts.to(torch.float32), "unet.encoder_hidden_states": ehs, "unet.aus": aus})
    comps = sd1_components()

    # (a) FineFace: LoRA fused at scale s, AU processors, AU scales
    ff_procs, ff_enc = read_fineface()
    tokens = mf.f32(ff_enc(aus))
    T["unet.au_tokens"] = tokens
    # FineFace's own formula for 1 token
    lin = ff_enc.au_encoder
    assert torch.equal(tokens, torch.cat([aus, lin(aus), torch.zeros(2, CROSS_DIM - N_AUS - FINEFACE_HIDDEN)], 1).reshape(-1, 1, CROSS_DIM))
    ff_pipes = {}
    for ls in LORA_SCALES:
        pipe = make_pipe(FF_DIR / FF_LORA, ls, comps)
        unet = pipe.unet
        if ls == 1.0:
            T["unet.lora.out"] = unet_call(unet, sample, ts, ehs, None, 0.0)  # LoRA only, default processors
        load_au_processors(unet, ff_procs)
        assert all(isinstance(unet.attn_processors[f"{p}.processor"], AUAttnProcessor) for p in attn2_layers(unet))
        scales = AU_SCALES if ls == 1.0 else [1.0]
        for s in scales:
            key = f"unet.lora{'' if ls == 1.0 else '0p5'}.au{str(s).replace('.', 'p')}.out"
            T[key] = unet_call(unet, sample, ts, ehs, tokens, s)
        ff_pipes[ls] = pipe
    # the diffusers-key-style LoRA is the same update
    pipe_d = make_pipe(LORA_DIFFUSERS_DIR / FF_LORA, 1.0, comps)
    load_au_processors(pipe_d.unet, ff_procs)
    assert torch.equal(unet_call(pipe_d.unet, sample, ts, ehs, tokens, 1.0), T["unet.lora.au1p0.out"])
    del pipe_d
    # base UNet without anything (sanity anchor)
    base = load_base_unet()
    T["unet.base.out"] = unet_call(base, sample, ts, ehs, None, 0.0)

    # (b) our au_adapter/ format, no LoRA: 1 token (hidden 2, padded) and 2 tokens (hidden 3, padded)
    for tag, d in (("adapter", ADAPTER_DIR), ("adapter2tok", ADAPTER2_DIR)):
        procs, enc, cfg = read_adapter(d)
        tok = mf.f32(enc(aus))
        T[f"unet.{tag}.au_tokens"] = tok
        unet = load_base_unet()
        load_au_processors(unet, procs)
        for s in AU_SCALES:
            T[f"unet.{tag}.au{str(s).replace('.', 'p')}.out"] = unet_call(unet, sample, ts, ehs, tok, s)
        # independent formulation of the processor agrees
        unet_b = load_base_unet()
        load_au_processors(unet_b, procs, AUAttnProcessorBmm)
        alt = unet_call(unet_b, sample, ts, ehs, tok, 2.5)
        err = float((alt - T[f"unet.{tag}.au2p5.out"]).norm() / T[f"unet.{tag}.au2p5.out"].norm())
        assert err < 1e-5, (tag, err)
        J.setdefault("self_check", {})[f"{tag}_bmm_vs_sdpa_rel_l2"] = err

    # (c) end to end, FineFace triple (LoRA scale 1)
    e = E2E
    pipe = ff_pipes[1.0]
    h, w = e["height"] // pipe.vae_scale_factor, e["width"] // pipe.vae_scale_factor
    g = torch.Generator().manual_seed(e["latents_seed"])
    latents = torch.randn((1, 4, h, w), generator=g)
    T["e2e.latents"] = latents
    img, tok, uo, sl, timesteps = run_loop(pipe, ff_enc, e, latents, e["au_scale"], capture=True)
    T["e2e.image"] = img
    T["e2e.au_tokens"] = mf.f32(tok)
    T["e2e.unet_out"] = torch.stack(uo)
    T["e2e.step_latents"] = torch.stack(sl)
    img0, *_ = run_loop(pipe, ff_enc, e, latents, 0.0, capture=False)
    T["e2e.image_au0"] = img0
    # au_scale 0 == StableDiffusionPipeline with the same (LoRA-fused) UNet and diffusers' default processors
    plain = make_pipe(FF_DIR / FF_LORA, 1.0, sd1_components())
    assert not any(isinstance(p, AUAttnProcessor) for p in plain.unet.attn_processors.values())
    plain_img = plain_pipeline_image(plain, e, latents)
    assert torch.equal(plain_img, img0), float((plain_img - img0).abs().max())
    # ... and the AU-processor UNet through StableDiffusionPipeline itself at au_scale 0 (any tokens)
    sd_img = plain_pipeline_image_with_kwargs(pipe, e, latents, {"au_tokens": tok, "au_scale": 0.0})
    assert torch.equal(sd_img, img0)
    diff = float((img - img0).abs().max())
    assert diff > 0.05, diff  # the AU branch visibly changes the image
    J["self_check"].update({
        "e2e_au0_equals_StableDiffusionPipeline": True,
        "e2e_max_abs_image_vs_au0": diff,
        "lora_changes_unet_rel_l2": float((T["unet.lora.out"] - T["unet.base.out"]).norm() / T["unet.base.out"].norm()),
        "au_branch_changes_unet_rel_l2": float((T["unet.lora.au1p0.out"] - T["unet.lora.out"]).norm() / T["unet.lora.out"].norm()),
        "au0_equals_lora_only": bool(torch.equal(T["unet.lora.au0p0.out"], T["unet.lora.out"])),
    })
    assert J["self_check"]["au0_equals_lora_only"]
    assert J["self_check"]["lora_changes_unet_rel_l2"] > 1e-2 and J["self_check"]["au_branch_changes_unet_rel_l2"] > 1e-2

    J["unet"] = {
        "config": {k: list(v) if isinstance(v, tuple) else v for k, v in UNET_CFG.items()},
        "timesteps": UNET_IN["timesteps"],
        "aus": AU_ROWS,
        "au_order": FINEFACE_AUS,
        "au_scales": AU_SCALES,
        "lora_scales": LORA_SCALES,
        "note": "out = unet(sample, timestep (one per row, int64), encoder_hidden_states, "
                "cross_attention_kwargs={'au_tokens': tokens, 'au_scale': s}).sample; tokens = encoder(unet.aus), row i of "
                "the batch gets row i of the tokens",
    }
    J["lora"] = {
        "rank": LORA_RANK,
        "target_modules": LORA_TARGETS,
        "key_style": {"fineface": "PEFT: unet.<module>.lora_A.weight / lora_B.weight",
                      "lora_diffusers": "unet.<module>.lora.down.weight / lora.up.weight"},
        "alpha_in_file": None,
        "peft_lora_alpha_at_training": 8,
        "diffusers_loaded_lora_alpha": LORA_RANK,
        "merge": "W + lora_scale * (alpha / r = 1) * up @ down (diffusers fuse_lora)",
    }
    J["e2e"] = {
        **e,
        "timesteps": timesteps,
        "init_noise_sigma": float(pipe.scheduler.init_noise_sigma),
        "scheduler_class": "DDIMScheduler",
        "components": "tokenizer/text_encoder/vae/scheduler of tests/fixtures/sd1-tiny + tests/fixtures/au/unet, "
                      "LoRA fineface/pytorch_lora_weights.safetensors fused at 1.0, AU processors from fineface/",
        "uncond_aus": "all zero (encoded: concat(0, bias))",
    }
    return T, J


def plain_pipeline_image_with_kwargs(pipe, cfg, latents, kwargs) -> torch.Tensor:
    res = pipe(prompt=cfg["prompt"], negative_prompt=cfg["negative_prompt"], num_inference_steps=cfg["num_inference_steps"],
               guidance_scale=cfg["guidance_scale"], height=cfg["height"], width=cfg["width"], latents=latents.clone(),
               output_type="np", cross_attention_kwargs=kwargs)
    return torch.from_numpy(np.ascontiguousarray(res.images)).to(torch.float32)


@torch.no_grad()
def check_bad_files(facts: dict) -> None:
    """diffusers/torch reject the malformed files too; record what they say."""
    msgs = {}
    try:
        torch.load(io.BytesIO((BAD / "truncated" / FF_PROCESSORS).read_bytes()), weights_only=True)
        raise AssertionError("truncated ckpt loaded")
    except (RuntimeError, ValueError, zipfile.BadZipFile, EOFError, OSError) as err:
        msgs["truncated"] = f"{type(err).__name__}: {str(err).splitlines()[0]}"
    for name in ("lora_shape", "lora_unknown_module"):
        pipe = make_pipe(None, 1.0)
        try:
            pipe.load_lora_weights(str(BAD / name), weight_name=FF_LORA)
            unexpected = [k for k in pipe.unet.state_dict() if "attn3" in k]
            msgs[name] = "loaded without error (diffusers ignores it)" if not unexpected else "loaded"
        except Exception as err:  # noqa: BLE001
            msgs[name] = f"{type(err).__name__}: {str(err).splitlines()[0][:300]}"
    facts["bad"]["torch_diffusers_say"] = msgs


def verify() -> None:
    ref = load_file(str(OUT / "reference.safetensors"))
    T, _ = compute_references()
    assert set(T) == set(ref), set(T) ^ set(ref)
    # Not bit-exact: another torch build or thread count sums the GEMMs in another order.
    worst = 0.0
    for k, v in T.items():
        assert v.shape == ref[k].shape and v.dtype == ref[k].dtype, (k, v.shape, ref[k].shape)
        if v.is_floating_point():
            err = float((v.double() - ref[k].double()).norm() / ref[k].double().norm().clamp(min=1e-30))
            assert err <= 1e-5, (k, err)
            worst = max(worst, err)
        else:
            assert torch.equal(v, ref[k]), k
    print(f"verify: {len(T)} reference tensors reproduced from the files on disk (worst relative L2 {worst:.1e})")


def dir_size(p: Path) -> int:
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--verify", action="store_true", help="only verify the existing fixtures")
    args = ap.parse_args()
    if args.verify:
        verify()
        return
    facts = build()
    check_bad_files(facts)
    T, J = compute_references()
    J["files"] = facts
    J["tensors"] = {k: {"shape": list(v.shape), "dtype": str(v.dtype).replace("torch.", "")} for k, v in sorted(T.items())}
    mf.save_tensors(OUT / "reference.safetensors", T, {"generator": "tools/make_au_fixtures.py"})
    mf.write_json(OUT / "reference.json", J)
    for k, v in sorted(T.items()):
        print(mf.stats(k, v))
    print(json.dumps(J["self_check"], indent=1))
    print(json.dumps(facts["bad"]["torch_diffusers_say"], indent=1))
    verify()
    print(f"{mf.rel(OUT)}: {dir_size(OUT) / 1e6:.3f} MB")


if __name__ == "__main__":
    main()
