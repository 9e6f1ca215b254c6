#!/usr/bin/env bash
# The one test command: installs what the tests need, then runs every test.
# Usage: scripts/test.sh [extra cargo-nextest arguments]
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

log() { printf '==> %s\n' "$*" >&2; }

# --- system packages (Debian) ---------------------------------------------------------
need_apt=()
command -v xz >/dev/null || need_apt+=(xz-utils)
command -v kubectl >/dev/null || need_apt+=(kubernetes-client)
command -v mkfs.ext4 >/dev/null || need_apt+=(e2fsprogs)
command -v setfattr >/dev/null || need_apt+=(attr)
if [ ${#need_apt[@]} -gt 0 ]; then
  log "installing ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq </dev/null
  apt-get install -y -qq "${need_apt[@]}" </dev/null >/dev/null
fi

# --- Python tools: moto's S3 server for the S3 backend tests -----------------------------
if ! command -v moto_server >/dev/null; then
  log "installing moto[server] from PyPI"
  python3 -m pip install -q 'moto[server]' </dev/null
  hash -r
fi
command -v moto_server >/dev/null || { echo "moto_server is not on PATH after install" >&2; exit 1; }
export COFFER_MOTO_SERVER=$(command -v moto_server)

# --- Kubernetes control plane for the test cluster ------------------------------------
if [ -x "$root/../shared/k8s/assets" ]; then
  KUBEBUILDER_ASSETS=$("$root/../shared/k8s/assets")
  export KUBEBUILDER_ASSETS
  log "KUBEBUILDER_ASSETS=$KUBEBUILDER_ASSETS"
fi

# --- Rust tests -----------------------------------------------------------------------
# Tests keep their caches apart from the user's.
export COFFER_CACHE_DIR=${COFFER_CACHE_DIR:-$(mktemp -d /tmp/coffer-test-cache.XXXXXX)}
export CARGO_BUILD_JOBS=${CARGO_BUILD_JOBS:-2}
if ! cargo nextest --version >/dev/null 2>&1; then
  log "cargo-nextest missing: installing it"
  cargo install --locked cargo-nextest </dev/null
fi
# Static checks first: formatting, lints (warnings are errors) and the API docs (broken
# links and missing docs are errors). Any failure stops the run here.
log "cargo fmt --check"
cargo fmt --all --check
log "cargo clippy (warnings are errors)"
cargo clippy --workspace --all-targets --features coffer/dev-cluster -j "$CARGO_BUILD_JOBS" -- -D warnings
log "cargo doc (warnings are errors)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --features coffer/dev-cluster -j "$CARGO_BUILD_JOBS" -q

# The README's main job runs too (without arguments, i.e. not when only some tests are
# asked for), before the tests so that their summary stays the last thing printed.
# One build for the demo and the tests: the tests' build (workspace features, dev
# dependencies) also makes the coffer binary the demo runs.
log "building the tests"
cargo nextest run --workspace --features coffer/dev-cluster --build-jobs "$CARGO_BUILD_JOBS" --no-run
demo_status=0
if [ $# -eq 0 ]; then
  [ -x target/debug/coffer ] || { echo "the test build made no target/debug/coffer" >&2; exit 1; }
  export COFFER_DEMO_BIN=$root/target/debug/coffer
  log "the main job: scripts/demo.sh"
  demo_dir=$(mktemp -d /tmp/coffer-demo.XXXXXX)
  demo_log=$(mktemp /tmp/coffer-demo-log.XXXXXX)
  if "$root/scripts/demo.sh" "$demo_dir" </dev/null 2>&1 | tee "$demo_log"; then
    rm -rf "$demo_dir" "$demo_log"
  else
    demo_status=1
    log "scripts/demo.sh FAILED (its files are in $demo_dir)"
  fi
fi
log "running the tests"
cargo nextest run --workspace --features coffer/dev-cluster --no-fail-fast --build-jobs "$CARGO_BUILD_JOBS" "$@"
if [ "$demo_status" -ne 0 ]; then
  # Repeated here, where a log that keeps only its end still shows it.
  log "scripts/demo.sh failed; the end of its output:"
  tail -n 40 "$demo_log" >&2
  log "the tests passed but scripts/demo.sh failed (see above)"
  exit 1
fi
