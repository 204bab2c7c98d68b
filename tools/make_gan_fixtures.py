"""Fixture for `tests/gan.rs`: a small random DCGAN generator of gan-face-generate's architecture
(`models.Generator`, here nz=8, ngf=4, nc=3), saved exactly as the package's `weights.tar` is
(`torch.save({"netG_state_dict": ...})`, zip format), and its outputs for fixed latents.

BatchNorm statistics and affine parameters are randomised (a fresh module has mean 0, var 1,
which would hide a wrong normalisation). Deterministic: seeds fixed, CPU, one thread.

    python tools/make_gan_fixtures.py     # writes tests/fixtures/gan/
"""

import json
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "tests/fixtures/gan"
NZ, NGF, NC = 8, 4, 3


def generator(nz: int, ngf: int, nc: int) -> nn.Sequential:
    """`gan_face_generate.models.Generator(ngpu, nc, nz, ngf).main`, layer for layer."""
    return nn.Sequential(
        nn.ConvTranspose2d(nz, ngf * 8, 4, 1, 0, bias=False), nn.BatchNorm2d(ngf * 8), nn.ReLU(True),
        nn.ConvTranspose2d(ngf * 8, ngf * 4, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf * 4), nn.ReLU(True),
        nn.ConvTranspose2d(ngf * 4, ngf * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf * 2), nn.ReLU(True),
        nn.ConvTranspose2d(ngf * 2, ngf, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf), nn.ReLU(True),
        nn.ConvTranspose2d(ngf, nc, 4, 2, 1, bias=False), nn.Tanh(),
    )


def main() -> None:
    torch.manual_seed(7)
    torch.set_num_threads(1)
    net = nn.Module()
    net.main = generator(NZ, NGF, NC)
    with torch.no_grad():
        for m in net.main:
            if isinstance(m, nn.ConvTranspose2d):
                m.weight.normal_(0.0, 0.3)
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.3, 0.3)
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.3, 2.0)
                m.num_batches_tracked.fill_(1234)
    net.eval()
    OUT.mkdir(parents=True, exist_ok=True)
    torch.save({"netG_state_dict": net.state_dict(), "epoch": 3}, OUT / "tiny_generator.tar")
    z = torch.randn(3, NZ, 1, 1, generator=torch.Generator().manual_seed(11))
    with torch.no_grad():
        images = net.main(z)
    save_file({"z": z.contiguous(), "images": images.contiguous()}, str(OUT / "reference.safetensors"))
    info = {
        "generator": "tools/make_gan_fixtures.py",
        "torch": torch.__version__,
        "architecture": f"gan_face_generate.models.Generator(nz={NZ}, ngf={NGF}, nc={NC}), eval mode",
        "z": "torch.randn(3, 8, 1, 1, generator=manual_seed(11))",
        "images": "net.main(z): [3, 3, 64, 64] in [-1, 1]",
    }
    (OUT / "reference.json").write_text(json.dumps(info, indent=1) + "\n")
    print("wrote", *(p.name for p in sorted(OUT.iterdir())))


if __name__ == "__main__":
    main()
