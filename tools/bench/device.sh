#!/usr/bin/env bash
# Issue 17's GPU check in one device call: synfer on wgpu/Vulkan (f32 and f16; CUDA too when
# the binary has it) against diffusers (fp32, fp16) on the same GPU, SD-1.5-shaped UNet at 512²,
# batch 1 and 8; parity of a 10-step 512² generation with diffusers; batch 8 end to end.
#
# Here, before the lease (a release build, then about a minute):
#
#   bash tools/bench/device.sh prepare   # → .devbench/: synfer.xz (stripped), diffusers.tar.xz,
#                                        #   tokenizer.tar.xz, Vulkan loader debs (git-ignored);
#                                        #   SYNFER_BENCH_FEATURES=cuda adds burn's CUDA runtime
#                                        #   (its build downloads LLVM: needs internet)
#   bash tools/bench/device.sh slim      # the bench needs none of models/, tests/, assets/
#                                        # (the binary embeds what it uses): tools/slim.sh takes
#                                        # them out of git's index so tree + carry < 64 MiB
#
# The device call (the device tool's `run`, carry [".devbench"], timeout_s 600):
#
#   bash tools/bench/device.sh run       # results → $OUT (bench-*.json, parity.jsonl, log.txt,
#                                        #   summary.txt)
#
# Right after it, here:
#
#   bash tools/bench/device.sh unslim    # puts them back in the index (nothing to commit)
#
# Dry run here (CPU, tiny sizes): SYNFER_BENCH_DRY=1 OUT=/tmp/out bash tools/bench/device.sh run
set -uo pipefail
cd "$(dirname "$0")/../.."
SLIM=(models tests assets)
D=.devbench
EXCLUDE=.git/info/exclude

