"""Writes the LFW consensus evaluation set of issue 9 as an ImageFolder.

The faces are rows 0..99 of scikit-image 0.26.0's `lfw_subset.npy` (25x25 grey, BSD-3), as
stored in the committed parity fixture `tests/fixtures/face/fer_reference.safetensors`
(`fer_a.input`: resized to 112x112 by tfjs `resizeBilinear`, grey replicated to RGB by the
loader). Labels are the consensus of the ORIGINAL tfjs classifiers on those faces
(`fer_a.probs` = face-api.js FaceExpressionNet, `fer_b.probs` = human's mini-Xception, both
recorded by tools/face/make_face_assets.js): a face is kept only where both argmaxes agree.
This is a proxy for a human-labelled test set, not one.

    python tools/fer/lfw_consensus.py OUT_DIR

Needs numpy, pillow and safetensors (tools/requirements.txt). LFW faces are for evaluation
only: never train on OUT_DIR.
"""

import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image
from safetensors.numpy import load_file

CLASSES = ["neutral", "happy", "sad", "angry", "fearful", "disgusted", "surprised"]
# mini-Xception's native order (angry, disgust, fear, happy, sad, surprise, neutral) -> canonical.
FER_B_TO_CANONICAL = [6, 3, 4, 0, 2, 1, 5]


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    out = Path(sys.argv[1])
    fixture = Path(__file__).resolve().parents[2] / "tests/fixtures/face/fer_reference.safetensors"
    t = load_file(str(fixture))
    a = t["fer_a.probs"].argmax(1)
    b = t["fer_b.probs"][:, FER_B_TO_CANONICAL].argmax(1)
    faces = t["fer_a.input"]
    kept = {}
    for i in range(len(faces)):
        if a[i] != b[i]:
            continue
        label = CLASSES[a[i]]
        (out / label).mkdir(parents=True, exist_ok=True)
        Image.fromarray(faces[i], mode="L").convert("RGB").save(out / label / f"lfw_{i:03d}.png")
        kept[label] = kept.get(label, 0) + 1
    summary = {
        "source": "scikit-image 0.26.0 lfw_subset.npy rows 0..99 via " + str(fixture.name),
        "rule": "face-api and mini-xception (original tfjs outputs) agree",
        "faces": int(len(faces)),
        "kept": kept,
    }
    (out / "consensus.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
