#!/usr/bin/env bash
# One device lease = one training run of the default model on a GPU (CUDA, PyTorch), sized to
# the device tool's limits: ≤ 64 MiB up (the repo + .devtrain/), ≤ 8 files of ≤ 16 MiB back,
# one command of ≤ 10 min.
#
# Here, before the lease (needs the venv of tools/README.md and a `synfer data build` folder):
#
#   bash tools/train/device.sh prepare DATA        # → .devtrain/: pack.npz + diffusers wheel
#
# The device call (the device tool's `run`, carry [".devtrain"], timeout_s 600):
#
#   bash tools/train/device.sh run [MINUTES]       # default 7.5 min of training
#
# It trains text encoder + UNet + AU adapter from the committed models/synfer-tiny (its EMA
# weights are the resumable state) with tools/train/torch_train.py, and writes the trained
# components to $OUT/model/ (7 files) plus loss.jsonl. Back here:
#
#   bash tools/train/device.sh install FILES_AT    # copy them over models/synfer-tiny
#
# then `synfer eval --out models/synfer-tiny/eval`, rebuild (the CLI embeds the folder) and
# commit. The run's settings: batch 1024, lr 4e-4 (warm-up 300, cosine to 4e-5 over the
# budget), bf16 autocast.
set -euo pipefail
cd "$(dirname "$0")/../.."
DIFFUSERS=diffusers==0.42.1

case "${1:-}" in
prepare)
  data=${2:?usage: device.sh prepare DATA}
  mkdir -p .devtrain/whl
  .venv/bin/python tools/train/torch_train.py pack "$data" models/synfer-tiny .devtrain/pack.npz
  # diffusers is not on the device image (torch, transformers, huggingface_hub, safetensors are).
  .venv/bin/python -m pip download -q --no-deps --only-binary=:all: -d .devtrain/whl "$DIFFUSERS" \
    importlib_metadata==8.7.0 zipp==3.23.0
  du -sh .devtrain
  git ls-files -z | xargs -0 du -cb | tail -1 | awk '{printf "tracked tree: %.1f MiB\n", $1/1048576}'
  du -sb .devtrain | awk '{printf ".devtrain: %.1f MiB (limit with the tree: 64 MiB)\n", $1/1048576}'
  ;;
run)
  minutes=${2:-7.5}
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .devtrain/whl/*.whl
  export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1
  nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
  python3 tools/train/torch_train.py train --pack .devtrain/pack.npz --init models/synfer-tiny --run /tmp/run \
    --minutes "$minutes" --batch 1024 --lr 4e-4 --min-lr 4e-5 --bf16 --log-every 100 --checkpoint-minutes 3 \
    2>&1 | tee "$OUT/train.log"
  python3 tools/train/torch_train.py export --run /tmp/run --base models/synfer-tiny --out /tmp/export \
    --components-only
  mkdir -p "$OUT/model"
  cp -r /tmp/export/text_encoder /tmp/export/unet /tmp/export/au_adapter "$OUT/model/"
  cp /tmp/run/loss.jsonl "$OUT/"
  ls -lR "$OUT"
  ;;
install)
  from=${2:?usage: device.sh install FILES_AT}
  for c in text_encoder unet au_adapter; do cp "$from/model/$c/"* "models/synfer-tiny/$c/"; done
  cp "$from/loss.jsonl" models/synfer-tiny/training/device-loss.jsonl
  echo "installed; now: synfer eval --out models/synfer-tiny/eval, and rebuild"
  ;;
*)
  sed -n 2,26p "$0"
  exit 2
  ;;
esac
