#!/usr/bin/env python3
"""Renders bench/RESULTS.md from bench/run.sh's per-round samples (a TSV: label, tool,
seconds, peak RSS KiB, bytes processed, repository bytes, round), so a run's table can be
rendered again without rerunning it.

report.py RESULTS_TSV OUT_MD CORES RESTIC_VERSION IMAGE_MIB TREE_FILES TREE_MIB
"""
import datetime, os, platform, statistics, sys
res, out, cores, restic, img, files, tmib = sys.argv[1:8]
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
by = {label: {tool: (statistics.median(s[0] for s in v), int(statistics.median(s[1] for s in v)), v[-1][2], statistics.median(s[3] for s in v), min(s[3] for s in v), max(s[3] for s in v))
              for tool, v in d.items()} for label, d in samples.items()}
L = []
L.append("# Benchmark: coffer vs restic\n")
L.append(f"Run {datetime.datetime.fromtimestamp(os.path.getmtime(res), datetime.timezone.utc):%Y-%m-%d %H:%M} UTC on {platform.machine()} with {cores} cores; {restic}.")
L.append(f"Data (fixed seeds, bench/gen.py): a {img} MiB raw image (4 MiB runs: ~40% zeros, ~30% random, ~30% text) and a tree of {files} files (~{tmib} MiB).")
L.append(f"Both tools back up to local repositories on the same disk; page cache dropped before each run; restores are timed until their data is on disk (each command followed by sync). Each cell is the median of {rounds} rounds (fresh repositories, the same data). For the changed-ranges row restic backs up the same mutated image without change information (it has none).\n")
L.append("| step | coffer s | restic s | speed-up | coffer MiB/s | restic MiB/s | coffer peak RSS MiB | restic peak RSS MiB | coffer repo MiB | restic repo MiB |")
L.append("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
def spread(t):
    lo, hi = round(t[4] / 2**20), round(t[5] / 2**20)
    return f" ({lo}-{hi})" if rounds > 1 and lo != hi else ""

for label in order:
    c, r = by[label].get("coffer"), by[label].get("restic")
    if not c or not r: continue
    mib = c[2] / 2**20
    L.append(f"| {label} | {c[0]:.2f} | {r[0]:.2f} | {r[0]/max(c[0],0.01):.1f}x | {mib/max(c[0],0.01):.0f} | {mib/max(r[0],0.01):.0f} | {c[1]/1024:.0f} | {r[1]/1024:.0f} | {c[3]/2**20:.0f}{spread(c)} | {r[3]/2**20:.0f}{spread(r)} |")
L.append("\nRepository sizes are cumulative (after each step), medians of the rounds; restic's varies from round to round (each restic repository draws its own random chunking polynomial), so its range over the rounds follows in parentheses. Coffer's chunking is deterministic (fixed blocks for images, a fixed gear table for files), so its sizes do not vary beyond metadata. Reproduce with `bench/run.sh`; `bench/report.py` renders this table from the samples.")
# Sections other scripts keep in the same file (## headings, e.g. bench/objects.sh's) stay.
kept = ""
if os.path.exists(out):
    previous = open(out).read()
    at = previous.find("\n## ")
    if at >= 0:
        kept = "\n" + previous[at + 1:]
open(out, "w").write("\n".join(L) + "\n" + kept)
print("\n".join(L))
