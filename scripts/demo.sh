#!/usr/bin/env bash
# The main job on the embedded default: a local repository, a generated disk image and a
# file tree; back up, change, back up again with changed ranges, restore, verify, report.
# Usage: scripts/demo.sh [WORKDIR]   (default: a new temporary directory)
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-$(mktemp -d /tmp/coffer-demo.XXXXXX)}
mkdir -p "$work"
echo "==> building coffer" >&2
cargo build -q -j2 -p coffer
coffer=$(pwd)/target/debug/coffer

export COFFER_REPO=$work/repo COFFER_PASSWORD=${COFFER_PASSWORD:-demo-password} COFFER_CACHE_DIR=$work/cache
rm -rf "$COFFER_REPO" "$COFFER_CACHE_DIR" "$work/restored.img" "$work/restored-tree"
field() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }

echo "==> generating a 256 MiB disk image (zero runs, random data, text) and a file tree"
python3 - "$work" <<'PY'
import os, random, sys
work = sys.argv[1]
rnd = random.Random(42)
MiB = 1 << 20
with open(os.path.join(work, "disk.img"), "wb") as f:
    f.truncate(256 * MiB)
    for i in range(64):  # 4 MiB runs
        kind = rnd.random()
        f.seek(i * 4 * MiB)
        if kind < 0.4:
            continue  # zeros (a hole)
        elif kind < 0.7:
            f.write(rnd.randbytes(4 * MiB))
        else:
            line = b"log line %d: everything is fine\n"
            f.write(b"".join(line % j for j in range(4 * MiB // 30))[: 4 * MiB])
tree = os.path.join(work, "tree")
for d in range(20):
    os.makedirs(os.path.join(tree, f"dir{d:02}"), exist_ok=True)
    for n in range(50):
        with open(os.path.join(tree, f"dir{d:02}", f"file{n:03}.txt"), "wb") as f:
            f.write(rnd.randbytes(rnd.randint(100, 40000)))
PY

echo "==> coffer repo init"
"$coffer" repo init
echo "==> first backups"
b1=$("$coffer" volume backup "$work/disk.img" --json)
echo "image: $(echo "$b1" | field "['bytes_total']") bytes, read $(echo "$b1" | field "['bytes_read']"), stored $(echo "$b1" | field "['bytes_new']") in $(echo "$b1" | field "['duration_s']") s"
t1=$("$coffer" volume backup "$work/tree" --json)
echo "tree:  $(echo "$t1" | field "['files']") files, $(echo "$t1" | field "['bytes_total']") bytes, stored $(echo "$t1" | field "['bytes_new']")"

echo "==> changing 8 blocks of the image and 10 files"
python3 - "$work" <<'PY'
import json, os, random, sys
work = sys.argv[1]
rnd = random.Random(7)
ranges = []
with open(os.path.join(work, "disk.img"), "r+b") as f:
    for _ in range(8):
        off = rnd.randrange(0, 256 * (1 << 20) - 65536) & ~4095
        f.seek(off)
        f.write(rnd.randbytes(65536))
        ranges.append({"offset": off, "length": 65536})
json.dump(ranges, open(os.path.join(work, "changed.json"), "w"))
for d in range(10):
    with open(os.path.join(work, "tree", f"dir{d:02}", "file000.txt"), "ab") as f:
        f.write(b"changed\n")
PY
echo "==> incremental backups"
b2=$("$coffer" volume backup "$work/disk.img" --parent auto --changed-ranges "$work/changed.json" --json)
echo "image: read $(echo "$b2" | field "['bytes_read']") of $(echo "$b2" | field "['bytes_total']") bytes (changed ranges), stored $(echo "$b2" | field "['bytes_new']") in $(echo "$b2" | field "['duration_s']") s"
t2=$("$coffer" volume backup "$work/tree" --parent auto --json)
echo "tree:  read $(echo "$t2" | field "['bytes_read']") bytes, $(echo "$t2" | field "['files_unchanged']") files unchanged, stored $(echo "$t2" | field "['bytes_new']")"

echo "==> restore and verify"
"$coffer" volume restore "$(echo "$b2" | field "['snapshot_id']")" --target "$work/restored.img" >/dev/null
cmp "$work/disk.img" "$work/restored.img" && echo "image restored byte for byte ($(du -h "$work/restored.img" | cut -f1) allocated: sparse)"
"$coffer" volume restore "$(echo "$t2" | field "['snapshot_id']")" --target "$work/restored-tree" >/dev/null
diff -r "$work/tree" "$work/restored-tree" && echo "tree restored identically"
"$coffer" check --read-data
"$coffer" snapshots
"$coffer" stats
echo "==> done; everything is in $work"
