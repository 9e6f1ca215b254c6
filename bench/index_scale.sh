#!/usr/bin/env bash
# Measures the repository index at scale: synthetic index files for CHUNKS chunks (default
# 100 million), opened by a client with an empty cache. Writes bench/RESULTS-index.md.
# Needs ~15 GB of free disk in WORK for 100 million chunks.
set -euo pipefail
cd "$(dirname "$0")/.."
chunks=${1:-100000000}
work=${WORK:-/tmp/coffer-index-scale}
mkdir -p "$work"
cargo build --release -p coffer-repo --example index_scale -j2 >&2
bin=target/release/examples/index_scale
rm -rf "$work/run" && mkdir -p "$work/run"
"$bin" "$chunks" "$work/run" > "$work/first.txt"
# A second open of the same repository with another empty cache: the merge alone.
"$bin" "$chunks" "$work/run" > "$work/second.txt"
line=$(cat "$work/second.txt")
get() { echo "$line" | tr ' ' '\n' | sed -n "s/^$1=//p"; }
{
  echo "# Index at scale"
  echo
  echo "Run $(date -u '+%Y-%m-%d %H:%M UTC') on $(uname -m) with $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB RAM."
  echo "Synthetic index files (200,000 entries each, 30 chunks to a pack) for $(get chunks) chunks; a client"
  echo "with an empty cache opens the repository, merging them into its memory-mapped table."
  echo
  echo "| chunks | open (merge) s | anonymous memory growth MiB | peak RSS MiB | table MiB (mapped, on disk) | lookups/s |"
  echo "| ---: | ---: | ---: | ---: | ---: | ---: |"
  echo "| $(get chunks) | $(get open_s) | $(get anon_growth_mib) | $(get peak_rss_mib) | $(get table_mib) | $(get lookups_per_s) |"
  echo
  echo "Anonymous memory is what the index costs the process; the table is a file in the local"
  echo "cache, read through the page cache. Reproduce with \`bench/index_scale.sh [CHUNKS]\`."
} > bench/RESULTS-index.md
cat bench/RESULTS-index.md
rm -rf "$work/run"
