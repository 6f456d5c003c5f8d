"""Shared pieces for the gddcm Fashion-MNIST training scripts.

Data convention (all models): Fashion-MNIST 28x28 u8 gray, padded to 32x32 with
2 px of background (u8 0 -> -1.0) on every side, x = u8/127.5 - 1 in [-1, 1], 1 channel.
"""
import gzip, json, math, os, time, copy, platform

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

torch.set_num_threads(1)
try:
    torch.set_num_interop_threads(1)
except RuntimeError:
    pass

DATA_DIR = os.environ.get("FMNIST_DIR", "/usr/share/datasets/fashion-mnist")
REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
MODELS = os.path.join(REPO, "models")

DATA_DESC = {
    "dataset": "Fashion-MNIST (train split, 60000 images)",
    "padding": "28x28 -> 32x32, 2 px of background on each side, pixel value 0 (-> -1.0)",
    "range": [-1.0, 1.0],
    "pixel_map": "x = u8/127.5 - 1",
    "channels": 1,
    "size": 32,
    "layout": "NCHW",
}

UNET_KW = dict(
    sample_size=32, in_channels=1, out_channels=1,
    block_out_channels=(16, 32, 80), layers_per_block=1,
    down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
    up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
    norm_num_groups=8, flip_sin_to_cos=True, freq_shift=0,
    time_embedding_type="positional",
)


def load_idx(split):
    pre = "train" if split == "train" else "t10k"
    with gzip.open(f"{DATA_DIR}/{pre}-images-idx3-ubyte.gz") as f:
        img = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    with gzip.open(f"{DATA_DIR}/{pre}-labels-idx1-ubyte.gz") as f:
        lab = np.frombuffer(f.read(), np.uint8, offset=8)
    return img, lab


def load_padded(split):
    """Returns u8 tensor [N,1,32,32] and labels [N]."""
    img, lab = load_idx(split)
    img = np.pad(img, ((0, 0), (2, 2), (2, 2)), constant_values=0)
    return torch.from_numpy(img.copy()).unsqueeze(1), torch.from_numpy(lab.astype(np.int64))


def to_float(u8):
    return u8.float() / 127.5 - 1.0


def make_unet():
    from diffusers import UNet2DModel
    return UNet2DModel(**UNET_KW)


def count_flops(model, call):
    from torch.utils.flop_counter import FlopCounterMode
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        call()
    return fc.get_total_flops()


def unet_gflop(model):
    x = torch.randn(1, 1, 32, 32)
    return count_flops(model, lambda: model(x, torch.tensor([10.0]))) / 1e9


def nparams(model):
    return sum(p.numel() for p in model.parameters())


def hardware():
    cpu = "unknown"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "torch_threads": torch.get_num_threads(), "logical_cpus_on_machine": os.cpu_count(),
            "precision": "bf16 autocast on CPU for training (master weights f32)", "torch": torch.__version__,
            "note": "machine shared with other jobs (Rust compiles) during training"}


