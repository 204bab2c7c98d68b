#!/usr/bin/env python3
"""VAE v2 of synfer-tiny: the decoder fine-tuned to keep faces sharp (PyTorch, CPU or GPU).

The encoder (and `quant_conv`) stay frozen, so the latent space, and with it the trained UNet,
the committed training pack and every latent cache, stay valid: only `post_quant_conv` and the
decoder learn. Loss per batch (images in [-1, 1], z sampled from the frozen posterior):

* L1 reconstruction;
* perceptual: the four dense-block outputs of face-api.js' FaceExpressionNet (the crate's own
  FER A weights, `face_api_torch.py`, parity-checked against tfjs), each normalised over
  channels, squared differences averaged over positions, summed over blocks (LPIPS' recipe
  without learned weights);
* adversarial, after `--disc-start` steps: a PatchGAN discriminator with the hinge loss, its
  weight set adaptively (the ratio of the reconstruction and adversarial gradient norms at the
  decoder's last layer, as in Esser et al. 2021 and Stable Diffusion's autoencoder) times
  `--adv`.

Batches and noise are a function of (seed, step), checkpoints are written atomically, so a
killed run resumes exactly (`train` again with the same RUN). `export` writes the EMA decoder
with the frozen encoder as a diffusers `vae/` folder (fp16). `measure` reports PSNR and the
sharpness ratio (variance of the Laplacian of grey, mean over reconstructions / mean over
originals) of a VAE on a folder.

    python tools/train/torch_vae.py train --data /work/data/v3 --vae models/synfer-tiny/vae --run RUN --minutes 60
    python tools/train/torch_vae.py export --run RUN --vae models/synfer-tiny/vae --out OUT/vae
    python tools/train/torch_vae.py measure --vae OUT/vae --data DEV
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from face_api_torch import FaceApiExpression  # noqa: E402


def load_images(folders: list[str]) -> torch.Tensor:
    """Every image of the folders' metadata.jsonl (every png under a folder without one),
    uint8 [n, 3, 64, 64]."""
    from PIL import Image

    out = []
    for d in folders:
        meta = Path(d) / "metadata.jsonl"
        if meta.exists():
            files = [Path(d) / json.loads(line)["file_name"] for line in meta.read_text().splitlines() if line.strip()]
        else:
            files = sorted(Path(d).rglob("*.png"))
        for f in files:
            img = np.asarray(Image.open(f).convert("RGB"))
            out.append(torch.from_numpy(img.copy()).permute(2, 0, 1))
    if not out:
        sys.exit(f"no images in {folders}")
    return torch.stack(out)


def to_signed(u8: torch.Tensor) -> torch.Tensor:
    return u8.float() / 127.5 - 1.0


class PatchDiscriminator(nn.Module):
    """PatchGAN (Isola et al. 2017) for 64×64 images: 14×14 patch logits."""

    def __init__(self, ndf: int = 32):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(3, ndf, 4, 2, 1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(ndf, 2 * ndf, 4, 2, 1),
            nn.GroupNorm(8, 2 * ndf),
            nn.LeakyReLU(0.2),
            nn.Conv2d(2 * ndf, 4 * ndf, 4, 1, 1),
            nn.GroupNorm(8, 4 * ndf),
            nn.LeakyReLU(0.2),
            nn.Conv2d(4 * ndf, 1, 4, 1, 1),
        )

    def forward(self, x):
        return self.net(x)


def perceptual(net: FaceApiExpression, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Channel-normalised face-api features of a and b ([-1, 1] images), squared distance."""
    fa = net.features(net.preprocess((a + 1) / 2))
    fb = net.features(net.preprocess((b + 1) / 2))
    total = a.new_zeros(())
    for x, y in zip(fa, fb):
        x = x / (x.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
        y = y / (y.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
        total = total + (x - y).pow(2).sum(1).mean()
    return total


def load_vae(folder: str):
    from diffusers import AutoencoderKL

    return AutoencoderKL.from_pretrained(folder).float()


def decode(vae, z):
    return vae.decoder(vae.post_quant_conv(z))


def save_atomic(obj, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def train(args) -> None:
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads or os.cpu_count() or 2)
    run = Path(args.run)
    run.mkdir(parents=True, exist_ok=True)
    images = load_images(args.data)
    n = len(images)
    vae = load_vae(args.vae)
    for m in (vae.encoder, vae.quant_conv):
        m.requires_grad_(False)
    trainable = list(vae.post_quant_conv.parameters()) + list(vae.decoder.parameters())
    disc = PatchDiscriminator()
    face = FaceApiExpression()
    face.requires_grad_(False)
    opt_g = torch.optim.Adam(trainable, lr=args.lr, betas=(0.5, 0.9))
    opt_d = torch.optim.Adam(disc.parameters(), lr=args.lr, betas=(0.5, 0.9))
    ema = copy.deepcopy(nn.ModuleList([vae.post_quant_conv, vae.decoder])).requires_grad_(False)
    step = 0
    ckpt = run / "checkpoint.pt"
    if ckpt.exists():
        st = torch.load(ckpt, weights_only=False)
        vae.load_state_dict(st["vae"])
        disc.load_state_dict(st["disc"])
        ema.load_state_dict(st["ema"])
        opt_g.load_state_dict(st["opt_g"])
        opt_d.load_state_dict(st["opt_d"])
        step = st["step"]
        print(f"resumed at step {step}")
    settings = {k: v for k, v in vars(args).items() if k != "fn"}
    (run / "run.json").write_text(json.dumps({**settings, "images": n}, indent=1) + "\n")
    log = open(run / "loss.jsonl", "a")
    last = vae.decoder.conv_out.weight
    deadline = time.time() + 60 * args.minutes if args.minutes else None
    last_ckpt = time.time()

    def checkpoint():
        save_atomic(
            {"vae": vae.state_dict(), "disc": disc.state_dict(), "ema": ema.state_dict(),
             "opt_g": opt_g.state_dict(), "opt_d": opt_d.state_dict(), "step": step},
            ckpt,
        )

    while (args.steps is None or step < args.steps) and (deadline is None or time.time() < deadline):
        g = torch.Generator().manual_seed(args.seed * 1_000_003 + step)
        idx = torch.randint(0, n, (args.batch,), generator=g)
        x = to_signed(images[idx])
        flip = torch.rand(args.batch, generator=g) < 0.5
        x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
        with torch.no_grad():
            moments = vae.quant_conv(vae.encoder(x))
            mean, logvar = moments.chunk(2, 1)
            std = torch.exp(0.5 * logvar.clamp(-30, 20))
            z = mean + std * torch.randn(mean.shape, generator=g)
        rec = decode(vae, z)
        l1 = (rec - x).abs().mean()
        perc = perceptual(face, rec, x)
        rec_loss = l1 + args.perceptual * perc
        adv_on = step >= args.disc_start
        if adv_on:
            g_loss = -disc(rec).mean()
            gr = torch.autograd.grad(rec_loss, last, retain_graph=True)[0].norm()
            ga = torch.autograd.grad(g_loss, last, retain_graph=True)[0].norm()
            weight = (gr / (ga + 1e-4)).clamp(0, 1e4).detach() * args.adv
            loss = rec_loss + weight * g_loss
        else:
            g_loss = torch.zeros(())
            weight = torch.zeros(())
            loss = rec_loss
        opt_g.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        opt_g.step()
        d_loss = torch.zeros(())
        if adv_on:
            d_loss = F.relu(1 - disc(x)).mean() + F.relu(1 + disc(rec.detach())).mean()
            opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            opt_d.step()
        with torch.no_grad():
            decay = min(args.ema, (1 + step) / (10 + step))
            for pe, pm in zip(ema.parameters(), [*vae.post_quant_conv.parameters(), *vae.decoder.parameters()]):
                pe.mul_(decay).add_(pm, alpha=1 - decay)
        step += 1
        if step % args.log_every == 0:
            entry = {"step": step, "l1": l1.item(), "perceptual": perc.item(), "g": g_loss.item(),
                     "adv_weight": weight.item(), "d": d_loss.item(), "time": time.time()}
            log.write(json.dumps(entry) + "\n")
            log.flush()
            print(json.dumps(entry), flush=True)
        if time.time() - last_ckpt > 60 * args.checkpoint_minutes:
            checkpoint()
            last_ckpt = time.time()
    checkpoint()
    print(f"stopped at step {step}")


def export(args) -> None:
    from safetensors.torch import save_file

    st = torch.load(Path(args.run) / "checkpoint.pt", weights_only=False)
    vae = load_vae(args.vae)
    pair = nn.ModuleList([vae.post_quant_conv, vae.decoder])
    pair.load_state_dict(st["ema"])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    shutil.copy(Path(args.vae) / "config.json", out / "config.json")
    sd = {k: v.detach().to(torch.float16).contiguous() for k, v in vae.state_dict().items()}
    save_file(sd, str(out / "diffusion_pytorch_model.safetensors"))
    print(f"wrote {out} (EMA decoder after {st['step']} steps)")


def laplacian_var(rgb01: torch.Tensor) -> torch.Tensor:
    grey = 0.299 * rgb01[:, 0] + 0.587 * rgb01[:, 1] + 0.114 * rgb01[:, 2]
    k = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]]).view(1, 1, 3, 3)
    return F.conv2d(grey.unsqueeze(1), k).flatten(1).var(1)


