#!/usr/bin/env bash
# Memory by object count: namespaces of SIZES objects (40% ConfigMaps, 30% Secrets, 20%
# Services, 10% Deployments with 0 replicas, as bench/objects.sh) on the local test
# cluster, each backed up by `coffer resources backup` of every binary given, and (with
# RESTORE=1) restored into a new namespace; peak RSS (GNU time's %M) and seconds of each,
# side by side. Writes the table to bench/RESULTS-scale.md.
#
# Usage: bench/objects-memory.sh [LABEL=COFFER_BINARY ...]   (default: this tree's release build)
#   env SIZES ("1000 10000 66000"), RESTORE (0), WORK (bench/work-objects-memory)
# Example: bench/objects-memory.sh before=/tmp/coffer-old after=target/release/coffer
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
SIZES=${SIZES:-1000 10000 66000}
RESTORE=${RESTORE:-0}
work=${WORK:-$root/bench/work-objects-memory}
export KUBEBUILDER_ASSETS=${KUBEBUILDER_ASSETS:-$("$root/../shared/k8s/assets" 2>/dev/null || true)}
[ -n "$KUBEBUILDER_ASSETS" ] || { echo "set KUBEBUILDER_ASSETS (the kube-apiserver and etcd binaries)" >&2; exit 1; }
command -v kubectl >/dev/null || { echo "kubectl is needed (apt-get install kubernetes-client)" >&2; exit 1; }
[ -x /usr/bin/time ] || { echo "GNU time is needed (apt-get install time)" >&2; exit 1; }

bins=("$@")
if [ ${#bins[@]} -eq 0 ]; then
  echo "==> building coffer (release)" >&2
  cargo build -q --release -j2 -p coffer --features dev-cluster
  bins=("coffer=$root/target/release/coffer")
fi
last_bin=${bins[-1]#*=}

rm -rf "$work" && mkdir -p "$work"
export COFFER_PASSWORD=bench COFFER_CACHE_DIR=$work/cache
# shellcheck source=bench/cluster.sh
source "$root/bench/cluster.sh"
start_cluster "$last_bin" "$work"
"$last_bin" --repo "$work/gen-repo" repo init --kdf-memory-kib 1024 >/dev/null

results=$work/results.tsv
: >"$results"
for n in $SIZES; do
  ns=objects-$n
  echo "==> creating $n objects in namespace $ns" >&2
  t0=$(date +%s)
  python3 "$root/bench/gen_objects.py" "$n" "$work/gen-$n" "$ns"
  gen_id=$("$last_bin" --repo "$work/gen-repo" resources import "$work/gen-$n" --origin bench --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["snapshot_id"])')
  "$last_bin" --repo "$work/gen-repo" resources restore "$gen_id" --json >/dev/null
  echo "    created in $(( $(date +%s) - t0 )) s" >&2
  for pair in "${bins[@]}"; do
    label=${pair%%=*} bin=${pair#*=}
    repo=$work/repo-$label
    [ -d "$repo" ] || "$bin" --repo "$repo" repo init --kdf-memory-kib 1024 >/dev/null
    /usr/bin/time -f '%e %M' -o "$work/time" "$bin" --repo "$repo" resources backup --namespace "$ns" --json >"$work/backup.json"
    read -r secs kib <"$work/time"
    stored=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["objects"])' "$work/backup.json")
    printf '%s\t%s\tbackup\t%s\t%s\t%s\n' "$label" "$n" "$secs" "$kib" "$stored" | tee -a "$results"
    if [ "$RESTORE" = 1 ]; then
      id=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["snapshot_id"])' "$work/backup.json")
      /usr/bin/time -f '%e %M' -o "$work/time" "$bin" --repo "$repo" resources restore "$id" --namespace-mapping "$ns=r-$label-$n" --json >"$work/restore.json"
      read -r secs kib <"$work/time"
      printf '%s\t%s\trestore\t%s\t%s\t%s\n' "$label" "$n" "$secs" "$kib" "$stored" | tee -a "$results"
      "${kc[@]}" delete namespace "r-$label-$n" --wait=false >/dev/null
    fi
  done
done

python3 - "$results" "$root/bench/RESULTS-scale.md" "$(nproc)" <<'PY'
import datetime, platform, re, sys
res, out, cores = sys.argv[1:4]
rows = [l.rstrip("\n").split("\t") for l in open(res) if l.strip()]
labels = list(dict.fromkeys(r[0] for r in rows))
L = ["## Kubernetes objects: memory by object count", ""]
L.append(f"Run {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC on {platform.machine()} with {cores} cores, by `bench/objects-memory.sh`. "
         "Namespaces of N objects (40% ConfigMaps, 30% Secrets, 20% Services, 10% Deployments with 0 replicas) on the test cluster; "
         "`coffer resources backup --namespace` of each by every binary, peak RSS from GNU time, in the same run.")
L.append("")
L.append("| step | objects | stored | " + " | ".join(f"{l} s / peak MiB" for l in labels) + " |")
L.append("| --- | ---: | ---: | " + " | ".join("---" for _ in labels) + " |")
keys = list(dict.fromkeys((r[2], int(r[1])) for r in rows))
for step, n in keys:
    cells, stored = [], ""
    for l in labels:
        m = [r for r in rows if r[0] == l and r[2] == step and int(r[1]) == n]
        if m:
            stored = m[0][5]
            cells.append(f"{float(m[0][3]):.2f} / {int(m[0][4]) / 1024:.0f}")
        else:
            cells.append("-")
    L.append(f"| {step} | {n:,} | {stored} | " + " | ".join(cells) + " |")
L.append("")
L.append("Reproduce with `bench/objects-memory.sh before=OLD_BINARY after=target/release/coffer` (env SIZES, RESTORE=1 to time restores too).")
section = "\n".join(L) + "\n"
print(section)
try:
    text = open(out).read()
except FileNotFoundError:
    text = "# Scale runs\n\nWritten by the bench scripts named in each section; not run in CI.\n"
m = re.search(r"^## Kubernetes objects: memory by object count\n.*?(?=^## |\Z)", text, flags=re.S | re.M)
if m:
    text = text[: m.start()] + section + ("\n" if text[m.end():] else "") + text[m.end():]
else:
    text = text.rstrip("\n") + "\n\n" + section
open(out, "w").write(text)
PY
