#!/usr/bin/env bash
# The web page: build the wasm module, serve the page, run the browser tests.
#
#   bash tools/web.sh serve [PORT]   # build (size profile) and serve on http://127.0.0.1:PORT (8765)
#   bash tools/web.sh build          # only build pkg/ (wasm-small profile, wasm-bindgen, wasm-opt)
#   bash tools/web.sh test           # wasm-bindgen-test in headless Chromium (WebGPU + CPU)
#   bash tools/web.sh page-test      # the page end to end with playwright-core
#
# Installs what is missing: the wasm32 target (rustup), wasm-bindgen-cli =0.2.130 (cargo
# install, no --locked: see ../shared/TOOLCHAIN.md), Chromium and chromedriver (apt, for tests),
# node and npm (apt) and tools/web's npm packages for the page test, binaryen@132 from npm for
# wasm-opt when npm is available (Debian's binaryen 108 breaks the
# output, so it is never used). SYNFER_WASM_PROFILE=release builds without the size profile
# (faster; the tests share its artifacts).
set -euo pipefail
cd "$(dirname "$0")/.."

BINDGEN_VERSION=0.2.130
TARGET=wasm32-unknown-unknown
TARGET_DIR="${CARGO_TARGET_DIR:-target}"
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp/synfer-xdg-$UID}"
mkdir -p -m 0700 "$XDG_RUNTIME_DIR"

log() { echo "web.sh: $*" >&2; }

ensure_wasm_target() {
  if ! rustup target list --installed | grep -qx "$TARGET"; then
    log "installing the $TARGET target"
    rustup target add "$TARGET"
  fi
}

ensure_bindgen() {
  if ! wasm-bindgen --version 2>/dev/null | grep -q " $BINDGEN_VERSION\$"; then
    log "installing wasm-bindgen-cli $BINDGEN_VERSION (about 3 minutes)"
    cargo install wasm-bindgen-cli --version "$BINDGEN_VERSION"
  fi
}

apt_install() {
  log "installing $* (apt)"
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

ensure_chromium() {
  if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
    apt_install chromium chromium-driver
  fi
}

ensure_npm_tools() {
  if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    apt_install nodejs npm
  fi
  if [ ! -d tools/web/node_modules/playwright-core ] || [ ! -d tools/web/node_modules/binaryen ]; then
    (cd tools/web && npm ci --silent)
  fi
}

wasm_opt() {
  local opt=tools/web/node_modules/.bin/wasm-opt
  if [ ! -x "$opt" ] && command -v npm >/dev/null; then
    log "installing binaryen@132 (npm) for wasm-opt"
    ensure_npm_tools || log "npm ci failed: skipping wasm-opt"
  fi
  if [ -x "$opt" ]; then
    log "wasm-opt -Oz"
    "$opt" -Oz --enable-bulk-memory --enable-bulk-memory-opt --enable-nontrapping-float-to-int \
      --enable-sign-ext --enable-reference-types --enable-multivalue --enable-mutable-globals \
      pkg/synfer_bg.wasm -o pkg/synfer_bg.opt.wasm
    mv pkg/synfer_bg.opt.wasm pkg/synfer_bg.wasm
  else
    log "no wasm-opt: the module stays larger (see README)"
  fi
}

build() {
  ensure_wasm_target
  ensure_bindgen
  local profile="${SYNFER_WASM_PROFILE:-wasm-small}"
  log "cargo build --profile $profile --target $TARGET"
  cargo build --profile "$profile" --lib --target "$TARGET" --no-default-features
  local dir="$profile"
  [ "$profile" = dev ] && dir=debug
  rm -rf pkg
  wasm-bindgen --target web --out-dir pkg "$TARGET_DIR/$TARGET/$dir/synfer.wasm"
  [ "${SYNFER_WASM_OPT:-1}" = 1 ] && wasm_opt
  local raw gz
  raw=$(stat -c %s pkg/synfer_bg.wasm)
  gz=$(gzip -9 -c pkg/synfer_bg.wasm | wc -c)
  log "pkg/synfer_bg.wasm: $raw bytes ($gz gzip -9)"
}

serve() {
  local port="${1:-8765}"
  build
  log "serving on http://127.0.0.1:$port/ (Ctrl-C to stop)"
  exec python3 -m http.server "$port" --bind 127.0.0.1
}

browser_tests() {
  ensure_wasm_target
  ensure_bindgen
  ensure_chromium
  CHROMEDRIVER="$(command -v chromedriver)" \
  CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=wasm-bindgen-test-runner \
  WASM_BINDGEN_TEST_TIMEOUT="${WASM_BINDGEN_TEST_TIMEOUT:-600}" \
    cargo test --release --target "$TARGET" --no-default-features --test web
}

# The page end to end (tools/web/page_test.mjs) on the release-profile module, which shares the
# browser tests' build artifacts; no wasm-opt (`serve` builds the size-optimised one).
page_test() {
  ensure_chromium
  ensure_npm_tools
  SYNFER_WASM_PROFILE=release SYNFER_WASM_OPT=0 build
  node tools/web/page_test.mjs
}

case "${1:-serve}" in
  build) build ;;
  serve) shift || true; serve "$@" ;;
  test) browser_tests ;;
  page-test) page_test ;;
  *) echo "usage: bash tools/web.sh [serve [PORT] | build | test | page-test]" >&2; exit 2 ;;
esac
