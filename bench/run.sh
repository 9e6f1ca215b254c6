#!/usr/bin/env bash
# Coffer vs restic, side by side on the same data, local repositories on the same disk.
# Writes bench/RESULTS.md. Usage: bench/run.sh [WORKDIR]  (env IMAGE_MIB, TREE_FILES, TREE_MIB,
# ROUNDS: the whole sequence runs ROUNDS times on fresh repositories and copies of the same
# data, and each cell is the median, because a shared disk's speed varies from run to run)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
work=${1:-$root/bench/work}
IMAGE_MIB=${IMAGE_MIB:-2048}
TREE_FILES=${TREE_FILES:-50000}
TREE_MIB=${TREE_MIB:-1024}
ROUNDS=${ROUNDS:-3}

need=()
command -v restic >/dev/null || need+=(restic)
[ -x /usr/bin/time ] || need+=(time)
if [ ${#need[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq </dev/null && apt-get install -y -qq "${need[@]}" </dev/null >/dev/null
fi
echo "==> building coffer (release)" >&2
cargo build -q --release -j2 -p coffer
coffer=$root/target/release/coffer

rm -rf "$work" && mkdir -p "$work/pristine"
cd "$work"
echo "==> generating data (fixed seeds)" >&2
python3 "$root/bench/gen.py" image pristine/disk.img "$IMAGE_MIB"
python3 "$root/bench/gen.py" tree pristine/tree "$TREE_FILES" "$TREE_MIB"

export COFFER_PASSWORD=bench RESTIC_PASSWORD=bench COFFER_CACHE_DIR=$work/coffer-cache RESTIC_CACHE_DIR=$work/restic-cache
results=$work/results.tsv
: >"$results"
round=0

# run LABEL TOOL BYTES -- command...: wall seconds and peak RSS via GNU time.
run() {
  local label=$1 tool=$2 bytes=$3
  shift 4
  sync
  echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true
  /usr/bin/time -f "%e %M" -o "$work/time.out" "$@" >"$work/out.log" 2>"$work/err.log" || {
    echo "FAILED: $label $tool: $(tail -3 "$work/err.log")" >&2; exit 1; }
  read -r secs rss <"$work/time.out"
  local repo_bytes
  repo_bytes=$(du -sb "$work/$tool-repo" | cut -f1)
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$label" "$tool" "$secs" "$rss" "$bytes" "$repo_bytes" "$round" >>"$results"
  echo "[round $round] $label / $tool: ${secs}s, ${rss} KiB peak, repo $repo_bytes bytes" >&2
}

one_round() {
rm -rf disk.img tree coffer-repo restic-repo coffer-cache restic-cache restore-c restore-r
cp --sparse=never pristine/disk.img disk.img
cp -a pristine/tree tree
"$coffer" --repo "$work/coffer-repo" repo init >/dev/null
restic init --repo "$work/restic-repo" >/dev/null 2>&1
img_bytes=$(stat -c %s disk.img)
tree_bytes=$(du -sb tree | cut -f1)
run "image: first backup" coffer "$img_bytes" -- "$coffer" --repo "$work/coffer-repo" volume backup disk.img --json
run "image: first backup" restic "$img_bytes" -- restic --repo "$work/restic-repo" backup disk.img
run "image: unchanged re-backup" coffer "$img_bytes" -- "$coffer" --repo "$work/coffer-repo" volume backup disk.img --parent auto --json
run "image: unchanged re-backup" restic "$img_bytes" -- restic --repo "$work/restic-repo" backup disk.img
python3 "$root/bench/gen.py" mutate-image disk.img ranges.json
run "image: backup after 2% mutation" coffer "$img_bytes" -- "$coffer" --repo "$work/coffer-repo" volume backup disk.img --parent auto --json
run "image: backup after 2% mutation" restic "$img_bytes" -- restic --repo "$work/restic-repo" backup disk.img
python3 "$root/bench/gen.py" mutate-image disk.img ranges.json
run "image: backup after 2% mutation, --changed-ranges" coffer "$img_bytes" -- "$coffer" --repo "$work/coffer-repo" volume backup disk.img --parent auto --changed-ranges ranges.json --json
run "image: backup after 2% mutation (same data, restic)" restic "$img_bytes" -- restic --repo "$work/restic-repo" backup disk.img
rm -rf restore-c restore-r && mkdir restore-c restore-r
# Restores are timed until the data is on disk: each tool's command is followed by sync
# (coffer syncs what it restores itself; restic leaves it in the page cache).
run "image: full restore" coffer "$img_bytes" -- sh -c '"$0" --repo "$1/coffer-repo" volume restore latest --target restore-c/disk.img --json && sync' "$coffer" "$work"
run "image: full restore" restic "$img_bytes" -- sh -c 'restic --repo "$1/restic-repo" restore latest --target restore-r && sync' restic "$work"
cmp disk.img restore-c/disk.img
cmp disk.img "$(find restore-r -name disk.img -type f | head -1)"
echo "image restores verified (both tools)" >&2

run "tree: first backup" coffer "$tree_bytes" -- "$coffer" --repo "$work/coffer-repo" volume backup tree --json
run "tree: first backup" restic "$tree_bytes" -- restic --repo "$work/restic-repo" backup tree
run "tree: unchanged re-backup" coffer "$tree_bytes" -- "$coffer" --repo "$work/coffer-repo" volume backup tree --parent auto --json
run "tree: unchanged re-backup" restic "$tree_bytes" -- restic --repo "$work/restic-repo" backup tree
python3 "$root/bench/gen.py" mutate-tree tree
run "tree: backup after 1% mutation" coffer "$tree_bytes" -- "$coffer" --repo "$work/coffer-repo" volume backup tree --parent auto --json
run "tree: backup after 1% mutation" restic "$tree_bytes" -- restic --repo "$work/restic-repo" backup tree
rm -rf restore-c restore-r && mkdir restore-c restore-r
run "tree: full restore" coffer "$tree_bytes" -- sh -c '"$0" --repo "$1/coffer-repo" volume restore latest --target restore-c/tree --json && sync' "$coffer" "$work"
run "tree: full restore" restic "$tree_bytes" -- sh -c 'restic --repo "$1/restic-repo" restore latest --path "$1/tree" --target restore-r && sync' restic "$work"
diff -r tree restore-c/tree >/dev/null && echo "coffer tree restore verified" >&2

}

for round in $(seq 1 "$ROUNDS"); do
  one_round
done

python3 - "$results" "$root/bench/RESULTS.md" "$(nproc)" "$(restic version | head -1)" "$IMAGE_MIB" "$TREE_FILES" "$TREE_MIB" <<'PY'
import sys, datetime, platform
res, out, cores, restic, img, files, tmib = sys.argv[1:8]
import statistics
rows = [l.rstrip("\n").split("\t") for l in open(res) if l.strip()]
samples = {}
order = []
for label, tool, secs, rss, nbytes, repo, rnd in rows:
    if label.endswith("(same data, restic)"):
        label = label.replace(" (same data, restic)", ", --changed-ranges")
    if label not in samples:
        order.append(label); samples[label] = {}
    samples[label].setdefault(tool, []).append((float(secs), int(rss), int(nbytes), int(repo)))
rounds = max(len(v) for d in samples.values() for v in d.values())
by = {label: {tool: (statistics.median(s[0] for s in v), int(statistics.median(s[1] for s in v)), v[-1][2], v[-1][3])
              for tool, v in d.items()} for label, d in samples.items()}
L = []
L.append("# Benchmark: coffer vs restic\n")
L.append(f"Run {datetime.datetime.utcnow():%Y-%m-%d %H:%M} UTC on {platform.machine()} with {cores} cores; {restic}.")
L.append(f"Data (fixed seeds, bench/gen.py): a {img} MiB raw image (4 MiB runs: ~40% zeros, ~30% random, ~30% text) and a tree of {files} files (~{tmib} MiB).")
L.append(f"Both tools back up to local repositories on the same disk; page cache dropped before each run; restores are timed until their data is on disk (each command followed by sync). Each cell is the median of {rounds} rounds (fresh repositories, the same data). For the changed-ranges row restic backs up the same mutated image without change information (it has none).\n")
L.append("| step | coffer s | restic s | speed-up | coffer MiB/s | restic MiB/s | coffer peak RSS MiB | restic peak RSS MiB | coffer repo MiB | restic repo MiB |")
L.append("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
for label in order:
    c, r = by[label].get("coffer"), by[label].get("restic")
    if not c or not r: continue
    mib = c[2] / 2**20
    L.append(f"| {label} | {c[0]:.2f} | {r[0]:.2f} | {r[0]/max(c[0],0.01):.1f}x | {mib/max(c[0],0.01):.0f} | {mib/max(r[0],0.01):.0f} | {c[1]/1024:.0f} | {r[1]/1024:.0f} | {c[3]/2**20:.0f} | {r[3]/2**20:.0f} |")
L.append("\nRepository sizes are cumulative (after each step). Reproduce with `bench/run.sh`.")
open(out, "w").write("\n".join(L) + "\n")
print("\n".join(L))
PY
