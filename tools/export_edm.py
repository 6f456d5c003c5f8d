#!/usr/bin/env python3
"""Export an NVlabs/EDM network pickle to safetensors + a JSON config for gddcm.

Run once, with the EDM repository (https://github.com/NVlabs/edm) on PYTHONPATH, because the
pickle refers to its classes (`torch_utils.persistence`, `training.networks`):

    PYTHONPATH=/path/to/edm python tools/export_edm.py \
        edm-cifar10-32x32-uncond-vp.pkl out/edm-cifar10-uncond-vp

This writes `out/edm-cifar10-uncond-vp.safetensors` (the `state_dict()` of `data['ema']`, an
EDMPrecond/VPPrecond/VEPrecond module, so every key starts with `model.`, float32, buffers
included) and `out/edm-cifar10-uncond-vp.json` (SongUNet constructor arguments, read by
`gddcm::nn::SongUNetConfig::from_edm_file`, plus the preconditioner's class and arguments under
`"precond"`). Load in Rust with `SongUNet::load_edm(json, safetensors)`.
See fixtures/NETWORKS.md section 2 for the conventions.
"""
import json
import pickle
import sys

import torch


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    src, out = sys.argv[1], sys.argv[2]
    with open(src, "rb") as f:
        data = pickle.load(f)
    net = data["ema"]  # EDM generate.py:266
    model = net.model
    if type(model).__name__ != "SongUNet":
        sys.exit(f"only SongUNet networks are supported, found {type(model).__name__}")

    # SongUNet constructor arguments: what the persistence wrapper recorded, plus the
    # resolution/channels EDMPrecond passes positionally.
    cfg = dict(getattr(model, "init_kwargs", {}))
    cfg.update(
        img_resolution=int(net.img_resolution),
        in_channels=int(net.img_channels),
        out_channels=int(net.img_channels),
        label_dim=int(net.label_dim),
        model_type="SongUNet",
    )
    cfg.pop("dropout", None)
    cfg.pop("label_dropout", None)
    precond = {"class": type(net).__name__}
    for k, v in dict(getattr(net, "init_kwargs", {})).items():
        if k in ("img_resolution", "img_channels", "label_dim", "use_fp16", "model_type"):
            continue
        if isinstance(v, (int, float, str, bool)):
            precond[k] = v
    for k in ("sigma_data", "sigma_min", "sigma_max", "beta_d", "beta_min", "M", "epsilon_t"):
        if hasattr(net, k) and k not in precond:
            precond[k] = float(getattr(net, k))
    cfg["precond"] = precond

    sd = {k: v.detach().float().contiguous().cpu() for k, v in net.state_dict().items()}
    try:
        from safetensors.torch import save_file

        save_file(sd, out + ".safetensors")
        wfile = out + ".safetensors"
    except ImportError:
        torch.save(sd, out + ".pth")
        wfile = out + ".pth"
    with open(out + ".json", "w") as f:
        json.dump(cfg, f, indent=2, default=lambda o: list(o) if hasattr(o, "__iter__") else str(o))
    n = sum(v.numel() for k, v in sd.items())
    print(f"wrote {wfile} ({len(sd)} tensors, {n} values) and {out}.json")


if __name__ == "__main__":
    main()