case "${1:-}" in
prepare)
  set -e
  mkdir -p $D
  grep -qx "/$D/" $EXCLUDE 2>/dev/null || echo "/$D/" >>$EXCLUDE
  export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/synfer/target}
  cargo build --release --bin synfer ${SYNFER_BENCH_FEATURES:+--features $SYNFER_BENCH_FEATURES}
  strip -o /tmp/synfer-bench "$CARGO_TARGET_DIR/release/synfer"
  xz -T2 -9 -c /tmp/synfer-bench >$D/synfer.xz
  site=$(.venv/bin/python -c 'import diffusers, os; print(os.path.dirname(os.path.dirname(diffusers.__file__)))')
  # With their dist-info, so that importlib.metadata finds their versions from PYTHONPATH.
  (cd "$site" && tar -cf - --exclude=__pycache__ diffusers diffusers-*.dist-info \
    importlib_metadata importlib_metadata-*.dist-info) | xz -T2 -9 >$D/diffusers.tar.xz
  tar -C tests/fixtures/sd1-tiny -cf - tokenizer | xz -9 >$D/tokenizer.tar.xz
  mkdir -p $D/gl /tmp/amd64/partial
  o='-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/amd64'
  apt-get $o update -qq && (cd $D/gl && apt-get $o download -qq libvulkan1)
  du -sh $D/*
  ;;
slim)
  bash tools/slim.sh slim $D "${SLIM[@]}"
  ;;
unslim)
  bash tools/slim.sh unslim
  ;;
run)
  T0=$(date +%s)
  DEADLINE=${DEADLINE:-560}
  log() { echo "[$(($(date +%s) - T0))s] $*" | tee -a "$OUT/log.txt"; }
  # Seconds for the next step: at most $1, never past the deadline.
  tl() { local left=$((DEADLINE - ($(date +%s) - T0))); [ "$left" -gt "$1" ] && echo "$1" || echo $((left > 5 ? left : 5)); }
  W=/tmp/synfer-bench-work
  mkdir -p $W "$OUT"
  if [ "${SYNFER_BENCH_DRY:-0}" = 1 ]; then
    B=${SYNFER_BIN:-${CARGO_TARGET_DIR:-$HOME/.cache/synfer/target}/release/synfer}
    PY=.venv/bin/python GPU=cpu SIZE=64 ITERS=1 REF=cpu
  else
    B=$W/synfer
    xz -T0 -dc $D/synfer.xz >$B && chmod +x $B
    mkdir -p $W/site && tar -C $W/site -xJf $D/diffusers.tar.xz
    export PYTHONPATH=$W/site${PYTHONPATH:+:$PYTHONPATH}
    for f in $D/gl/*.deb; do [ -e "$f" ] && dpkg -x "$f" /; done
    ldconfig 2>/dev/null
    if ! ls /usr/share/vulkan/icd.d/*nvidia* /etc/vulkan/icd.d/*nvidia* >/dev/null 2>&1 &&
      [ -f /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json ]; then
      export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
    fi
    # burn's CUDA runtime (if built in) loads NVRTC at run time: the toolkit's or PyTorch's.
    for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib \
      $(python3 -c 'import nvidia, os; print(" ".join(os.path.join(p, "cuda_nvrtc/lib") for p in nvidia.__path__))' 2>/dev/null); do
      ls "$d"/libnvrtc.so* >/dev/null 2>&1 && export LD_LIBRARY_PATH=$d${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
    done
    export XDG_RUNTIME_DIR=/tmp/xdg && mkdir -p -m 700 $XDG_RUNTIME_DIR
    PY=python3 GPU=gpu SIZE=512 ITERS=3 REF=cuda
  fi
  export PYTHONUNBUFFERED=1
  if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | tee -a "$OUT/log.txt"
  fi
  bench() { # NAME SECONDS ARGS...: one `synfer bench`, its JSON and its output kept
    local name=$1 secs=$2
    shift 2
    log "bench $name: $*"
    timeout "$(tl "$secs")" $B bench --size $SIZE --iters $ITERS --python $PY --out "$OUT/bench-$name.json" "$@" 2>&1 |
      tee -a "$OUT/log.txt"
  }
  # 1. wgpu/Vulkan f32 against diffusers fp32 and fp16 (same GPU, same run); batch 1, then 8.
  bench gpu-f32-b1 150 --device $GPU --batch 1 --reference $REF --reference-dtype fp32,fp16
  bench gpu-f32-b8 150 --device $GPU --batch 8 --reference $REF --reference-dtype fp32,fp16
  if [ $GPU = cpu ]; then
    log "(dry run: f16, CUDA, parity and batch 8 end to end need a GPU)"
  else
    # 2. f16 on the same path (ratios against step 1's diffusers timings in summary.txt).
    bench gpu-f16-b1 60 --device gpu --precision f16 --batch 1 --reference none
    bench gpu-f16-b8 60 --device gpu --precision f16 --batch 8 --reference none
    # 3. burn's CUDA runtime, when this binary has it.
    devices=gpu
    if timeout 60 $B bench --device cuda --size 64 --batch 1 --iters 1 --reference none >/dev/null 2>&1; then
      devices="gpu cuda"
      bench cuda-f32-b1 60 --device cuda --batch 1 --reference none
      bench cuda-f16-b1 60 --device cuda --precision f16 --batch 1 --reference none
    else
      log "no CUDA runtime in this binary (or no driver): $($B bench --device cuda --size 64 --batch 1 --iters 1 --reference none 2>&1 | tail -1)"
    fi
    # 4. Parity: a 10-step 512² generation of a random SD-1.5 pipeline vs diffusers.
    log "parity: make the random SD-1.5 folder, diffusers references"
    mkdir -p $W/tok && tar -C $W/tok -xJf $D/tokenizer.tar.xz
    timeout "$(tl 90)" $PY tools/bench/sd15_parity.py make $W/sd15 $W/tok/tokenizer 2>&1 | tail -1 | tee -a "$OUT/log.txt"
    timeout "$(tl 120)" $PY tools/bench/sd15_parity.py reference $W/sd15 $W/ref --device cuda 2>&1 | tail -1 | tee -a "$OUT/log.txt"
    cp $W/ref/reference.json "$OUT/" 2>/dev/null
    for dev in $devices; do
      for p in f32 f16; do
        log "parity $dev $p"
        timeout "$(tl 90)" $B generate --device $dev --precision $p --model $W/sd15 --prompt "a portrait photo" \
          --steps 10 --guidance 7.5 --width 512 --height 512 --latents $W/ref/lat.npy --out $W/parity-$dev-$p.png 2>&1 |
          tail -2 | tee -a "$OUT/log.txt"
        $PY tools/bench/sd15_parity.py compare $W/parity-$dev-$p.png $W/ref/ref_fp${p#f}.npy 2>&1 | tee -a "$OUT/parity.jsonl"
      done
    done
    # 5. Batch 8 at 512 end to end (chunked attention, sliced VAE decode).
    log "batch 8 at 512, 2 steps"
    timeout "$(tl 120)" $B generate --device gpu --model $W/sd15 --prompt "a portrait photo" --steps 2 \
      --num-images 8 --width 512 --height 512 --out $W/b8.png 2>&1 | tail -2 | tee -a "$OUT/log.txt"
    cp $W/b8.json "$OUT/batch8.json" 2>/dev/null
  fi
  # Ratios: every synfer timing against diffusers' of step 1, same batch.
  $PY - "$OUT" <<'EOF' 2>&1 | tee "$OUT/summary.txt"
import glob, json, os, sys
out = sys.argv[1]
ref = {}
docs = {os.path.basename(p)[6:-5]: json.load(open(p)) for p in sorted(glob.glob(f"{out}/bench-*.json"))}
for d in docs.values():
    for r in d["results"]:
        for x in r["diffusers"]:
            if "result" in x:
                ref[(r["synfer"]["batch"], x["dtype"])] = x["result"]["mean_s"]
for name, d in docs.items():
    for r in d["results"]:
        b, s = r["synfer"]["batch"], r["synfer"]["mean_s"]
        cmp = ", ".join(f"{s / t:.2f}x diffusers {dt}" for (bb, dt), t in sorted(ref.items()) if bb == b)
        print(f"{name:11s} batch {b}: {s:.4f} s/step  ({cmp or 'no reference'})  [{d['device']}]")
EOF
  log "done"
  ;;
*)
  sed -n 2,24p "$0"
  exit 2
  ;;
esac
