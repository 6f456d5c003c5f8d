#!/usr/bin/env python3
"""PyTorch reference for benches/unet_forward.rs: diffusers UNet2DModel, the full-size
google/ddpm-cifar10-32 config (from tests/fixtures/unet2d_ddpm_cifar10_32.keys.json), random
weights, CPU float32, batch 1 and 8; prints images/s (median and best of N timed runs) and the
process CPU time per forward.

    venv/bin/python tools/bench_torch.py [iters] [threads (default 2)] [batches (default 1,8)] [bundled]

With `bundled`, the bundled Fashion-MNIST network models/edm (trained weights) instead.
With GDDCM_BENCH_DEVICE=cuda (as benches/unet_forward.rs), on the GPU: float32 with TF32 off
(cuDNN autotuning on), then again with TF32 allowed, each forward timed to a synchronize.
"""
import json
import os
import statistics
import sys
import time

import torch

here = os.path.dirname(os.path.abspath(__file__))
manifest = os.path.join(here, "..", "tests", "fixtures", "unet2d_ddpm_cifar10_32.keys.json")


def time_forwards(net, x, t, iters, sync=lambda: None):
    """Times `iters` forwards `net(x, t)` (after the caller's warm-up); prints the median and best
    wall time and the process CPU time per forward, in the format of benches/unet_forward.rs."""
    b = x.shape[0]
    times = []
    c0 = time.process_time()
    for _ in range(iters):
        t0 = time.perf_counter()
        net(x, t)
        sync()
        times.append(time.perf_counter() - t0)
    cpu = (time.process_time() - c0) / iters
    med, best = statistics.median(times), min(times)
    print(f"batch {b}: median {med*1e3:.1f} ms/forward, {b/med:.2f} images/s; "
          f"best {best*1e3:.1f} ms, {b/best:.2f} images/s; cpu {cpu*1e3:.0f} ms/forward")


def main():
    from diffusers import UNet2DModel

    iters = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    torch.set_num_threads(int(sys.argv[2]) if len(sys.argv) > 2 else 2)
    batches = [int(b) for b in sys.argv[3].split(",")] if len(sys.argv) > 3 else [1, 8]
    if len(sys.argv) > 4 and sys.argv[4] == "bundled":
        net, name, channels, t_label = UNet2DModel.from_pretrained(os.path.join(here, "..", "models", "edm")).eval(), "fmnist-edm bundled", 1, 0.3
    else:
        cfg = json.load(open(manifest))["config_assumed"]
        torch.manual_seed(0)
        net, name, channels, t_label = UNet2DModel(**cfg).eval(), "ddpm-cifar10-32", 3, 500.0
    device = os.environ.get("GDDCM_BENCH_DEVICE", "cpu")
    modes = [False]
    if device == "cuda":
        net = net.cuda()
        torch.backends.cudnn.benchmark = True
        modes = [False, True]
        print(f"GPU: {torch.cuda.get_device_name(0)}")
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    print(f"torch {torch.__version__} UNet2DModel {name}, device={device}, threads={torch.get_num_threads()}")
    with torch.no_grad():
        for tf32 in modes:
            torch.backends.cudnn.allow_tf32 = tf32
            torch.backends.cuda.matmul.allow_tf32 = tf32
            if device == "cuda":
                print(f"TF32 {'allowed' if tf32 else 'off'}")
            for b in batches:
                x = torch.randn(b, channels, 32, 32, device=device)
                t = torch.full((b,), t_label, device=device)
                for _ in range(3 if device == "cuda" else 1):
                    net(x, t)
                sync()
                time_forwards(net, x, t, iters, sync)


if __name__ == "__main__":
    main()
