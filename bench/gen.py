#!/usr/bin/env python3
"""Benchmark data from a fixed seed.

gen.py image PATH SIZE_MIB        a raw image: 4 MiB runs, ~40% zeros, ~30% random, ~30% text
gen.py tree DIR FILES TOTAL_MIB   small files of random and text content
gen.py mutate-image PATH RANGES   rewrites 64 KiB inside 2% of the 1 MiB blocks; writes RANGES json
gen.py mutate-tree DIR            rewrites 1% of the files
"""
import json
import os
import random
import sys

MiB = 1 << 20
TEXT = b"".join(b"%08d the quick brown fox jumps over the lazy dog; status=ok\n" % i for i in range(80000))


def text_bytes(rnd, n):
    start = rnd.randrange(0, len(TEXT) - n) if n < len(TEXT) else 0
    return (TEXT[start:] + TEXT)[:n]


def image(path, size_mib):
    rnd = random.Random(20261125)
    runs = size_mib // 4
    kinds = ["zero"] * int(runs * 0.4) + ["random"] * int(runs * 0.3)
    kinds += ["text"] * (runs - len(kinds))
    rnd.shuffle(kinds)
    with open(path, "wb") as f:
        f.truncate(size_mib * MiB)
        for i, k in enumerate(kinds):
            if k == "zero":
                continue
            f.seek(i * 4 * MiB)
            f.write(rnd.randbytes(4 * MiB) if k == "random" else text_bytes(rnd, 4 * MiB))


def tree(root, files, total_mib):
    rnd = random.Random(7)
    avg = total_mib * MiB // files
    for i in range(files):
        d = os.path.join(root, "d%03d" % (i // 500), "s%02d" % (i % 500 // 50))
        if i % 50 == 0:
            os.makedirs(d, exist_ok=True)
        n = max(1, int(rnd.expovariate(1 / avg)))
        data = rnd.randbytes(n) if rnd.random() < 0.5 else text_bytes(rnd, n)
        with open(os.path.join(d, "f%05d.dat" % i), "wb") as f:
            f.write(data)


def mutate_image(path, ranges_path):
    rnd = random.Random(99)
    size = os.path.getsize(path)
    blocks = size // MiB
    chosen = sorted(rnd.sample(range(blocks), max(1, blocks * 2 // 100)))
    ranges = []
    with open(path, "r+b") as f:
        for b in chosen:
            off = b * MiB + rnd.randrange(0, MiB - 65536, 4096)
            f.seek(off)
            f.write(rnd.randbytes(65536))
            ranges.append({"offset": off, "length": 65536})
    with open(ranges_path, "w") as f:
        json.dump(ranges, f)


def mutate_tree(root):
    rnd = random.Random(5)
    paths = sorted(os.path.join(d, n) for d, _, ns in os.walk(root) for n in ns)
    for p in rnd.sample(paths, max(1, len(paths) // 100)):
        with open(p, "r+b") as f:
            f.write(rnd.randbytes(64))


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "image":
        image(sys.argv[2], int(sys.argv[3]))
    elif cmd == "tree":
        tree(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    elif cmd == "mutate-image":
        mutate_image(sys.argv[2], sys.argv[3])
    elif cmd == "mutate-tree":
        mutate_tree(sys.argv[2])
    else:
        sys.exit(__doc__)
