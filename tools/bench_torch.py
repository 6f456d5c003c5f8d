#!/usr/bin/env python3
"""PyTorch reference for benches/unet_forward.rs: diffusers UNet2DModel, the full-size
google/ddpm-cifar10-32 config (from ../shared/fixtures/unet2d_ddpm_cifar10_32.keys.json), random
weights, CPU float32, batch 1 and 8; prints images/s (median and best of N timed runs) and the
process CPU time per forward.

    /work/venv/bin/python tools/bench_torch.py [iters] [threads (default 2)]
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
    torch.set_num_threads(int(sys.argv[2]) if len(sys.argv) > 2 else 2)
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
            c0 = time.process_time()
            for _ in range(iters):
                t0 = time.perf_counter()
                net(x, t)
                times.append(time.perf_counter() - t0)
            cpu = (time.process_time() - c0) / iters
            med, best = statistics.median(times), min(times)
            print(f"batch {b}: median {med*1e3:.1f} ms/forward, {b/med:.2f} images/s; "
                  f"best {best*1e3:.1f} ms, {b/best:.2f} images/s; cpu {cpu*1e3:.0f} ms/forward")


if __name__ == "__main__":
    main()
