#!/usr/bin/env bash
# The test command of the README: installs the system packages the tests need when missing
# (Mesa's Vulkan driver, lavapipe, for the wgpu test), runs the whole native suite on the CPU,
# then the browser tests (tools/web.sh test: wasm-bindgen-test in headless Chromium on WebGPU
# and on the CPU fallback; tools/web.sh page-test: the page end to end with playwright-core),
# installing Chromium, the wasm target, wasm-bindgen-cli and the npm tools when missing.
#
#   bash tools/test.sh                 # everything
#   bash tools/test.sh --test diffusers_parity   # arguments go to `cargo test --release`; native only
#   SYNFER_SKIP_BROWSER=1 bash tools/test.sh   # native only
set -euo pipefail
cd "$(dirname "$0")/.."

if ! ls /usr/share/vulkan/icd.d/lvp_icd.*.json >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && apt-get install -y -qq mesa-vulkan-drivers >/dev/null
  else
    echo "tools/test.sh: install mesa-vulkan-drivers (lavapipe) for the wgpu test" >&2
  fi
fi
# wgpu prints a harmless warning without a runtime dir.
if [ -z "${XDG_RUNTIME_DIR:-}" ]; then
  export XDG_RUNTIME_DIR="${TMPDIR:-/tmp}/synfer-xdg-$(id -u)"
  mkdir -p -m 0700 "$XDG_RUNTIME_DIR"
fi
cargo test --release "$@"
if [ $# -gt 0 ] || [ "${SYNFER_SKIP_BROWSER:-0}" = 1 ]; then
  exit 0
fi

bash tools/web.sh test
bash tools/web.sh page-test
