"""Random-weight full-size DDPM CIFAR-10 UNet in diffusers layout (config.json +
diffusion_pytorch_model.safetensors) from the fixtures' key manifest, as benches/unet_forward.rs."""
import json, os, sys
import torch
from safetensors.torch import save_file

m = json.load(open(sys.argv[1]))
out = sys.argv[2]
os.makedirs(out, exist_ok=True)
json.dump(m["config_assumed"], open(os.path.join(out, "config.json"), "w"))
g = torch.Generator().manual_seed(0)
t = {}
for k, s in m["state_dict_shapes_modern"].items():
    t[k] = torch.ones(s) if ("norm" in k and k.endswith("weight")) else torch.randn(s, generator=g) * 0.02
save_file(t, os.path.join(out, "diffusion_pytorch_model.safetensors"))
print("wrote", out, sum(v.numel() for v in t.values()), "parameters")
