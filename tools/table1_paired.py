#!/usr/bin/env python3
"""Paired per-image comparison of the p = 0 and p = 0.5 rows of a kept Table 1 run.

    python3 tools/table1_paired.py KEEP_DIR LIMIT [FASHION_MNIST_DIR] [--models=a,b]

For each model with both rows under KEEP_DIR (`gddcm table1 --keep`), reads the first LIMIT
reconstructions (`fmnist_t10k_NNNNN.png`) of each row and the Fashion-MNIST test originals,
computes every image's PSNR (data range 255, as `gddcm` and scikit-image), and prints the mean
PSNR of each row, the mean paired difference p0 - p0.5 with a 95% bootstrap interval over
images (10,000 resamples, fixed seed), and the share of images where p = 0 is better.
Needs numpy and Pillow (e.g. venv/bin/python).
"""
import gzip
import os
import sys

import numpy as np
from PIL import Image


def originals(folder, n):
    with gzip.open(os.path.join(folder, "t10k-images-idx3-ubyte.gz")) as f:
        raw = f.read()
    assert int.from_bytes(raw[0:4], "big") == 0x0803, "not an IDX image file"
    count, h, w = (int.from_bytes(raw[i:i + 4], "big") for i in (4, 8, 12))
    assert n <= count, f"only {count} test images"
    return np.frombuffer(raw, np.uint8, offset=16, count=n * h * w).reshape(n, h, w)


def psnr(a, b):
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


def row(keep, model, p, refs):
    d = os.path.join(keep, f"{model}-p{p}")
    out = []
    for i, ref in enumerate(refs):
        path = os.path.join(d, f"fmnist_t10k_{i:05d}.png")
        img = np.asarray(Image.open(path).convert("L"))
        assert img.shape == ref.shape, f"{path}: {img.shape} vs {ref.shape}"
        out.append(psnr(ref, img))
    return np.array(out)


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--models=")]
    only = [a.split("=", 1)[1].split(",") for a in sys.argv[1:] if a.startswith("--models=")]
    keep, limit = args[0], int(args[1])
    data = args[2] if len(args) > 2 else "/usr/share/datasets/fashion-mnist"
    models = only[0] if only else ["fmnist-edm", "fmnist-cm", "fmnist-rf", "fmnist-ddpm"]
    refs = originals(data, limit)
    rng = np.random.default_rng(0)
    # The p > 0 row is kept in the `-p0.5` folder whatever p its settings use (`gddcm table1`
    # takes a searched Algorithm-1 point there when the model ships one).
    print(f"{limit} Fashion-MNIST test images; PSNR in dB; diff = p0 - (p > 0 row) (positive: p = 0 better)")
    print("| model | PSNR p = 0 | PSNR p > 0 row | mean diff | 95% bootstrap CI | p = 0 better on |")
    print("|---|---|---|---|---|---|")
    for model in models:
        if not all(os.path.isdir(os.path.join(keep, f"{model}-p{p}")) for p in ("0", "0.5")):
            continue
        a, b = row(keep, model, "0", refs), row(keep, model, "0.5", refs)
        diff = a - b
        boots = np.array([diff[rng.integers(0, limit, limit)].mean() for _ in range(10000)])
        lo, hi = np.percentile(boots, [2.5, 97.5])
        print(f"| {model} | {a.mean():.2f} | {b.mean():.2f} | {diff.mean():+.2f} | [{lo:+.2f}, {hi:+.2f}] | {np.mean(diff > 0):.1%} |")


if __name__ == "__main__":
    main()