# ---------------------------------------------------------------- classifier
class Classifier(nn.Module):
    """Offline stand-in for Inception features. fc1 output after ReLU = 128-d features."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, padding=1)
        self.conv2 = nn.Conv2d(32, 32, 3, padding=1)
        self.conv3 = nn.Conv2d(32, 64, 3, padding=1)
        self.conv4 = nn.Conv2d(64, 64, 3, padding=1)
        self.fc1 = nn.Linear(4096, 128)
        self.fc2 = nn.Linear(128, 10)

    def features(self, x):
        x = F.relu(self.conv1(x)); x = F.relu(self.conv2(x)); x = F.max_pool2d(x, 2)
        x = F.relu(self.conv3(x)); x = F.relu(self.conv4(x)); x = F.max_pool2d(x, 2)
        return F.relu(self.fc1(x.flatten(1)))

    def forward(self, x):
        return self.fc2(self.features(x))


def load_classifier():
    from safetensors.torch import load_file
    c = Classifier()
    c.load_state_dict(load_file(os.path.join(MODELS, "classifier", "model.safetensors")))
    return c.eval()


@torch.no_grad()
def classifier_feats(clf, x, bs=500):
    feats, probs = [], []
    for i in range(0, len(x), bs):
        xb = x[i:i + bs].float().clamp(-1, 1)
        f = clf.features(xb)
        feats.append(f.double())
        probs.append(F.softmax(clf.fc2(f), dim=1).double())
    return torch.cat(feats).numpy(), torch.cat(probs).numpy()


def frechet(f1, f2):
    m1, m2 = f1.mean(0), f2.mean(0)
    c1, c2 = np.cov(f1, rowvar=False, ddof=1), np.cov(f2, rowvar=False, ddof=1)
    # tr sqrt(c1 c2) = sum sqrt(eig(s1 c2 s1)), s1 = c1^(1/2) (symmetric PSD)
    w, v = np.linalg.eigh(c1)
    s1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    ev = np.linalg.eigvalsh(s1 @ c2 @ s1)
    tr_sqrt = np.sqrt(np.clip(ev, 0, None)).sum()
    return float(((m1 - m2) ** 2).sum() + np.trace(c1) + np.trace(c2) - 2 * tr_sqrt)


_REF = None


def reference_feats(clf):
    global _REF
    if _REF is None:
        xt, _ = load_padded("test")
        _REF = classifier_feats(clf, to_float(xt))[0]
    return _REF


def sample_quality(samples):
    clf = load_classifier()
    fs, ps = classifier_feats(clf, samples)
    ref = reference_feats(clf)
    return {
        "classifier_frechet_distance": frechet(fs, ref),
        "n_samples": int(len(samples)),
        "n_reference": int(len(ref)),
        "reference": "Fashion-MNIST test split (all 10000), padded to 32x32, same classifier (models/classifier) 128-d fc1 ReLU features",
        "mean_max_softmax": float(ps.max(1).mean()),
        "predicted_class_histogram": np.bincount(ps.argmax(1), minlength=10).tolist(),
        "formula": "||m1-m2||^2 + tr(C1 + C2 - 2 (C1 C2)^(1/2)), covariances with N-1",
    }


# ---------------------------------------------------------------- images / plots
def save_grid(x, path, nrow=8, scale=2):
    from PIL import Image
    x = ((x[: nrow * nrow].float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)[:, 0].numpy()
    n, h, w = x.shape
    g = np.zeros((nrow * (h + 2) + 2, nrow * (w + 2) + 2), np.uint8) + 128
    for i in range(n):
        r, c = divmod(i, nrow)
        g[2 + r * (h + 2): 2 + r * (h + 2) + h, 2 + c * (w + 2): 2 + c * (w + 2) + w] = x[i]
    Image.fromarray(g).resize((g.shape[1] * scale, g.shape[0] * scale), Image.NEAREST).save(path)


def plot_loss(csv_path, png_path, title):
    from PIL import Image, ImageDraw
    rows = [l.strip().split(",") for l in open(csv_path).readlines()[1:]]
    if len(rows) < 2:
        return
    st = np.array([float(r[0]) for r in rows]); lo = np.array([float(r[2]) for r in rows])
    W, H, P = 640, 400, 50
    im = Image.new("RGB", (W, H), "white"); d = ImageDraw.Draw(im)
    lo_l = np.log10(np.maximum(lo, 1e-8)); ymin, ymax = lo_l.min(), lo_l.max() + 1e-9
    pts = [(P + (s - st[0]) / (st[-1] - st[0] + 1e-9) * (W - 2 * P), H - P - (y - ymin) / (ymax - ymin) * (H - 2 * P))
           for s, y in zip(st, lo_l)]
    d.rectangle([P, P, W - P, H - P], outline="black")
    d.line(pts, fill="blue", width=1)
    d.text((P, 10), f"{title}: log10(loss) vs step", fill="black")
    d.text((P, H - P + 5), f"step {int(st[0])}", fill="black"); d.text((W - P - 60, H - P + 5), f"{int(st[-1])}", fill="black")
    d.text((2, P), f"{10**ymax:.3g}", fill="black"); d.text((2, H - P - 10), f"{10**ymin:.3g}", fill="black")
    im.save(png_path)


# ---------------------------------------------------------------- training loop
class Trainer:
    """Time-budgeted Adam loop with linear warmup, late linear LR decay, EMA and CSV logging."""

    def __init__(self, model, lr, minutes, out_dir, warmup=100, ema_max=0.995, decay_start=0.6, grad_clip=1.0):
        self.model, self.lr, self.budget = model, lr, minutes * 60.0
        self.opt = torch.optim.Adam(model.parameters(), lr=lr)
        self.ema = copy.deepcopy(model).eval().requires_grad_(False)
        self.warmup, self.ema_max, self.decay_start, self.grad_clip = warmup, ema_max, decay_start, grad_clip
        os.makedirs(out_dir, exist_ok=True)
        self.csv_path = os.path.join(out_dir, "loss.csv")
        self.csv = open(self.csv_path, "w"); self.csv.write("step,elapsed_s,loss,lr\n")
        self.step, self.t0, self.acc, self.nacc, self.last_loss = 0, time.time(), 0.0, 0, float("nan")
        self.loss_hist = []

    def elapsed(self):
        return time.time() - self.t0

    def running(self):
        return self.elapsed() < self.budget

    def lr_now(self):
        frac = self.elapsed() / self.budget
        w = min(1.0, (self.step + 1) / self.warmup)
        dec = 1.0 if frac < self.decay_start else max(0.05, (1 - frac) / (1 - self.decay_start))
        return self.lr * w * dec

    def update(self, loss):
        lr = self.lr_now()
        for g in self.opt.param_groups:
            g["lr"] = lr
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if self.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        self.opt.step()
        self.step += 1
        d = min(self.ema_max, (1 + self.step) / (10 + self.step))
        with torch.no_grad():
            for pe, p in zip(self.ema.parameters(), self.model.parameters()):
                pe.lerp_(p, 1 - d)
        l = float(loss.detach())
        self.acc += l; self.nacc += 1; self.loss_hist.append(l)
        if self.step % 20 == 0:
            self.csv.write(f"{self.step},{self.elapsed():.1f},{self.acc / self.nacc:.6f},{lr:.3e}\n"); self.csv.flush()
            if self.step % 100 == 0:
                print(f"step {self.step} t={self.elapsed():.0f}s loss={self.acc / self.nacc:.5f} lr={lr:.2e}", flush=True)
            self.acc, self.nacc = 0.0, 0

    def finish(self, title):
        self.csv.close()
        wall = self.elapsed()
        plot_loss(self.csv_path, self.csv_path.replace(".csv", ".png"), title)
        tail = self.loss_hist[-200:]
        return {"steps": self.step, "wall_time_s": round(wall, 1),
                "final_loss_mean_last_200_steps": float(np.mean(tail)) if tail else None}


def save_unet(model, out_dir, meta):
    """model.save_pretrained (config.json + diffusion_pytorch_model.safetensors, f32) + gddcm.json."""
    model.save_pretrained(out_dir, safe_serialization=True)
    with open(os.path.join(out_dir, "gddcm.json"), "w") as f:
        json.dump(meta, f, indent=2)


def load_unet(name):
    from diffusers import UNet2DModel
    return UNet2DModel.from_pretrained(os.path.join(MODELS, name)).eval()