@torch.no_grad()
def measure(args) -> None:
    images = load_images(args.data)
    vae = load_vae(args.vae)
    x = to_signed(images)
    rec = torch.cat([vae.decode(vae.encode(b).latent_dist.mean).sample for b in x.split(64)])
    a = ((x + 1) * 127.5).round().clamp(0, 255)
    b = ((rec + 1) * 127.5).round().clamp(0, 255)
    mse = (a - b).pow(2).flatten(1).mean(1)
    psnr = (10 * torch.log10(255.0**2 / mse.clamp_min(1e-10))).mean().item()
    sharp = (laplacian_var(b / 255).mean() / laplacian_var(a / 255).mean()).item()
    print(json.dumps({"vae": args.vae, "images": len(images), "psnr_db": round(psnr, 2), "sharpness_ratio": round(sharp, 3)}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(required=True)
    p = sub.add_parser("train")
    p.add_argument("--data", nargs="+", required=True)
    p.add_argument("--vae", required=True, help="the VAE folder whose encoder is kept")
    p.add_argument("--run", required=True)
    p.add_argument("--minutes", type=float)
    p.add_argument("--steps", type=int)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--perceptual", type=float, default=1.0)
    p.add_argument("--adv", type=float, default=0.5)
    p.add_argument("--disc-start", type=int, default=500)
    p.add_argument("--ema", type=float, default=0.999)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, help="CPU threads (default: all)")
    p.add_argument("--log-every", type=int, default=20)
    p.add_argument("--checkpoint-minutes", type=float, default=5.0)
    p.set_defaults(fn=train)
    p = sub.add_parser("export")
    p.add_argument("--run", required=True)
    p.add_argument("--vae", required=True)
    p.add_argument("--out", required=True)
    p.set_defaults(fn=export)
    p = sub.add_parser("measure")
    p.add_argument("--vae", required=True)
    p.add_argument("--data", nargs="+", required=True)
    p.set_defaults(fn=measure)
    args = ap.parse_args()
    args.fn(args)


if __name__ == "__main__":
    main()
