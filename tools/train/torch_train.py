#!/usr/bin/env python3
"""PyTorch trainer for synfer's diffusion stage: the GPU path of a device lease (CUDA, bf16),
also usable on a CPU. Same model, recipe and output as `synfer train diffusion`:

* the text encoder (transformers CLIPTextModel), the UNet (diffusers UNet2DConditionModel) and
  the FineFace-layout AU adapter (tools/au_reference.py: AU encoder + decoupled `au_to_k/v`
  cross-attention in every attn2), all trained;
* ε-prediction on the model's scaled-linear 1000-step schedule, Min-SNR-γ weighting (γ = 5),
  caption dropout (→ the ids of "") and AU dropout (→ zeros) at 10 % each, horizontal flips,
  class-balanced sampling (p(class) ∝ count^0.5 by default: rare expressions are seen more),
  optionally only images whose label the labeller (face-api) gave with high confidence,
  AdamW (β 0.9/0.999, wd 0.01, clip 1.0), linear warm-up then cosine decay, EMA of all weights
  with diffusers' warm-up (decay = min(0.999, (1 + k) / (10 + k)));
* batches, timesteps, noise and dropout are a function of (seed, step) only, so a resumed run
  continues exactly where a killed one stopped (checkpoints are written atomically).

Three steps:

  pack    --data DATA... --model MODEL --out OUT.npz
                               VAE latents of every image (MODEL's VAE, scaled by its
                               scaling_factor; encoder mean quantised to uint8 per channel plus the
                               posterior σ per image and channel), caption ids (MODEL's
                               tokenizer), AU labels, the labeller's confidence. A few MB: it travels to a device.
  train   --pack P [P ...] --init MODEL --run RUN [--minutes M | --steps N] ...
                               resumes RUN/checkpoint.pt when present.
  export  --run RUN --base MODEL --out DIR [--au-range AUDIT.json]
                               EMA weights as a synfer/diffusers folder (fp16): text_encoder/,
                               unet/, au_adapter/ (+ au_range from `synfer data audit`), the rest
                               (vae, tokenizer, scheduler) copied from MODEL; and the training
                               state, DIR/training/state/ (below).

The training state travels with the model, so a later session (or a device lease) continues the
committed model where the last run stopped: `training/state/weights.safetensors` holds the raw
(non-EMA) weights of every trained parameter (fp16, 17 MB), the folder's own weights are the EMA,
and `training/state/state.json` counts the optimizer steps and samples so far and lists every run
that made them. `train --init MODEL` resumes it: raw weights from the state, EMA from the folder,
EMA warm-up continued from the committed step count. AdamW's moments are not kept (34 MB more);
a resumed run re-estimates them during its learning-rate warm-up. Without a state the folder's
weights start both; `--fresh` keeps MODEL's configs and initialises new weights.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from au_reference import FINEFACE_AUS, AUEncoder, attn2_layers, install_au_processors  # noqa: E402

CLASSES = ["neutral", "happy", "sad", "angry", "fearful", "disgusted", "surprised"]


# ---------------------------------------------------------------------------------------------
# pack
# ---------------------------------------------------------------------------------------------


def pack(args) -> None:
    from diffusers import AutoencoderKL
    from PIL import Image
    from transformers import CLIPTokenizer

    model = Path(args.model)
    records = []
    for d in args.data:
        for line in (Path(d) / "metadata.jsonl").read_text().splitlines():
            r = json.loads(line) if line.strip() else None
            if r:
                # synfer's metadata.jsonl: `label` + `confidence` (folders built before the
                # unified record: `expression` + a flat `probs`).
                r["label"] = r.get("label", r.get("expression"))
                r["confidence"] = r.get("confidence", (r.get("probs") or {}).get(r["label"], 1.0))
            if r and r["confidence"] >= args.min_confidence:
                r["path"] = Path(d) / r["file_name"]
                records.append(r)
    vae = AutoencoderKL.from_pretrained(model / "vae", torch_dtype=torch.float32).eval()
    sf = float(vae.config.scaling_factor)
    tok = CLIPTokenizer.from_pretrained(model / "tokenizer")
    n = len(records)
    means, stds = [], []
    with torch.no_grad():
        for i in range(0, n, 256):
            imgs = [np.asarray(Image.open(r["path"]).convert("RGB"), np.float32) for r in records[i:i + 256]]
            x = torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2) / 127.5 - 1.0
            dist = vae.encode(x).latent_dist
            means.append(dist.mean * sf)
            stds.append(dist.std.mean(dim=(2, 3)) * sf)
            print(f"\rencoded {min(i + 256, n)}/{n}", end="", flush=True)
    print()
    mean = torch.cat(means)
    std = torch.cat(stds)
    lo = mean.amin(dim=(0, 2, 3))
    hi = mean.amax(dim=(0, 2, 3))
    scale = (hi - lo) / 255.0
    q = ((mean - lo[None, :, None, None]) / scale[None, :, None, None]).round().clamp(0, 255).to(torch.uint8)
    err = (q.float() * scale[None, :, None, None] + lo[None, :, None, None] - mean).abs().max()
    ids = tok([r["caption"] for r in records], padding="max_length", truncation=True,
              max_length=tok.model_max_length, return_tensors="np").input_ids
    empty = tok([""], padding="max_length", max_length=tok.model_max_length, return_tensors="np").input_ids[0]
    aus = np.array([[r["aus"].get(c, 0.0) for c in FINEFACE_AUS] for r in records], np.float16)
    labels = np.array([CLASSES.index(r["label"]) for r in records], np.uint8)
    conf = np.array([r["confidence"] for r in records], np.float16)
    np.savez_compressed(args.out, latents=q.numpy(), lo=lo.numpy(), scale=scale.numpy(),
                        std=std.numpy().astype(np.float16), ids=ids.astype(np.int32), empty_ids=empty.astype(np.int32),
                        aus=aus, labels=labels, conf=conf, scaling_factor=np.float32(sf))
    print(f"{args.out}: {n} images, latents {tuple(mean.shape[1:])} (uint8, max quantisation error "
          f"{float(err):.4f}, latent σ {float(mean.std()):.3f}, posterior σ mean {float(std.mean()):.4f}), "
          f"{os.path.getsize(args.out) / 1e6:.1f} MB")


# ---------------------------------------------------------------------------------------------
# model
# ---------------------------------------------------------------------------------------------


class Model(torch.nn.Module):
    """Text encoder + UNet (with AU processors on every attn2) + AU encoder."""

    def __init__(self, folder: Path, fresh: bool, seed: int):
        super().__init__()
        from diffusers import UNet2DConditionModel
        from transformers import CLIPTextConfig, CLIPTextModel

        torch.manual_seed(seed)
        if fresh:
            self.text_encoder = CLIPTextModel(CLIPTextConfig.from_pretrained(folder / "text_encoder"))
            self.unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(folder / "unet"))
        else:
            self.text_encoder = CLIPTextModel.from_pretrained(folder / "text_encoder", torch_dtype=torch.float32)
            self.unet = UNet2DConditionModel.from_pretrained(folder / "unet", torch_dtype=torch.float32)
        self.au_config = json.loads((folder / "au_adapter/config.json").read_text())
        width = self.au_config.get("cross_attention_dim") or self.unet.config.cross_attention_dim
        install_au_processors(self.unet)
        self.au = AUEncoder(self.au_config["hidden_dim"], width, self.au_config["num_tokens"],
                            self.au_config["include_raw"])
        adapter = folder / "au_adapter/diffusion_pytorch_model.safetensors"
        if not fresh and adapter.exists():
            from safetensors.torch import load_file

            sd = {k: v.float() for k, v in load_file(adapter).items()}
            self.load_adapter_state(sd)

    def adapter_state(self) -> dict:
        """The `au_adapter/` keys: `au_encoder.*` and `<attn2 path>.processor.au_to_{k,v}.weight`."""
        out = {f"au_encoder.{k}": v for k, v in self.au.au_encoder.state_dict().items()}
        for path, attn in attn2_layers(self.unet).items():
            for name in ("au_to_k", "au_to_v"):
                out[f"{path}.processor.{name}.weight"] = getattr(attn.processor, name).weight
        return out

    def load_adapter_state(self, sd: dict) -> None:
        mine = self.adapter_state()
        assert set(mine) == set(sd), set(mine) ^ set(sd)
        with torch.no_grad():
            for k, v in mine.items():
                assert v.shape == sd[k].shape, (k, v.shape, sd[k].shape)
                v.copy_(sd[k])

    def forward(self, x, t, ids, aus):
        ctx = self.text_encoder(ids).last_hidden_state
        tokens = self.au(aus)
        return self.unet(x, t, encoder_hidden_states=ctx,
                         cross_attention_kwargs={"au_tokens": tokens, "au_scale": 1.0}).sample


STATE = Path("training/state")


def load_state(folder: Path, fresh: bool = False) -> dict:
    """`training/state/state.json` of a model folder (zero counters and no runs when absent or
    for a `--fresh` run, which inherits only the folder's configs)."""
    path = folder / STATE / "state.json"
    if path.exists() and not fresh:
        return json.loads(path.read_text())
    return {"optimizer_steps": 0, "samples": 0, "runs": []}


def scaled_linear_alphas_cumprod(folder: Path) -> torch.Tensor:
    cfg = json.loads((folder / "scheduler/scheduler_config.json").read_text())
    assert cfg.get("beta_schedule", "scaled_linear") == "scaled_linear", cfg
    n = cfg.get("num_train_timesteps", 1000)
    betas = torch.linspace(cfg.get("beta_start", 0.00085) ** 0.5, cfg.get("beta_end", 0.012) ** 0.5, n,
                           dtype=torch.float64) ** 2
    return torch.cumprod(1.0 - betas, 0)


# ---------------------------------------------------------------------------------------------
# train
# ---------------------------------------------------------------------------------------------


def lr_at(step: int, total: int, args) -> float:
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    if total <= args.warmup:
        return args.lr
    p = min(1.0, (step - args.warmup) / (total - args.warmup))
    return args.min_lr + 0.5 * (args.lr - args.min_lr) * (1 + math.cos(math.pi * p))


def save_atomic(obj, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def train(args) -> None:
    import diffusers

    diffusers.utils.logging.set_verbosity_error()  # attn1 processors ignore the AU kwargs, quietly
    dev = torch.device(args.device)
    run = Path(args.run)
    run.mkdir(parents=True, exist_ok=True)
    init = Path(args.init)
    settings = {k: v for k, v in vars(args).items() if k not in ("func", "minutes", "steps", "device", "run")}
    ckpt_path = run / "checkpoint.pt"
    # Several packs (each quantised with its own range) are dequantised and concatenated; they
    # must come from the same VAE and tokenizer.
    packs = [np.load(p) for p in args.pack]
    for p, pk in zip(args.pack[1:], packs[1:]):
        if pk["ids"].shape[1] != packs[0]["ids"].shape[1] or float(pk["scaling_factor"]) != float(packs[0]["scaling_factor"]):
            sys.exit(f"{p}: another tokenizer length or VAE scaling factor than {args.pack[0]}")

    def cat(key, dtype):
        return torch.from_numpy(np.concatenate([pk[key].astype(dtype) for pk in packs])).to(dev)

    lat = torch.cat([
        torch.from_numpy(pk["latents"]).float() * torch.from_numpy(pk["scale"])[None, :, None, None]
        + torch.from_numpy(pk["lo"])[None, :, None, None]
        for pk in packs
    ]).to(dev)
    post_std = cat("std", np.float32)[:, :, None, None]
    ids_all = cat("ids", np.int64)
    empty = torch.from_numpy(packs[0]["empty_ids"].astype(np.int64)).to(dev)
    aus_all = cat("aus", np.float32)
    n = lat.shape[0]
    # Class-balanced sampling: p(class) ∝ count^power (1: as in the data, 0: uniform).
    # Images whose label the labeller gave with less than --min-confidence are never drawn.
    labels = cat("labels", np.int64)
    keep = cat("conf", np.float32) >= args.min_confidence
    counts = torch.bincount(labels[keep], minlength=len(CLASSES)).float().clamp(min=1)
    sample_w = counts[labels] ** (args.class_power - 1.0) * keep
    print("images per class drawn from: " + ", ".join(f"{c} {int(k)}" for c, k in
          zip(CLASSES, torch.bincount(labels[keep], minlength=len(CLASSES)))))
    acp = scaled_linear_alphas_cumprod(init).to(dev)

    # channels_last: +18 % samples/s on 2 CPU cores (oneDNN), and the layout CUDA's convs prefer.
    model = Model(init, args.fresh, args.seed).to(dev).to(memory_format=torch.channels_last)
    params = [p for p in model.parameters()]
    opt = torch.optim.AdamW(params, lr=args.lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01,
                            fused=dev.type == "cuda")
    ema = [p.detach().clone().float() for p in params]
    # The committed state: raw weights from training/state/, the EMA from the folder's weights.
    prior = load_state(init, args.fresh)
    raw = init / STATE / "weights.safetensors"
    if not args.fresh and raw.exists():
        from safetensors.torch import load_file

        model.load_state_dict({k: v.float() for k, v in load_file(raw).items()}, strict=True)
        print(f"resuming the committed state of {init}: raw weights from {raw}, EMA from the folder, "
              f"{prior['optimizer_steps']} optimizer steps / {prior['samples']} samples so far")
    ema_offset = prior["optimizer_steps"]
    step, total, elapsed = 0, args.steps, 0.0
    if ckpt_path.exists():
        ck = torch.load(ckpt_path, map_location=dev, weights_only=True)
        if ck["settings"] != settings:
            sys.exit(f"{ckpt_path} was made with other settings: {ck['settings']} (now {settings})")
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        for e, v in zip(ema, ck["ema"]):
            e.copy_(v)
        step, total, elapsed = ck["step"], ck["total"], ck["elapsed"]
        ema_offset = ck.get("ema_offset", 0)
        print(f"resumed {run} at step {step}/{total or '?'}")
    log = open(run / "loss.jsonl", "a")
    (run / "settings.json").write_text(json.dumps(settings, indent=1) + "\n")
    budget = None if args.minutes is None else args.minutes * 60.0
    t_start, last_ckpt = time.perf_counter() - elapsed, time.perf_counter()
    autocast = torch.autocast(dev.type, dtype=torch.bfloat16, enabled=args.bf16)
    window, window_t, window_n = [], time.perf_counter(), 0

    def checkpoint():
        save_atomic({"model": model.state_dict(), "opt": opt.state_dict(), "ema": ema, "step": step, "total": total,
                     "elapsed": time.perf_counter() - t_start, "settings": settings, "ema_offset": ema_offset,
                     "device": dev.type}, ckpt_path)

    while True:
        now = time.perf_counter()
        if total is None and budget is not None and step == 50:
            # Fix the schedule's length from the measured speed (deterministic from here on).
            total = int(step / (now - t_start) * budget)
            print(f"schedule: {total} steps in {args.minutes} min")
        if total is not None and step >= total:
            break
        if budget is not None and now - t_start >= budget:
            break
        g = torch.Generator(device=dev).manual_seed(args.seed * 1_000_003 + step)
        b = args.batch
        idx = torch.multinomial(sample_w, b, replacement=True, generator=g)
        flip = torch.rand(b, device=dev, generator=g) < 0.5
        t = torch.randint(0, acp.shape[0], (b,), device=dev, generator=g)
        drop_text = torch.rand(b, device=dev, generator=g) < args.caption_dropout
        drop_au = torch.rand(b, device=dev, generator=g) < args.au_dropout
        x0 = lat[idx]
        x0 = x0 + post_std[idx] * torch.randn(x0.shape, device=dev, generator=g)
        x0 = torch.where(flip[:, None, None, None], x0.flip(3), x0)
        noise = torch.randn(x0.shape, device=dev, generator=g)
        a = acp[t].float()[:, None, None, None]
        xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
        ids = torch.where(drop_text[:, None], empty[None], ids_all[idx])
        aus = torch.where(drop_au[:, None], torch.zeros_like(aus_all[idx]), aus_all[idx])
        snr = acp[t] / (1 - acp[t])
        w = (snr.clamp(max=args.min_snr_gamma) / snr).float()
        lr = lr_at(step, total or max(args.warmup + 1, step + 1), args)
        for grp in opt.param_groups:
            grp["lr"] = lr
        xt = xt.contiguous(memory_format=torch.channels_last)
        with autocast:
            pred = model(xt, t, ids, aus)
        loss = ((pred.float() - noise) ** 2).mean(dim=(1, 2, 3))
        loss = (loss * w).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        k = ema_offset + step
        decay = min(args.ema_decay, (1 + k) / (10 + k))
        with torch.no_grad():
            torch._foreach_lerp_(ema, [p.detach().float() for p in params], 1.0 - decay)
        step += 1
        window.append(loss.detach())
        window_n += b
        if step % args.log_every == 0:
            mean = float(torch.stack(window).mean())
            rate = window_n / (time.perf_counter() - window_t)
            log.write(json.dumps({"step": step, "loss": mean, "lr": lr, "samples_per_s": rate}) + "\n")
            log.flush()
            print(f"step {step}/{total or '?'} loss {mean:.4f} lr {lr:.2e} {rate:.0f} samples/s", flush=True)
            window, window_t, window_n = [], time.perf_counter(), 0
        if time.perf_counter() - last_ckpt >= args.checkpoint_minutes * 60:
            checkpoint()
            last_ckpt = time.perf_counter()
    checkpoint()
    print(f"stopped at step {step}/{total}; {step * args.batch} samples in {time.perf_counter() - t_start:.0f} s")


# ---------------------------------------------------------------------------------------------
# export
# ---------------------------------------------------------------------------------------------


def export(args) -> None:
    from diffusers import UNet2DConditionModel
    from safetensors.torch import save_file

    run, base, out = Path(args.run), Path(args.base), Path(args.out)
    ck = torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=True)
    model = Model(base, fresh=True, seed=0)
    model.load_state_dict(ck["model"])
    raw = {k: v.detach().to(torch.float16).contiguous() for k, v in model.state_dict().items()}
    with torch.no_grad():
        for p, e in zip(model.parameters(), ck["ema"]):
            p.copy_(e)
    if not args.components_only and out.resolve() != base.resolve():
        for item in ("vae", "scheduler", "tokenizer", "model_index.json"):
            src = base / item
            if src.is_dir():
                shutil.copytree(src, out / item, dirs_exist_ok=True)
            else:
                out.mkdir(parents=True, exist_ok=True)
                shutil.copy(src, out / item)
    model.text_encoder.to(torch.float16).save_pretrained(out / "text_encoder", safe_serialization=True)
    plain = {k: v for k, v in model.unet.state_dict().items() if ".processor." not in k}
    unet = UNet2DConditionModel.from_config(model.unet.config)
    unet.load_state_dict(plain, strict=True)
    unet.to(torch.float16).save_pretrained(out / "unet", safe_serialization=True)
    (out / "au_adapter").mkdir(parents=True, exist_ok=True)
    adapter = {k: v.detach().to(torch.float16).contiguous() for k, v in model.adapter_state().items()}
    save_file(adapter, out / "au_adapter/diffusion_pytorch_model.safetensors", metadata={"format": "pt"})
    cfg = dict(model.au_config)
    if args.au_range:
        audit = json.loads(Path(args.au_range).read_text())
        cfg["au_range"] = {c: round(max(float(audit["aus"][c]["p99"]), 0.5), 2) for c in FINEFACE_AUS}
    (out / "au_adapter/config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    # The resumable state: raw weights, counters, and the history of runs (base's, then this one).
    settings = ck["settings"]
    state = load_state(base, settings["fresh"])
    state["runs"].append({
        "tool": "tools/train/torch_train.py", "device": ck.get("device", "unknown"),
        "steps": ck["step"], "batch": settings["batch"], "samples": ck["step"] * settings["batch"],
        "minutes": round(ck["elapsed"] / 60, 1), "settings": settings,
    })
    state["optimizer_steps"] += ck["step"]
    state["samples"] += ck["step"] * settings["batch"]
    (out / STATE).mkdir(parents=True, exist_ok=True)
    save_file(raw, out / STATE / "weights.safetensors", metadata={"format": "pt"})
    (out / STATE / "state.json").write_text(json.dumps(state, indent=1) + "\n")
    print(f"exported EMA weights of {run} at step {ck['step']} to {out} (+ the raw weights in {out / STATE}; "
          f"{state['optimizer_steps']} optimizer steps, {state['samples']} samples in all)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(required=True)
    p = sub.add_parser("pack")
    p.add_argument("--data", action="append", required=True, help="`synfer data build` folder (repeatable)")
    p.add_argument("--model", required=True, help="model folder whose VAE and tokenizer to use")
    p.add_argument("--out", required=True)
    p.add_argument("--min-confidence", type=float, default=0.0,
                   help="leave out images whose label the labeller gave with less than this probability")
    p.set_defaults(func=pack)
    p = sub.add_parser("train")
    p.add_argument("--pack", nargs="+", required=True, help="one or more packs, trained on together")
    p.add_argument("--init", required=True, help="model folder: configs, and weights unless --fresh")
    p.add_argument("--fresh", action="store_true")
    p.add_argument("--run", required=True)
    p.add_argument("--minutes", type=float, help="time budget (the cosine schedule is fitted to it)")
    p.add_argument("--steps", type=int)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--min-lr", type=float, default=3e-5)
    p.add_argument("--warmup", type=int, default=300)
    p.add_argument("--ema-decay", type=float, default=0.999)
    p.add_argument("--min-snr-gamma", type=float, default=5.0)
    p.add_argument("--caption-dropout", type=float, default=0.1)
    p.add_argument("--au-dropout", type=float, default=0.1)
    p.add_argument("--class-power", type=float, default=0.5,
                   help="sample classes ∝ count^power (1: as in the data, 0: uniform)")
    p.add_argument("--min-confidence", type=float, default=0.0,
                   help="train only on images whose label has at least this labeller probability")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast (CUDA)")
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--checkpoint-minutes", type=float, default=2.0)
    p.set_defaults(func=train)
    p = sub.add_parser("export")
    p.add_argument("--run", required=True)
    p.add_argument("--base", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--au-range", help="audit.json of `synfer data audit`: au_range = the labels' p99")
    p.add_argument("--components-only", action="store_true",
                   help="write only the trained text_encoder/, unet/, au_adapter/ (not vae, tokenizer, scheduler)")
    p.set_defaults(func=export)
    args = ap.parse_args()
    if getattr(args, "minutes", None) is None and getattr(args, "steps", None) is None and args.func is train:
        ap.error("give --minutes or --steps")
    args.func(args)


if __name__ == "__main__":
    main()
