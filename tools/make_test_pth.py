#!/usr/bin/env python3
"""Writes the small PyTorch pickles used by tests/nn_loaders.rs (run once; outputs committed):

- tests/data/rf_like_checkpoint.pth: the container layout of a RectifiedFlow checkpoint
  (utils.save_checkpoint: dict(optimizer, model, ema, step)) with a few tensors: `model` holds
  `module.`-prefixed keys, `ema.shadow_params` the same tensors by position, the optimizer an
  Adam-like state. One tensor is a view with a storage offset, one is float16, one float64.
- tests/data/state_dict.bin: a plain state dict (what diffusers' `.bin` files are).

    venv/bin/python tools/make_test_pth.py
"""
import os

import torch

here = os.path.dirname(os.path.abspath(__file__))
out = os.path.join(here, "..", "tests", "data")
os.makedirs(out, exist_ok=True)

g = torch.Generator().manual_seed(7)
big = torch.randn(10, 4, generator=g)
params = {
    "all_modules.0.weight": torch.randn(3, 2, generator=g),
    "all_modules.0.bias": big[6],  # a view: storage offset 24 floats, storage of 40
    "all_modules.1.W": torch.randn(2, 2, 1, 1, generator=g).half(),
    "all_modules.1.b": torch.randn(5, generator=g, dtype=torch.float64),
}
names = list(params)
ckpt = {
    "optimizer": {
        "state": {i: {"step": torch.tensor(3.0), "exp_avg": torch.zeros_like(p), "exp_avg_sq": torch.ones_like(p)}
                  for i, p in enumerate(params.values())},
        "param_groups": [{"lr": 2e-4, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0,
                          "amsgrad": False, "params": list(range(len(names)))}],
    },
    "model": {"module." + k: v for k, v in params.items()},
    "ema": {"decay": 0.999999, "num_updates": 12345, "shadow_params": [params[k] for k in names]},
    "step": 42,
}
torch.save(ckpt, os.path.join(out, "rf_like_checkpoint.pth"))
torch.save({k: v.clone() for k, v in params.items()}, os.path.join(out, "state_dict.bin"))
print("wrote", out)
