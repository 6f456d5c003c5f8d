#!/usr/bin/env python3
"""A PyTorch EDM SongUNet, DDPM++ variant (positional noise embedding, standard encoder and
decoder, resample filter [1, 1]), written from tests/fixtures/NETWORKS.md §1-2 as the
PyTorch side of the SongUNet forward benchmark (issue 6). State-dict keys are EDM's
(`SongUNet.state_dict()`), so the fixture weights load strictly.

    venv/bin/python tools/songunet_torch.py check
        the small DDPM++ fixture: EDMPrecond D(x, sigma) against out.D (tolerance 1e-5)
    venv/bin/python tools/songunet_torch.py bench [iters] [threads] [batches]
        full-size CIFAR-10 DDPM++ (55.7M parameters) on random weights, CPU float32: ms per
        forward and process CPU time, as tools/bench_torch.py (compare with
        `GDDCM_BENCH_NET=edm-ddpmpp cargo bench --bench unet_forward`)
"""
import json
import math
import os
import sys

import torch
import torch.nn.functional as F
from torch import nn

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures")
SKIP_SCALE = math.sqrt(0.5)


def group_norm(c):
    # EDM: min(32, C/4) groups, eps 1e-6 (NETWORKS.md §1).
    return nn.GroupNorm(min(32, c // 4), c, eps=1e-6)


class Conv(nn.Module):
    """EDM's Conv2d with an optional [1, 1] resample before the convolution (NETWORKS.md §1)."""

    def __init__(self, cin, cout, k, up=False, down=False):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(cout, cin, k, k))
        self.bias = nn.Parameter(torch.zeros(cout))
        self.up, self.down = up, down
        if up or down:
            self.register_buffer("resample_filter", torch.full((1, 1, 2, 2), 0.25))

    def forward(self, x):
        if self.up:
            x = F.interpolate(x, scale_factor=2, mode="nearest")  # transposed conv with 4f = ones
        if self.down:
            x = F.avg_pool2d(x, 2)  # depthwise f = 1/4, stride 2
        return F.conv2d(x, self.weight, self.bias, padding=self.weight.shape[-1] // 2)


class Block(nn.Module):
    """EDM UNetBlock with SongUNet's settings (NETWORKS.md §1 ResBlock and attention)."""

    def __init__(self, cin, cout, emb, up=False, down=False, attn=False):
        super().__init__()
        self.norm0 = group_norm(cin)
        self.conv0 = Conv(cin, cout, 3, up, down)
        self.affine = nn.Linear(emb, cout)
        self.norm1 = group_norm(cout)
        self.conv1 = Conv(cout, cout, 3)
        self.skip = Conv(cin, cout, 1, up, down) if (cin != cout or up or down) else None
        self.attn = attn
        if attn:
            self.norm2 = group_norm(cout)
            self.qkv = Conv(cout, 3 * cout, 1)
            self.proj = Conv(cout, cout, 1)

    def forward(self, x, emb):
        h = self.conv0(F.silu(self.norm0(x)))
        h = F.silu(self.norm1(h + self.affine(emb)[:, :, None, None]))
        h = self.conv1(h)
        x = (h + (self.skip(x) if self.skip is not None else x)) * SKIP_SCALE
        if self.attn:
            n, c, hh, ww = x.shape
            # One head; qkv channels interleaved: channel 3c+j is (q, k, v)[j] channel c.
            q, k, v = self.qkv(self.norm2(x)).reshape(n, c, 3, hh * ww).unbind(2)
            w = torch.softmax(torch.einsum("ncq,nck->nqk", q, k / math.sqrt(c)), dim=2)
            a = torch.einsum("nqk,nck->ncq", w, v).reshape(n, c, hh, ww)
            x = (self.proj(a) + x) * SKIP_SCALE
        return x


class SongUNetDDPMpp(nn.Module):
    def __init__(self, img=32, channels=3, mc=128, mult=(2, 2, 2), blocks=4, attn_res=(16,), augment_dim=9):
        super().__init__()
        self.noise_ch, emb = mc, mc * 4
        if augment_dim:
            self.map_augment = nn.Linear(augment_dim, mc, bias=False)
        self.map_layer0 = nn.Linear(mc, emb)
        self.map_layer1 = nn.Linear(emb, emb)
        self.enc, self.dec = nn.ModuleDict(), nn.ModuleDict()
        cout, skips = channels, []
        for level, m in enumerate(mult):
            res = img >> level
            if level == 0:
                self.enc[f"{res}x{res}_conv"] = Conv(cout, mc, 3)
                cout = mc
            else:
                self.enc[f"{res}x{res}_down"] = Block(cout, cout, emb, down=True)
            skips.append(cout)
            for i in range(blocks):
                cin, cout = cout, mc * m
                self.enc[f"{res}x{res}_block{i}"] = Block(cin, cout, emb, attn=res in attn_res)
                skips.append(cout)
        for level in reversed(range(len(mult))):
            res = img >> level
            if level == len(mult) - 1:
                self.dec[f"{res}x{res}_in0"] = Block(cout, cout, emb, attn=True)
                self.dec[f"{res}x{res}_in1"] = Block(cout, cout, emb)
            else:
                self.dec[f"{res}x{res}_up"] = Block(cout, cout, emb, up=True)
            for i in range(blocks + 1):
                cin, cout = cout + skips.pop(), mc * mult[level]
                self.dec[f"{res}x{res}_block{i}"] = Block(cin, cout, emb, attn=(i == blocks and res in attn_res))
            if level == 0:
                self.dec[f"{res}x{res}_aux_norm"] = group_norm(cout)
                self.dec[f"{res}x{res}_aux_conv"] = Conv(cout, channels, 3)

    def forward(self, x, c_noise):
        half = self.noise_ch // 2
        freqs = (1 / 10000) ** (torch.arange(half, dtype=torch.float32) / (half - 1))
        arg = c_noise.float()[:, None] * freqs[None]
        emb = torch.cat([torch.sin(arg), torch.cos(arg)], 1)  # EDM's swap gives [sin | cos]
        emb = F.silu(self.map_layer1(F.silu(self.map_layer0(emb))))
        skips = []
        for name, m in self.enc.items():
            x = m(x) if name.endswith("_conv") else m(x, emb)
            skips.append(x)
        for name, m in self.dec.items():
            if name.endswith("_aux_norm"):
                aux = F.silu(m(x))
            elif name.endswith("_aux_conv"):
                return m(aux)
            else:
                if "_block" in name:
                    x = torch.cat([x, skips.pop()], 1)
                x = m(x, emb)
        raise RuntimeError("no aux_conv")


def edm_precond(net, x, sigma, sd=0.5):
    s = sigma.reshape(-1, 1, 1, 1)
    c_skip, c_out, c_in = sd**2 / (s**2 + sd**2), s * sd / (s**2 + sd**2).sqrt(), 1 / (sd**2 + s**2).sqrt()
    return c_skip * x + c_out * net(c_in * x, sigma.log() / 4)


def check():
    from safetensors.torch import load_file

    t = load_file(os.path.join(FIXTURES, "edm_songunet_ddpmpp_small.safetensors"))
    net = SongUNetDDPMpp(mc=32, blocks=2).eval()
    net.load_state_dict({k[2:]: v for k, v in t.items() if k.startswith("w.")}, strict=True)
    with torch.no_grad():
        d = edm_precond(net, t["in.x"], t["in.sigma"])
    err = (d - t["out.D"]).abs().max().item()
    print(f"small DDPM++ fixture: max |D - out.D| = {err:.2e} (tolerance 1e-5)")
    return err <= 1e-5


def bench(iters, threads, batches):
    from bench_torch import time_forwards

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    net = SongUNetDDPMpp().eval()
    shapes = json.load(open(os.path.join(FIXTURES, "edm_songunet_ddpmpp.full.keys.json")))
    params = sum(p.numel() for p in net.parameters())
    assert params == shapes["num_parameters"], (params, shapes["num_parameters"])
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0, 0.02)
    print(f"torch {torch.__version__} SongUNet DDPM++ (EDM CIFAR-10, {params} parameters), threads={threads}")
    with torch.no_grad():
        for b in batches:
            x, c = torch.randn(b, 3, 32, 32), torch.full((b,), -0.3)
            net(x, c)
            time_forwards(net, x, c, iters)

if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "check":
        sys.exit(0 if check() else 1)
    elif len(sys.argv) > 1 and sys.argv[1] == "bench":
        a = sys.argv[2:]
        bench(int(a[0]) if a else 5, int(a[1]) if len(a) > 1 else 2,
              [int(b) for b in a[2].split(",")] if len(a) > 2 else [1, 8])
    else:
        print(__doc__)
