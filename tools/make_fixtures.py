#!/usr/bin/env python3
"""Generate the Python/diffusers reference fixtures used by synfer's Rust tests.

Usage (from the repository root):

    python3 -m venv .venv
    .venv/bin/pip install -r tools/requirements.txt
    .venv/bin/python tools/make_fixtures.py            # regenerate everything + verify
    .venv/bin/python tools/make_fixtures.py --verify   # only re-check the committed fixtures

Everything is deterministic (fixed torch seeds, one CPU thread).  No model hub is
contacted: the CLIP BPE vocabulary comes from the `open-clip-torch` wheel on PyPI
(downloaded with `pip download --no-deps`, never installed) and all model weights are
random.  See tools/README.md for the exact layout and key names of every fixture.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

# Never talk to the hub, whatever the environment says.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["DIFFUSERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)

import diffusers  # noqa: E402
import safetensors  # noqa: E402
import tokenizers  # noqa: E402
import transformers  # noqa: E402
from diffusers import (  # noqa: E402
    AutoencoderKL,
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from safetensors.torch import load_file, save_file  # noqa: E402
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer  # noqa: E402

transformers.logging.set_verbosity_error()
diffusers.logging.set_verbosity_error()
diffusers.utils.logging.disable_progress_bar()

ROOT = Path(__file__).resolve().parents[1]
FIX = ROOT / "tests" / "fixtures"
REF = FIX / "reference"
SD1_DIR = FIX / "sd1-tiny"
SD2_DIR = FIX / "sd2-tiny"

OPEN_CLIP_PIN = "open-clip-torch==3.3.0"
BPE_MEMBER = "open_clip/bpe_simple_vocab_16e6.txt.gz"
BPE_SHA256 = "924691ac288e54409236115652ad4aa250f48203de50a9e4722a6ecd48d6804a"
N_MERGES = 49152 - 256 - 2  # 48894, exactly as CLIP's SimpleTokenizer slices the file
VOCAB_SIZE = 49408
BOS, EOS = "<|startoftext|>", "<|endoftext|>"

# ----------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------


def rel(p: Path) -> str:
    return str(p.relative_to(ROOT))


def dumps(obj, ind: int = 0) -> str:
    """Indented JSON, but lists of scalars on one line (keeps id/timestep lists readable and small)."""
    sp = " " * ind
    if isinstance(obj, dict) and obj:
        items = [f"{sp} {json.dumps(str(k), ensure_ascii=False)}: {dumps(v, ind + 1)}" for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + "\n" + sp + "}"
    if isinstance(obj, (list, tuple)) and any(isinstance(x, (dict, list, tuple)) for x in obj):
        items = [sp + " " + dumps(v, ind + 1) for v in obj]
        return "[\n" + ",\n".join(items) + "\n" + sp + "]"
    return json.dumps(obj, ensure_ascii=False, allow_nan=False)


def write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = dumps(obj) + "\n"
    assert json.loads(text) == json.loads(json.dumps(obj, ensure_ascii=False))
    path.write_text(text, encoding="utf-8")


def f32(t: torch.Tensor) -> torch.Tensor:
    return t.detach().to(torch.float32).contiguous().clone()


def save_tensors(path: Path, tensors: dict, meta: dict | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    out = {k: v.detach().contiguous().clone() for k, v in tensors.items()}
    save_file(out, str(path), metadata=meta or {})


def stats(name: str, t) -> str:
    t = torch.as_tensor(np.asarray(t)) if not isinstance(t, torch.Tensor) else t
    t = t.double()
    return f"  {name:<36} {str(tuple(t.shape)):<22} mean {t.mean():+.4f} std {t.std() if t.numel() > 1 else 0:.4f} min {t.min():+.4f} max {t.max():+.4f}"


# ----------------------------------------------------------------------------------------
# CLIP BPE vocabulary
# ----------------------------------------------------------------------------------------


def fetch_bpe_gz(explicit: str | None) -> bytes:
    """Return the bytes of open_clip/bpe_simple_vocab_16e6.txt.gz (sha256-checked)."""
    if explicit:
        p = Path(explicit)
        data = zipfile.ZipFile(p).read(BPE_MEMBER) if p.suffix == ".whl" else p.read_bytes()
    else:
        with tempfile.TemporaryDirectory() as d:
            subprocess.run(
                [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", OPEN_CLIP_PIN, "-d", d],
                check=True,
                stdout=subprocess.DEVNULL,
            )
            (whl,) = list(Path(d).glob("open_clip_torch-*.whl"))
            data = zipfile.ZipFile(whl).read(BPE_MEMBER)
    digest = hashlib.sha256(data).hexdigest()
    if digest != BPE_SHA256:
        raise SystemExit(f"bpe_simple_vocab_16e6.txt.gz sha256 mismatch: {digest} != {BPE_SHA256}")
    return data


def bytes_to_unicode() -> dict[int, str]:
    """CLIP / GPT-2 byte -> printable unicode char table (same order as CLIP's SimpleTokenizer)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(2**8):
        if b not in bs:
            bs.append(b)
            cs.append(2**8 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def build_clip_vocab(gz: bytes) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Reproduce CLIP's SimpleTokenizer vocabulary (== openai/clip-vit-large-patch14 vocab.json)."""
    lines = gzip.decompress(gz).decode("utf-8").split("\n")
    merges = [tuple(m.split()) for m in lines[1 : N_MERGES + 1]]
    assert len(merges) == N_MERGES and all(len(m) == 2 for m in merges)
    vocab = list(bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab]
    vocab += ["".join(m) for m in merges]
    vocab += [BOS, EOS]
    encoder = {tok: i for i, tok in enumerate(vocab)}
    assert len(encoder) == VOCAB_SIZE, len(encoder)
    assert encoder[BOS] == 49406 and encoder[EOS] == 49407
    return encoder, merges


def write_vocab_merges(dst: Path, encoder: dict[str, int], merges) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    # Same serialisation as the hub's openai/clip-vit-large-patch14 vocab.json (961143 bytes).
    (dst / "vocab.json").write_text(json.dumps(encoder, ensure_ascii=False), encoding="utf-8")
    with open(dst / "merges.txt", "w", encoding="utf-8", newline="\n") as f:
        f.write("#version: 0.2\n")
        for a, b in merges:
            f.write(f"{a} {b}\n")


def _added(content: str, with_type: bool) -> dict:
    d = {"content": content, "lstrip": False, "normalized": True, "rstrip": False, "single_word": False}
    return {"__type": "AddedToken", **d} if with_type else d


def write_sd1_tokenizer_configs(dst: Path) -> None:
    """tokenizer_config.json / special_tokens_map.json in the (transformers-4 era) SD 1.5 style."""
    cfg = {
        "add_prefix_space": False,
        "bos_token": _added(BOS, True),
        "do_lower_case": True,
        "eos_token": _added(EOS, True),
        "errors": "replace",
        "model_max_length": 77,
        "pad_token": EOS,
        "special_tokens_map_file": "./special_tokens_map.json",
        "tokenizer_class": "CLIPTokenizer",
        "unk_token": _added(EOS, True),
    }
    smap = {"bos_token": _added(BOS, False), "eos_token": _added(EOS, False), "pad_token": EOS, "unk_token": _added(EOS, False)}
    write_json(dst / "tokenizer_config.json", cfg)
    write_json(dst / "special_tokens_map.json", smap)


# ----------------------------------------------------------------------------------------
# tiny models
# ----------------------------------------------------------------------------------------

SD1_TE = dict(
    vocab_size=VOCAB_SIZE,
    hidden_size=16,
    intermediate_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    max_position_embeddings=77,
    hidden_act="quick_gelu",
    layer_norm_eps=1e-5,
    projection_dim=16,
    bos_token_id=49406,
    eos_token_id=49407,
    pad_token_id=49407,
)
# hidden 8 (not 16) keeps the fp16 49408-row embedding small and makes cross_attention_dim differ from sd1.
SD2_TE = dict(SD1_TE, hidden_size=8, projection_dim=8, num_hidden_layers=3, num_attention_heads=2, intermediate_size=32,
              hidden_act="gelu", pad_token_id=0)

SD1_UNET = dict(
    sample_size=8,
    in_channels=4,
    out_channels=4,
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    block_out_channels=(8, 16, 16),
    layers_per_block=2,
    attention_head_dim=4,  # NB: legacy diffusers naming -> this is the number of heads
    cross_attention_dim=16,
    norm_num_groups=4,
    norm_eps=1e-5,
    use_linear_projection=False,
    flip_sin_to_cos=True,
    freq_shift=0,
    act_fn="silu",
)
SD2_UNET = dict(
    SD1_UNET,
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    block_out_channels=(8, 16, 16, 32),
    layers_per_block=1,
    attention_head_dim=[2, 4, 4, 8],  # per block; legacy naming -> number of heads
    cross_attention_dim=8,
    use_linear_projection=True,
    upcast_attention=True,
)

SD1_VAE = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=("DownEncoderBlock2D",) * 2,
    up_block_types=("UpDecoderBlock2D",) * 2,
    block_out_channels=(8, 16),
    layers_per_block=1,
    latent_channels=4,
    norm_num_groups=4,
    sample_size=16,
    scaling_factor=0.18215,
    act_fn="silu",
)
SD2_VAE = dict(
    SD1_VAE,
    down_block_types=("DownEncoderBlock2D",) * 3,
    up_block_types=("UpDecoderBlock2D",) * 3,
    block_out_channels=(8, 16, 16),
    layers_per_block=2,
    sample_size=32,
)

SD_BETAS = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", trained_betas=None)
SD1_SCHED = dict(SD_BETAS, clip_sample=False, set_alpha_to_one=False, steps_offset=1, prediction_type="epsilon", timestep_spacing="leading")
SD2_SCHED = dict(
    SD_BETAS,
    prediction_type="v_prediction",
    algorithm_type="dpmsolver++",
    solver_order=2,
    solver_type="midpoint",
    lower_order_final=True,
    timestep_spacing="leading",
    steps_offset=1,
)


@torch.no_grad()
def perturb(model: torch.nn.Module, seed: int) -> None:
    """Add noise to *every* parameter so no code path is a no-op (norm affines, zero-init convs...)."""
    g = torch.Generator().manual_seed(seed)
    for _, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
        std = float(p.float().std()) if p.numel() > 1 else 0.0
        scale = max(0.1 * std, 0.05)
        p.add_(torch.randn(p.shape, generator=g, dtype=torch.float32).to(p.dtype) * scale)


def build_models(kind: str):
    te_cfg, unet_cfg, vae_cfg = (SD1_TE, SD1_UNET, SD1_VAE) if kind == "sd1" else (SD2_TE, SD2_UNET, SD2_VAE)
    base = 1000 if kind == "sd1" else 2000
    torch.manual_seed(base + 1)
    te = CLIPTextModel(CLIPTextConfig(**te_cfg)).eval()
    perturb(te, base + 11)
    torch.manual_seed(base + 2)
    unet = UNet2DConditionModel(**unet_cfg).eval()
    perturb(unet, base + 12)
    torch.manual_seed(base + 3)
    vae = AutoencoderKL(**vae_cfg).eval()
    perturb(vae, base + 13)
    return te, unet, vae


def write_pipeline(kind: str, encoder, merges, tmp: Path) -> None:
    out = SD1_DIR if kind == "sd1" else SD2_DIR
    if out.exists():
        shutil.rmtree(out)
    te, unet, vae = build_models(kind)
    vm = tmp / "vocab_merges"
    write_vocab_merges(vm, encoder, merges)
    if kind == "sd1":
        tok = CLIPTokenizer(vocab=str(vm / "vocab.json"), merges=str(vm / "merges.txt"), model_max_length=77)
        sched = DDIMScheduler(**SD1_SCHED)
    else:
        tok = CLIPTokenizer(vocab=str(vm / "vocab.json"), merges=str(vm / "merges.txt"), pad_token="!", model_max_length=77)
        sched = DPMSolverMultistepScheduler(**SD2_SCHED)
        te = te.to(torch.float16)
        unet = unet.to(torch.float16)
        vae = vae.to(torch.bfloat16)
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=te,
        tokenizer=tok,
        unet=unet,
        scheduler=sched,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(str(out), safe_serialization=True)
    tdir = out / "tokenizer"
    shutil.rmtree(tdir)
    tdir.mkdir()
    if kind == "sd1":
        # transformers 5 writes CLIPTextModel keys without the "text_model." prefix; every SD 1.x/2.x checkpoint
        # on the hub (written by transformers 4) has it.  sd1 gets the legacy prefixed names (transformers 5 loads
        # both), sd2 keeps what transformers 5 writes, so the Rust loader sees both layouts.
        te_file = out / "text_encoder" / "model.safetensors"
        sd = load_file(str(te_file))
        save_file({f"text_model.{k}": v for k, v in sd.items()}, str(te_file), metadata={"format": "pt"})
        # SD 1.5 layout: vocab.json + merges.txt + configs, no tokenizer.json.
        write_vocab_merges(tdir, encoder, merges)
        write_sd1_tokenizer_configs(tdir)
    else:
        # SD 2.x layout (here: "fast" tokenizer only): what transformers writes, tokenizer.json re-serialised
        # compactly (semantically identical, ~2.5x smaller).
        tok.save_pretrained(str(tdir))
        tj = json.loads((tdir / "tokenizer.json").read_text(encoding="utf-8"))
        (tdir / "tokenizer.json").write_text(json.dumps(tj, ensure_ascii=False, separators=(",", ":")), encoding="utf-8")
        for extra in ("chat_template.jinja",):
            if (tdir / extra).exists():
                (tdir / extra).unlink()


COMPONENT_FILES = {
    "text_encoder": "text_encoder/model.safetensors",
    "unet": "unet/diffusion_pytorch_model.safetensors",
    "vae": "vae/diffusion_pytorch_model.safetensors",
}


def check_weights_loaded(kind: str, pipe) -> None:
    """Every tensor of every component file must have been loaded (no silently random-initialised weights)."""
    d = SD1_DIR if kind == "sd1" else SD2_DIR
    for comp, f in COMPONENT_FILES.items():
        fsd = load_file(str(d / f))
        fsd = {k.removeprefix("text_model."): v for k, v in fsd.items()}
        msd = getattr(pipe, comp).state_dict()
        assert set(fsd) == set(msd), (kind, comp, set(fsd) ^ set(msd))
        for k, v in fsd.items():
            assert torch.equal(v.to(torch.float32), msd[k]), (kind, comp, k)


def load_pipe(kind: str) -> StableDiffusionPipeline:
    d = SD1_DIR if kind == "sd1" else SD2_DIR
    pipe = StableDiffusionPipeline.from_pretrained(str(d), dtype=torch.float32, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    for name in ("text_encoder", "unet", "vae"):
        m = getattr(pipe, name)
        m.eval()
        assert all(p.dtype == torch.float32 for p in m.parameters()), name
    check_weights_loaded(kind, pipe)
    return pipe


# ----------------------------------------------------------------------------------------
# tokenizer reference
# ----------------------------------------------------------------------------------------

PROMPTS = [
    "a photo of an astronaut riding a horse on mars",
    "A Photo Of An ASTRONAUT Riding A HORSE",
    "Hello, world! How are you?",
    "it's a dog's life; they're here, we've been, I'm sure you'll see, he'd go",
    "IT'S DON'T WE'LL",
    "café naïve résumé façade",
    "cafe\u0301 (decomposed e + combining acute)",
    "Crème brûlée à la carte, Ærøskøbing, Straße, ÀÉÎÕÜ ÑANDÚ",
    "東京の夜景、高精細",
    "一只猫在月球上",
    "한국어 텍스트 Привет мир مرحبا",
    "emoji: 🐱🚀 👩‍👩‍👧 ❤️ 👍🏽",
    "   leading and trailing   whitespace   ",
    "tabs\tand\nnewlines\r\n here",
    "non\u00a0breaking\u2003em-space zero\u200bwidth",
    "",
    "1234567890 3.14159 1,000,000 2024-01-01",
    "version v1.5 vs v2.1, 512x512px, 8k uhd",
    "punctuation!!! ??? ... --- *** (brackets) [square] {curly} <angle>",
    "masterpiece, best quality, (detailed:1.2), [blurry], ((cinematic))",
    "quotes \"double\" and 'single' and `backtick`",
    "email@example.com https://example.com/path?q=1&r=2#frag",
    "under_score snake_case kebab-case CamelCaseWord",
    "Ω≈ç√∫ ∞ ±×÷ °C €£¥ ﬁ ＡＢＣ１２３",
    "a",
    "<|startoftext|>special tokens<|endoftext|> inside",
    " ".join(["a"] * 75),  # exactly fills 77 with BOS/EOS
    " ".join(["a"] * 76),  # one too many -> truncated
    (
        "a highly detailed digital painting of a majestic ancient castle on a cliff above a stormy sea, "
        "dramatic lighting, volumetric clouds, crashing waves, seagulls, lush green moss, weathered stone walls, "
        "glowing windows, by a famous artist, trending on artstation, octane render, 8k, ultra realistic, "
        "cinematic composition, golden hour, wide angle lens, sharp focus, intricate details, epic fantasy scene"
    ),
]


def tokenizer_reference(pipes: dict) -> dict:
    toks = {k: p.tokenizer for k, p in pipes.items()}
    info = {}
    for k, t in toks.items():
        info[k] = {
            "dir": rel((SD1_DIR if k == "sd1" else SD2_DIR) / "tokenizer"),
            "class": f"{type(t).__module__}.{type(t).__qualname__}",
            "is_fast": bool(getattr(t, "is_fast", False)),
            "vocab_size": len(t),
            "model_max_length": int(t.model_max_length),
            "bos_token": t.bos_token,
            "bos_token_id": t.bos_token_id,
            "eos_token": t.eos_token,
            "eos_token_id": t.eos_token_id,
            "pad_token": t.pad_token,
            "pad_token_id": t.pad_token_id,
            "unk_token": t.unk_token,
            "unk_token_id": t.unk_token_id,
        }
    cases = []
    for p in PROMPTS:
        case = {"prompt": p}
        for k, t in toks.items():
            ids = t(p, padding="max_length", max_length=t.model_max_length, truncation=True).input_ids
            full = t(p).input_ids  # no padding, no truncation
            assert len(ids) == 77
            case[k] = {
                "input_ids": list(map(int, ids)),
                "untruncated_ids": list(map(int, full)),
                "tokens": t.convert_ids_to_tokens(full),
            }
        cases.append(case)
    assert len(cases) >= 25
    return {
        "description": "input_ids as produced by the fixture tokenizers loaded through StableDiffusionPipeline.from_pretrained, "
        "called like the pipeline does: tokenizer(prompt, padding='max_length', max_length=77, truncation=True). "
        "untruncated_ids/tokens: tokenizer(prompt) without padding/truncation (debug aid).",
        "call": {"padding": "max_length", "max_length": 77, "truncation": True},
        "versions": versions(),
        "tokenizers": info,
        "cases": cases,
    }


# ----------------------------------------------------------------------------------------
# model references
# ----------------------------------------------------------------------------------------

TE_PROMPTS = ["a photo of an astronaut riding a horse on mars", "It's café naïve, 2 cats!"]

E2E = {
    "sd1": dict(
        prompt="a photo of an astronaut riding a horse on mars",
        negative_prompt=None,
        num_inference_steps=4,
        guidance_scale=7.5,
        height=32,
        width=32,
        latents_seed=1234,
    ),
    "sd2": dict(
        prompt="a watercolor painting of a lighthouse at dusk",
        negative_prompt="blurry, low quality",
        num_inference_steps=5,
        guidance_scale=5.0,
        height=32,
        width=64,
        latents_seed=4321,
    ),
}

UNET_IN = {
    "sd1": dict(sample_shape=(2, 4, 8, 8), timesteps=[999, 501], seed=11),
    "sd2": dict(sample_shape=(2, 4, 8, 16), timesteps=[999, 37], seed=22),
}
VAE_IN = {
    "sd1": dict(image_shape=(1, 3, 16, 16), seed=33),
    "sd2": dict(image_shape=(1, 3, 16, 24), seed=44),
}


def run_e2e(pipe, cfg: dict, latents: torch.Tensor, guidance_scale: float, capture: bool):
    """Run the pipeline exactly as recorded; optionally capture per-step UNet outputs and latents."""
    unet_out, step_latents, timesteps = [], [], []
    handle = None
    if capture:
        handle = pipe.unet.register_forward_hook(lambda m, a, o: unet_out.append(f32(o[0] if isinstance(o, tuple) else o.sample)))

    def cb(p, i, t, kw):
        step_latents.append(f32(kw["latents"]))
        timesteps.append(int(t))
        return kw

    try:
        res = pipe(
            prompt=cfg["prompt"],
            negative_prompt=cfg["negative_prompt"],
            num_inference_steps=cfg["num_inference_steps"],
            guidance_scale=guidance_scale,
            height=cfg["height"],
            width=cfg["width"],
            latents=latents.clone(),
            output_type="np",
            callback_on_step_end=cb if capture else None,
        )
    finally:
        if handle is not None:
            handle.remove()
    image = torch.from_numpy(np.ascontiguousarray(res.images)).to(torch.float32)
    return image, unet_out, step_latents, timesteps


@torch.no_grad()
def model_reference(kind: str, pipe) -> tuple[dict, dict]:
    T: dict[str, torch.Tensor] = {}
    J: dict = {"versions": versions(), "fixture_dir": rel(SD1_DIR if kind == "sd1" else SD2_DIR)}
    te, unet, vae, tok = pipe.text_encoder, pipe.unet, pipe.vae, pipe.tokenizer

    # --- text encoder -------------------------------------------------------------------
    ids = tok(TE_PROMPTS, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    T["te.input_ids"] = ids.to(torch.int32)
    T["te.last_hidden_state"] = f32(te(ids)[0])
    J["te"] = {"prompts": TE_PROMPTS, "note": "last_hidden_state = CLIPTextModel(input_ids)[0] (after final_layer_norm), "
               "no attention mask (causal mask only), exactly what the pipeline feeds the UNet."}

    # --- UNet ---------------------------------------------------------------------------
    u = UNET_IN[kind]
    g = torch.Generator().manual_seed(u["seed"])
    sample = torch.randn(u["sample_shape"], generator=g)
    ehs = torch.randn((u["sample_shape"][0], 77, te.config.hidden_size), generator=g)
    ts = torch.tensor(u["timesteps"], dtype=torch.int64)
    T["unet.sample"] = sample
    T["unet.timestep"] = ts.to(torch.float32)
    T["unet.encoder_hidden_states"] = ehs
    T["unet.out"] = f32(unet(sample, ts, encoder_hidden_states=ehs).sample)
    J["unet"] = {"timesteps": u["timesteps"], "note": "unet.out = unet(sample, timestep (one per batch item), encoder_hidden_states).sample"}

    # --- VAE ----------------------------------------------------------------------------
    v = VAE_IN[kind]
    g = torch.Generator().manual_seed(v["seed"])
    f = pipe.vae_scale_factor
    image = torch.rand(v["image_shape"], generator=g) * 2 - 1
    lat_shape = (1, vae.config.latent_channels, v["image_shape"][2] // f, v["image_shape"][3] // f)
    latents = torch.randn(lat_shape, generator=g)
    dist = vae.encode(image).latent_dist
    T["vae.image"] = image
    T["vae.enc_mean"] = f32(dist.mean)
    T["vae.enc_logvar"] = f32(dist.logvar)
    T["vae.latents"] = latents
    T["vae.dec_out"] = f32(vae.decode(latents).sample)
    J["vae"] = {
        "scale_factor": f,
        "scaling_factor": vae.config.scaling_factor,
        "note": "enc_mean/enc_logvar = vae.encode(image).latent_dist.mean/.logvar (logvar clamped to [-30,20] by diffusers); "
        "dec_out = vae.decode(vae.latents).sample (raw, NOT divided by scaling_factor, not clamped).",
    }

    # --- end to end ---------------------------------------------------------------------
    e = E2E[kind]
    h, w = e["height"] // f, e["width"] // f
    g = torch.Generator().manual_seed(e["latents_seed"])
    e2e_latents = torch.randn((1, unet.config.in_channels, h, w), generator=g)
    T["e2e.latents"] = e2e_latents
    image, unet_out, step_latents, timesteps = run_e2e(pipe, e, e2e_latents, e["guidance_scale"], capture=True)
    T["e2e.image"] = image
    T["e2e.unet_out"] = torch.stack(unet_out)
    T["e2e.step_latents"] = torch.stack(step_latents)
    # prompt embeddings exactly as the pipeline computes them
    cond, uncond = pipe.encode_prompt(e["prompt"], "cpu", 1, True, e["negative_prompt"])
    T["e2e.prompt_embeds"] = f32(cond)
    T["e2e.negative_prompt_embeds"] = f32(uncond)
    J["e2e"] = {
        "prompt": e["prompt"],
        "negative_prompt": e["negative_prompt"],
        "num_inference_steps": e["num_inference_steps"],
        "guidance_scale": e["guidance_scale"],
        "height": e["height"],
        "width": e["width"],
        "latents_seed": e["latents_seed"],
        "output_type": "np",
        "timesteps": timesteps,
        "init_noise_sigma": float(pipe.scheduler.init_noise_sigma),
        "scheduler_class": type(pipe.scheduler).__name__,
        "scheduler_config": clean_config(pipe.scheduler.config),
    }
    if kind == "sd1":
        img_ng, unet_ng, lat_ng, ts_ng = run_e2e(pipe, e, e2e_latents, 1.0, capture=True)
        T["e2e.image_noguide"] = img_ng
        T["e2e.unet_out_noguide"] = torch.stack(unet_ng)
        T["e2e.step_latents_noguide"] = torch.stack(lat_ng)
        J["e2e"]["noguide"] = {"guidance_scale": 1.0, "timesteps": ts_ng}
    return T, J


# ----------------------------------------------------------------------------------------
# schedulers
# ----------------------------------------------------------------------------------------

SCHED_CLASSES = {"ddim": DDIMScheduler, "dpm": DPMSolverMultistepScheduler, "euler": EulerDiscreteScheduler}
BETA_PRESETS = {
    "scaled_linear": dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear"),
    "linear": dict(beta_start=0.0001, beta_end=0.02, beta_schedule="linear"),
}
BASE_CFG = {
    "ddim": dict(clip_sample=False, set_alpha_to_one=False),
    "dpm": dict(
        algorithm_type="dpmsolver++",
        solver_order=2,
        solver_type="midpoint",
        lower_order_final=True,
        final_sigmas_type="zero",
        use_karras_sigmas=False,
    ),
    "euler": dict(use_karras_sigmas=False, interpolation_type="linear", final_sigmas_type="zero"),
}
PRED_SHORT = {"epsilon": "eps", "v_prediction": "v"}
SCHED_SAMPLE_SHAPE = (1, 4, 2, 2)  # schedulers are element-wise; small keeps the fixture small
MODEL_NOISE_WEIGHT = 0.3


def scheduler_cases() -> list[dict]:
    cases = []

    def add(kind, name, cfg, steps):
        for n in steps:
            cases.append({"name": f"{name}-n{n}", "kind": kind, "config": cfg, "num_inference_steps": n})

    # full grid: prediction x spacing x steps_offset x beta schedule
    for kind in ("ddim", "dpm", "euler"):
        for pred in ("epsilon", "v_prediction"):
            for spacing in ("leading", "linspace", "trailing"):
                for off in (0, 1):
                    for beta in ("scaled_linear", "linear"):
                        cfg = dict(num_train_timesteps=1000, **BETA_PRESETS[beta], **BASE_CFG[kind],
                                   prediction_type=pred, timestep_spacing=spacing, steps_offset=off)
                        steps = (1, 7, 25) if beta == "scaled_linear" else (1, 7)
                        add(kind, f"{kind}-{PRED_SHORT[pred]}-{spacing}-off{off}-{beta}", cfg, steps)
    sd = dict(num_train_timesteps=1000, **BETA_PRESETS["scaled_linear"], timestep_spacing="leading", steps_offset=1)
    # DDIM clip_sample / set_alpha_to_one variants
    for pred in ("epsilon", "v_prediction"):
        for clip, a1 in ((True, True), (True, False), (False, True)):
            cfg = dict(sd, clip_sample=clip, clip_sample_range=1.0, set_alpha_to_one=a1, prediction_type=pred)
            add("ddim", f"ddim-{PRED_SHORT[pred]}-clip{int(clip)}-alpha1{int(a1)}", cfg, (7, 25))
    # DPM-Solver++ variants
    dpm_variants = {
        "heun": dict(solver_type="heun"),
        "nolof": dict(lower_order_final=False),
        "heun-nolof": dict(solver_type="heun", lower_order_final=False),
        "sigmamin": dict(final_sigmas_type="sigma_min"),
        "sigmamin-nolof": dict(final_sigmas_type="sigma_min", lower_order_final=False),
        "order1": dict(solver_order=1),
        "order3": dict(solver_order=3),
    }
    for pred in ("epsilon", "v_prediction"):
        for vname, over in dpm_variants.items():
            cfg = dict(sd, **{**BASE_CFG["dpm"], **over}, prediction_type=pred)
            add("dpm", f"dpm-{PRED_SHORT[pred]}-{vname}", cfg, (7, 25))
    # the two pipeline schedulers at a realistic step count
    add("ddim", "sd1pipe-ddim", dict(SD1_SCHED), (50,))
    add("dpm", "sd2pipe-dpm", dict(SD2_SCHED), (50,))
    names = [c["name"] for c in cases]
    assert len(names) == len(set(names))
    return cases


def clean_config(cfg) -> dict:
    out = {}
    for k, v in dict(cfg).items():
        if k.startswith("_"):
            continue
        if isinstance(v, tuple):
            v = list(v)
        if isinstance(v, float) and not np.isfinite(v):
            v = str(v)  # "-inf" (DPM lambda_min_clipped); JSON has no infinities
        out[k] = v
    return out


def model_fn(x: torch.Tensor, t, noise: torch.Tensor) -> torch.Tensor:
    tf = float(t)
    return x * (tf / (tf + 1.0)) + MODEL_NOISE_WEIGHT * noise


@torch.no_grad()
def scheduler_reference() -> tuple[dict, dict]:
    g = torch.Generator().manual_seed(7)
    sample0 = torch.randn(SCHED_SAMPLE_SHAPE, generator=g)
    noise = torch.randn(SCHED_SAMPLE_SHAPE, generator=g)
    T = {"sample": sample0, "noise": noise}
    for beta, preset in BETA_PRESETS.items():
        s = DDIMScheduler(num_train_timesteps=1000, **preset)
        T[f"alphas_cumprod.{beta}"] = f32(s.alphas_cumprod)
    out_cases = []
    for c in scheduler_cases():
        cls = SCHED_CLASSES[c["kind"]]
        sch = cls(**c["config"])
        sch.set_timesteps(c["num_inference_steps"])
        timesteps = sch.timesteps.clone()
        sigmas = getattr(sch, "sigmas", None) if c["kind"] != "ddim" else None
        init_sigma = float(sch.init_noise_sigma)
        x = sample0 * sch.init_noise_sigma
        scaled, mo, prev, x0 = [], [], [], []
        has_x0 = True
        for t in sch.timesteps:
            xin = sch.scale_model_input(x, t)
            out = model_fn(xin, t, noise)
            res = sch.step(out, t, x)
            p0 = getattr(res, "pred_original_sample", None)
            if p0 is None and c["kind"] == "dpm":
                p0 = sch.model_outputs[-1]  # converted model output = x0 prediction (dpmsolver++)
            if p0 is None:
                has_x0 = False
            scaled.append(f32(xin))
            mo.append(f32(out))
            prev.append(f32(res.prev_sample))
            if p0 is not None:
                x0.append(f32(p0))
            x = res.prev_sample
        n = c["name"]
        T[f"{n}.scaled_sample"] = torch.stack(scaled)
        T[f"{n}.model_output"] = torch.stack(mo)
        T[f"{n}.prev_sample"] = torch.stack(prev)
        if has_x0:
            T[f"{n}.pred_original_sample"] = torch.stack(x0)
        ts_list = [int(v) if not timesteps.is_floating_point() else float(v) for v in timesteps]
        out_cases.append(
            {
                "name": n,
                "class": cls.__name__,
                "config": c["config"],
                "full_config": clean_config(sch.config),
                "num_inference_steps": c["num_inference_steps"],
                "timesteps": ts_list,
                "timesteps_dtype": str(timesteps.dtype).replace("torch.", ""),
                "sigmas": None if sigmas is None else [float(v) for v in sigmas],
                "init_noise_sigma": init_sigma,
                "has_pred_original_sample": has_x0,
                "pred_original_sample_source": (
                    "scheduler.model_outputs[-1] (converted model output)" if c["kind"] == "dpm" else "step().pred_original_sample"
                ),
            }
        )
    J = {
        "versions": versions(),
        "sample_shape": list(SCHED_SAMPLE_SHAPE),
        "loop": (
            "sch = Class(**config); sch.set_timesteps(num_inference_steps); x = sample * init_noise_sigma; "
            "for i, t in enumerate(timesteps): xin = sch.scale_model_input(x, t); "
            f"model_output = xin * (float(t) / (float(t) + 1)) + {MODEL_NOISE_WEIGHT} * noise; "
            "x = sch.step(model_output, t, x).prev_sample"
        ),
        "cases": out_cases,
    }
    return T, J


# ----------------------------------------------------------------------------------------
# verification
# ----------------------------------------------------------------------------------------


@torch.no_grad()
def verify() -> None:
    print("verify: reloading pipelines from disk")
    tokj = json.loads((REF / "tokenizer.json").read_text(encoding="utf-8"))
    vocab = json.loads((SD1_DIR / "tokenizer" / "vocab.json").read_text(encoding="utf-8"))
    assert len(vocab) == VOCAB_SIZE and vocab[BOS] == 49406 and vocab[EOS] == 49407
    # the sd2 tokenizer.json read by the plain `tokenizers` library (what the Rust `tokenizers` crate would do)
    raw = tokenizers.Tokenizer.from_file(str(SD2_DIR / "tokenizer" / "tokenizer.json"))
    raw.enable_truncation(77)
    raw.enable_padding(length=77, pad_id=0, pad_token="!")
    for c in tokj["cases"]:
        assert raw.encode(c["prompt"]).ids == c["sd2"]["input_ids"], ("raw tokenizers", c["prompt"])
    for kind in ("sd1", "sd2"):
        pipe = load_pipe(kind)
        tok = pipe.tokenizer
        for c in tokj["cases"]:
            ids = tok(c["prompt"], padding="max_length", max_length=77, truncation=True).input_ids
            assert list(ids) == c[kind]["input_ids"], (kind, c["prompt"])
        ref = load_file(str(REF / f"{kind}.safetensors"))
        meta = json.loads((REF / f"{kind}.json").read_text(encoding="utf-8"))
        # text encoder / unet / vae
        assert torch.equal(pipe.text_encoder(ref["te.input_ids"].long())[0], ref["te.last_hidden_state"])
        uo = pipe.unet(ref["unet.sample"], ref["unet.timestep"].long(), encoder_hidden_states=ref["unet.encoder_hidden_states"]).sample
        assert torch.equal(uo, ref["unet.out"])
        d = pipe.vae.encode(ref["vae.image"]).latent_dist
        assert torch.equal(d.mean, ref["vae.enc_mean"]) and torch.equal(d.logvar, ref["vae.enc_logvar"])
        assert torch.equal(pipe.vae.decode(ref["vae.latents"]).sample, ref["vae.dec_out"])
        # end to end from the saved latents
        e = meta["e2e"]
        img, *_ = run_e2e(pipe, e, ref["e2e.latents"], e["guidance_scale"], capture=False)
        assert torch.equal(img, ref["e2e.image"]), f"{kind}: e2e.image not reproduced"
        if "e2e.image_noguide" in ref:
            img, *_ = run_e2e(pipe, e, ref["e2e.latents"], 1.0, capture=False)
            assert torch.equal(img, ref["e2e.image_noguide"]), f"{kind}: e2e.image_noguide not reproduced"
        print(f"verify: {kind} OK (tokenizer {len(tokj['cases'])} prompts, te, unet, vae, e2e bit-exact)")
    # schedulers
    ref = load_file(str(REF / "schedulers.safetensors"))
    sj = json.loads((REF / "schedulers.json").read_text(encoding="utf-8"))
    for c in sj["cases"]:
        sch = getattr(diffusers, c["class"])(**c["config"])
        sch.set_timesteps(c["num_inference_steps"])
        x = ref["sample"] * sch.init_noise_sigma
        for t in sch.timesteps:
            xin = sch.scale_model_input(x, t)
            x = sch.step(model_fn(xin, t, ref["noise"]), t, x).prev_sample
        assert torch.equal(x, ref[f"{c['name']}.prev_sample"][-1]), c["name"]
    print(f"verify: schedulers OK ({len(sj['cases'])} cases)")


# ----------------------------------------------------------------------------------------


def versions() -> dict:
    return {
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "transformers": transformers.__version__,
        "safetensors": safetensors.__version__,
        "tokenizers": tokenizers.__version__,
        "numpy": np.__version__,
        "python": sys.version.split()[0],
    }


def dir_size(p: Path) -> int:
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bpe", help="path to bpe_simple_vocab_16e6.txt.gz or the open_clip_torch wheel (default: pip download)")
    ap.add_argument("--verify", action="store_true", help="only verify the existing fixtures")
    args = ap.parse_args()
    if args.verify:
        verify()
        return

    gz = fetch_bpe_gz(args.bpe)
    encoder, merges = build_clip_vocab(gz)
    if REF.exists():
        shutil.rmtree(REF)
    REF.mkdir(parents=True)

    with tempfile.TemporaryDirectory() as tmp:
        for kind in ("sd1", "sd2"):
            write_pipeline(kind, encoder, merges, Path(tmp) / kind)

    pipes = {k: load_pipe(k) for k in ("sd1", "sd2")}
    write_json(REF / "tokenizer.json", tokenizer_reference(pipes))

    for kind, pipe in pipes.items():
        T, J = model_reference(kind, pipe)
        J["tensors"] = {k: {"shape": list(v.shape), "dtype": str(v.dtype).replace("torch.", "")} for k, v in sorted(T.items())}
        save_tensors(REF / f"{kind}.safetensors", T, {"generator": "tools/make_fixtures.py"})
        write_json(REF / f"{kind}.json", J)
        print(f"{kind}:")
        for k, v in sorted(T.items()):
            if v.is_floating_point():
                print(stats(k, v))
        img = T["e2e.image"]
        print(f"  e2e.image fraction clipped to 0/1: {float(((img == 0) | (img == 1)).float().mean()):.3f}")

    T, J = scheduler_reference()
    save_tensors(REF / "schedulers.safetensors", T, {"generator": "tools/make_fixtures.py"})
    write_json(REF / "schedulers.json", J)
    print(f"schedulers: {len(J['cases'])} cases, {len(T)} tensors")

    del pipes
    verify()
    total = 0
    for p in (SD1_DIR, SD2_DIR, REF):
        s = dir_size(p)
        total += s
        print(f"{rel(p)}: {s / 1e6:.2f} MB")
    print(f"total: {total / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
