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

python3 "$root/bench/report.py" "$results" "$root/bench/RESULTS.md" "$(nproc)" "$(restic version | head -1)" "$IMAGE_MIB" "$TREE_FILES" "$TREE_MIB"
