"""Writes tests/fixtures/fer/: one tiny dataset per published FER layout, in the formats the
datasets document, plus expected.json with the label every item must get.

The expected labels are written here from each dataset's own documentation, independently of
synfer's tables:
- FER2013 (Kaggle `fer2013.csv`): emotion 0=Angry 1=Disgust 2=Fear 3=Happy 4=Sad 5=Surprise
  6=Neutral; Usage Training / PublicTest / PrivateTest; 48x48 grey pixels, space-separated.
- RAF-DB basic (`EmoLabel/list_patition_label.txt`): 1=Surprise 2=Fear 3=Disgust 4=Happiness
  5=Sadness 6=Anger 7=Neutral; images `Image/aligned/<name>_aligned.jpg`.
- AffectNet (`training.csv` / `validation.csv`): expression 0=Neutral 1=Happy 2=Sad 3=Surprise
  4=Fear 5=Disgust 6=Anger 7=Contempt 8=None 9=Uncertain 10=Non-Face; face box columns.
- torchvision ImageFolder (`<split>/<class>/<image>`), synfer `metadata.jsonl`.

Every image is a flat colour (grey level = 30 * canonical index + 20, so a decoded pixel
identifies the item) except the AffectNet ones, which carry the flat face inside a white
border that the face box must crop away.

    python tools/fer/make_fer_fixtures.py   (writes tests/fixtures/fer)
"""

import json
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[2] / "tests/fixtures/fer"
CANON = ["neutral", "happy", "sad", "angry", "fearful", "disgusted", "surprised", "contempt"]


def grey(c):
    return 30 * CANON.index(c) + 20


def flat(path, c, size=8, fmt=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size, size, 3), grey(c), np.uint8)).save(path, format=fmt)


def main():
    shutil.rmtree(ROOT, ignore_errors=True)
    expected = {}

    # FER2013: (emotion code, Usage, canonical per the Kaggle description).
    rows = [(3, "Training", "happy"), (6, "PublicTest", "neutral"), (0, "PrivateTest", "angry"),
            (5, "Training", "surprised")]
    lines = ["emotion,pixels,Usage"]
    for code, usage, c in rows:
        lines.append(f"{code},{' '.join([str(grey(c))] * 48 * 48)},{usage}")
    (ROOT / "fer2013").mkdir(parents=True)
    (ROOT / "fer2013/fer2013.csv").write_text("\n".join(lines) + "\n")
    split = {"Training": "train", "PublicTest": "val", "PrivateTest": "test"}
    expected["fer2013"] = [[c, split[u]] for _, u, c in rows]

    # RAF-DB basic.
    raf = [("train_00001.jpg", 4, "happy"), ("train_00002.jpg", 7, "neutral"),
           ("test_0001.jpg", 1, "surprised"), ("test_0002.jpg", 6, "angry")]
    (ROOT / "rafdb/EmoLabel").mkdir(parents=True)
    (ROOT / "rafdb/EmoLabel/list_patition_label.txt").write_text(
        "".join(f"{n} {code}\n" for n, code, _ in raf))
    for n, _, c in raf:
        flat(ROOT / "rafdb/Image/aligned" / (n[:-4] + "_aligned.jpg"), c, 100, "JPEG")
    expected["rafdb"] = [[c, n.split("_")[0]] for n, _, c in raf]

    # AffectNet: a 32x32 white image with an 8x8 face at (8, 4); codes 8-10 must be skipped.
    header = "subDirectory_filePath,face_x,face_y,face_width,face_height,facial_landmarks,expression,valence,arousal"
    an = [("1/a.jpg", 1, "happy"), ("1/b.png", 7, "contempt"), ("2/c.png", 10, None),
          ("2/d.png", 6, "angry"), ("2/e.png", 8, None)]
    lines = [header]
    for rel, code, c in an:
        img = np.full((32, 32, 3), 255, np.uint8)
        img[4:12, 8:16] = grey(c) if c else 0
        path = ROOT / "affectnet/Manually_Annotated_Images" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(path, quality=100) if rel.endswith("jpg") else Image.fromarray(img).save(path)
        lines.append(f'{rel},8,4,8,8,"1.0;2.0;3.0",{code},0.5,-0.2')
    (ROOT / "affectnet/training.csv").write_text("\n".join(lines) + "\n")
    expected["affectnet"] = [[c, "train"] for _, _, c in an if c]

    # ImageFolder with splits, class names as aliases.
    folder = [("train/happiness/x.png", "happy"), ("train/Neutral/y.png", "neutral"),
              ("test/sadness/z.png", "sad")]
    for rel, c in folder:
        flat(ROOT / "imagefolder" / rel, c)
    expected["imagefolder"] = [[c, rel.split("/")[0]] for rel, c in folder]

    # synfer metadata.jsonl (synth output fields; one facetext-style `expression` line).
    meta = [{"file_name": "images/train/happy/000000.png", "label": "happy", "split": "train",
             "requested": "happy"},
            {"file_name": "images/val/sad/000001.png", "label": "sad", "split": "val",
             "requested": "angry"},
            {"file_name": "images/franck.png", "expression": "surprised"}]
    for m in meta:
        flat(ROOT / "synfer" / m["file_name"], m.get("label", m.get("expression")))
    (ROOT / "synfer/metadata.jsonl").write_text("".join(json.dumps(m) + "\n" for m in meta))
    expected["synfer"] = [[m.get("label", m.get("expression")), m.get("split")] for m in meta]

    expected["grey_level"] = "30 * canonical index + 20 (neutral, happy, sad, angry, fearful, disgusted, surprised, contempt)"
    (ROOT / "expected.json").write_text(json.dumps(expected, indent=1) + "\n")
    print(f"wrote {ROOT}")


if __name__ == "__main__":
    main()
