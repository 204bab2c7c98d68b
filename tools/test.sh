#!/usr/bin/env bash
# The test command of the README: installs the system packages the tests need when missing
# (Mesa's Vulkan driver, lavapipe, for the wgpu test), then runs the whole suite on the CPU.
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
exec cargo test --release "$@"
