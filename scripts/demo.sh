#!/usr/bin/env bash
# The main job on the embedded default: `coffer demo` (a local test cluster, the operator
# installed from deploy/ and running as its pods, a sample application with a Filesystem
# and a Block PVC backed up through a Backup object, its volumes restored from the
# repository and compared byte for byte, the repository checked). This script builds the
# binary with the test cluster in it and runs that.
# Usage: scripts/demo.sh [WORKDIR]   (default: a new temporary directory)
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-$(mktemp -d /tmp/coffer-demo.XXXXXX)}
mkdir -p "$work"
if [ -z "${KUBEBUILDER_ASSETS:-}" ] && [ -x ../shared/k8s/assets ]; then
  KUBEBUILDER_ASSETS=$(../shared/k8s/assets)
  export KUBEBUILDER_ASSETS
fi
# scripts/test.sh builds the tests first and passes the binary that build made (the same
# features), so that the demo does not compile everything a second time.
if [ -n "${COFFER_DEMO_BIN:-}" ]; then
  exec "$COFFER_DEMO_BIN" demo --dir "$work"
fi
echo "==> building coffer (with the dev-cluster feature)" >&2
cargo build -q -j2 -p coffer --features dev-cluster
exec target/debug/coffer demo --dir "$work"
