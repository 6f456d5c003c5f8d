#!/usr/bin/env python3
"""PyTorch reference for benches/unet_forward.rs: diffusers UNet2DModel, the full-size
google/ddpm-cifar10-32 config (from ../shared/fixtures/unet2d_ddpm_cifar10_32.keys.json), random
weights, CPU float32, 2 threads, batch 1 and 8; prints images/s (median of N timed runs).

    /work/venv/bin/python tools/bench_torch.py [iters]
"""
import json
import os
import statistics
import sys
import time

import torch
from diffusers import UNet2DModel

here = os.path.dirname(os.path.abspath(__file__))
manifest = os.path.join(here, "..", "..", "shared", "fixtures", "unet2d_ddpm_cifar10_32.keys.json")


def main():
    iters = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    torch.set_num_threads(2)
    cfg = json.load(open(manifest))["config_assumed"]
    torch.manual_seed(0)
    net = UNet2DModel(**cfg).eval()
    print(f"torch {torch.__version__} UNet2DModel ddpm-cifar10-32, threads={torch.get_num_threads()}")
    with torch.no_grad():
        for b in (1, 8):
            x = torch.randn(b, 3, 32, 32)
            t = torch.full((b,), 500.0)
            net(x, t)
            times = []
            for _ in range(iters):
                t0 = time.perf_counter()
                net(x, t)
                times.append(time.perf_counter() - t0)
            med = statistics.median(times)
            print(f"batch {b}: median {med*1e3:.1f} ms/forward, {b/med:.2f} images/s (min {min(times)*1e3:.1f} ms)")


if __name__ == "__main__":
    main()
