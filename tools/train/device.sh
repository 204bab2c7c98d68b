#!/usr/bin/env bash
# One device lease = one training run of the default model on a GPU (CUDA, PyTorch), sized to
# the device tool's limits: ≤ 64 MiB up (the tracked tree without tests/ and assets/, ~48 MiB,
# + .devtrain/), ≤ 8 files of ≤ 16 MiB back, one command of ≤ 10 min.
#
# The training data travels inside the tree: models/synfer-tiny/training/pack.npz (VAE latents,
# caption ids, AUs and label confidences of the dataset; see tools/train/torch_train.py pack).
# Rebuild it only when the dataset, the VAE or the tokenizer changes:
#
#   bash tools/train/device.sh pack DATA...        # here; needs the venv of tools/README.md
#
# Before the lease, here (seconds): the diffusers wheel, which the device image lacks:
#
#   bash tools/train/device.sh wheels              # → .devtrain/whl (git-ignored)
#   bash tools/train/device.sh slim                # tests/, assets/ leave git's index (tools/slim.sh)
#
# The device call (the device tool's `run`, carry [".devtrain"], timeout_s 600):
#
#   bash tools/train/device.sh run [MINUTES] [BATCH]   # default 7.5 min, batch 1024
#
# (A dry run here: PATH=$PWD/.venv/bin:$PATH OUT=/tmp/out bash tools/train/device.sh run 0.2 8)
#
# It continues the committed models/synfer-tiny from its training state (raw weights in
# training/state/, EMA = the folder's weights; see tools/train/torch_train.py) and returns the
# trained components and the new state as one tar in 15 MiB parts ($OUT/model.tar.part-*), plus
# train.log and loss.jsonl. Back here:
#
#   bash tools/train/device.sh unslim              # the index as before (nothing to commit)
#   bash tools/train/device.sh install FILES_AT    # unpack them over models/synfer-tiny
#
# then `synfer eval --out models/synfer-tiny/eval`, rebuild (the CLI embeds the folder), update
# the model card and commit. Settings: batch 1024, lr 4e-4 (warm-up 300 steps, cosine to 4e-5
# over the budget), bf16 autocast, labels of confidence ≥ 0.6, classes ∝ count^0.5.
set -euo pipefail
cd "$(dirname "$0")/../.."
PACK=models/synfer-tiny/training/pack.npz

case "${1:-}" in
pack)
  shift
  [ $# -gt 0 ] || { echo "usage: device.sh pack DATA..." >&2; exit 2; }
  args=()
  for d in "$@"; do args+=(--data "$d"); done
  .venv/bin/python tools/train/torch_train.py pack "${args[@]}" --model models/synfer-tiny --out "$PACK"
  ;;
wheels)
  mkdir -p .devtrain/whl
  .venv/bin/python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp -d .devtrain/whl diffusers==0.42.1 importlib_metadata zipp
  du -sh .devtrain
  ;;
slim)
  bash tools/slim.sh slim .devtrain tests assets
  ;;
unslim)
  bash tools/slim.sh unslim
  ;;
run)
  minutes=${2:-7.5}
  batch=${3:-1024}
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .devtrain/whl/*.whl
  export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1
  nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
  python3 tools/train/torch_train.py train --pack "$PACK" --init models/synfer-tiny --run /tmp/run \
    --minutes "$minutes" --batch "$batch" --lr 4e-4 --min-lr 4e-5 --bf16 --min-confidence 0.6 \
    --log-every 100 --checkpoint-minutes 3 2>&1 | tee "$OUT/train.log"
  python3 tools/train/torch_train.py export --run /tmp/run --base models/synfer-tiny --out /tmp/export \
    --components-only
  tar -C /tmp/export -cf - text_encoder unet au_adapter training | split -b 15M - "$OUT/model.tar.part-"
  cp /tmp/run/loss.jsonl "$OUT/"
  ls -lR "$OUT"
  ;;
install)
  from=${2:?usage: device.sh install FILES_AT}
  cat "$from"/model.tar.part-* | tar -xv -C models/synfer-tiny
  cp "$from/loss.jsonl" models/synfer-tiny/training/device-loss.jsonl
  echo "installed; now: synfer eval --out models/synfer-tiny/eval, and rebuild"
  ;;
*)
  sed -n 2,35p "$0"
  exit 2
  ;;
esac
