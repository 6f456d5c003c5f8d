"""Shared pieces for the gddcm Fashion-MNIST training scripts.

Data convention (all models): Fashion-MNIST 28x28 u8 gray, padded to 32x32 with
2 px of background (u8 0 -> -1.0) on every side, x = u8/127.5 - 1 in [-1, 1], 1 channel.
"""
import gzip, hashlib, json, math, os, signal, socket, sys, time, copy, platform

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
# Where finished models are written and read (the classifier for sample quality, the EDM teacher for CM).
# Default: the repository's models/. Override with GDDCM_TRAIN_OUT or train.py --out-root.
MODELS = os.path.abspath(os.environ.get("GDDCM_TRAIN_OUT", os.path.join(REPO, "models")))
# One resumable checkpoint per model lives here (<name>.safetensors + <name>.json), see Trainer.
CKPT_DIR = os.path.abspath(os.environ.get("GDDCM_TRAIN_CKPT", os.path.join(REPO, "tools", "train", "checkpoints")))
DEV = torch.device("cpu")     # train.py --device cuda moves training there (random numbers stay on the CPU)
EXIT_STOPPED = 75             # exit status of a run stopped part way (checkpoint written)


def set_paths(out_root=None, ckpt_dir=None, device=None):
    global MODELS, CKPT_DIR, DEV
    if out_root:
        MODELS = os.path.abspath(out_root)
    if ckpt_dir:
        CKPT_DIR = os.path.abspath(ckpt_dir)
    if device:
        DEV = torch.device(device)


def models_dir():
    return MODELS


def autocast():
    return torch.autocast(device_type=DEV.type, dtype=torch.bfloat16)

DATA_DESC = {
    "dataset": "Fashion-MNIST (train split, 60000 images)",
    "padding": "28x28 -> 32x32, 2 px of background on each side, pixel value 0 (-> -1.0)",
    "range": [-1.0, 1.0],
    "pixel_map": "x = u8/127.5 - 1",
    "channels": 1,
    "size": 32,
    "layout": "NCHW",
}

# v2 network (issue 18): 4 levels 32x32 -> 4x4, widths doubled from v1's (16, 32, 80), attention at 8x8
# (AttnDownBlock2D / AttnUpBlock2D) and in the mid block at 4x4, heads of dim 32. 4.33M params, 0.760 GFLOP
# per 1x1x32x32 forward (3.2x v1's 0.2406). v1 was (16, 32, 80), 3 levels, head dim 8 (see git history).
UNET_KW = dict(
    sample_size=32, in_channels=1, out_channels=1,
    block_out_channels=(32, 64, 128, 128), layers_per_block=1,
    down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
    attention_head_dim=32, norm_num_groups=8, flip_sin_to_cos=True, freq_shift=0,
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
    return u8.to(DEV).float() / 127.5 - 1.0


# ---------------------------------------------------------------- reproducible randomness
def seed_of(*parts):
    """A 63-bit seed derived from (seed, stream, index, ...): every random draw of a training step comes from
    a generator seeded with seed_of(seed, stream, step), so a resumed run draws exactly what an uninterrupted
    one would, whatever happened before."""
    h = hashlib.sha256("/".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(h[:8], "little") & ((1 << 63) - 1)


def gen(*parts):
    return torch.Generator().manual_seed(seed_of(*parts))


def randn(g, *shape):
    """Normal noise drawn on the CPU (same numbers on every device), then moved to DEV."""
    return torch.randn(*shape, generator=g).to(DEV)


def rand(g, *shape):
    return torch.rand(*shape, generator=g).to(DEV)


class EpochOrder:
    """Batch b of a run = rows perm_e[i*bs:(i+1)*bs] with e = b // (n // bs), i = b % (n // bs) and perm_e
    a permutation seeded by (seed, 'order', e): a pure function of (seed, step), no iterator state to save."""

    def __init__(self, n, bs, seed, stream="order"):
        self.n, self.bs, self.seed, self.stream = n, min(bs, n), seed, stream
        self.per_epoch = self.n // self.bs
        self._e, self._perm = None, None

    def __call__(self, step):
        e, i = divmod(step, self.per_epoch)
        if e != self._e:
            self._e, self._perm = e, torch.randperm(self.n, generator=gen(self.seed, self.stream, e))
        return self._perm[i * self.bs:(i + 1) * self.bs]


def make_unet(seed=0):
    from diffusers import UNet2DModel
    torch.manual_seed(seed)  # initial weights are a function of the seed
    return UNet2DModel(**UNET_KW).to(DEV)


def count_flops(model, call):
    from torch.utils.flop_counter import FlopCounterMode
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        call()
    return fc.get_total_flops()


def unet_gflop(model):
    p = next(model.parameters())
    x = torch.randn(1, 1, 32, 32, device=p.device)
    return count_flops(model, lambda: model(x, torch.tensor([10.0], device=p.device))) / 1e9


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
    hw = {"cpu": cpu, "torch_threads": torch.get_num_threads(), "logical_cpus_on_machine": os.cpu_count(),
          "precision": f"bf16 autocast on {DEV.type} for training (master weights f32)", "torch": torch.__version__,
          "device": DEV.type, "nice": os.nice(0), "host": socket.gethostname()}
    if DEV.type == "cuda":
        hw["gpu"] = torch.cuda.get_device_name(DEV)
    else:
        hw["note"] = "CPU shared with other jobs (Rust compiles) during training"
    return hw


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


def classifier_path():
    return os.path.join(MODELS, "classifier", "model.safetensors")


def load_classifier(path=None):
    from safetensors.torch import load_file
    c = Classifier()
    c.load_state_dict(load_file(path or classifier_path()))
    return c.eval()  # on the CPU: the quality metric is computed there, whatever trained the model


def file_sha(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()[:16]


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


_REFS = {}


def reference_feats(clf, key=None):
    """Features of all 10 000 test images, cached per classifier file."""
    key = key or classifier_path()
    if key not in _REFS:
        xt, _ = load_padded("test")
        _REFS[key] = classifier_feats(clf, xt.float() / 127.5 - 1.0)[0]
    return _REFS[key]


def _quality(samples, path):
    clf = load_classifier(path)
    fs, ps = classifier_feats(clf, samples)
    ref = reference_feats(clf, path)
    j = torch.randperm(len(ref), generator=torch.Generator().manual_seed(1))[:len(fs)].numpy()
    return {
        "classifier_frechet_distance": frechet(fs, ref),
        "classifier": os.path.relpath(path, REPO), "classifier_sha256_16": file_sha(path),
        "floor_fd_of_real_test_subset": frechet(ref[j], ref),
        "floor_note": "FD of a random subset of the test images (same size as the samples, seed 1) against all of them: "
                      "the finite-sample floor of this classifier's FD; it scales with the size of its features",
        "n_samples": int(len(samples)),
        "n_reference": int(len(ref)),
        "reference": "Fashion-MNIST test split (all 10000), padded to 32x32, 128-d fc1 ReLU features of the classifier above",
        "mean_max_softmax": float(ps.max(1).mean()),
        "predicted_class_histogram": np.bincount(ps.argmax(1), minlength=10).tolist(),
        "formula": "||m1-m2||^2 + tr(C1 + C2 - 2 (C1 C2)^(1/2)), covariances with N-1",
    }


def sample_quality(samples):
    """Classifier FD with <out>/classifier; also with the repository's models/classifier when that is another file
    (the issue-18 targets were set on the v1 classifier's scale)."""
    primary = classifier_path()
    q = _quality(samples, primary)
    repo_clf = os.path.join(REPO, "models", "classifier", "model.safetensors")
    if os.path.exists(repo_clf) and file_sha(repo_clf) != q["classifier_sha256_16"]:
        q["other_classifiers"] = {"models/classifier": _quality(samples, repo_clf)}
    return q


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
def recipe_id(recipe):
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]


def recipe_diff(old, new):
    """{key: (old value, new value)} for every recipe entry that differs."""
    return {k: (old.get(k), new.get(k)) for k in set(old) | set(new) if old.get(k) != new.get(k)}


def atomic_write(path, write):
    """write(tmp_path) then fsync + rename: a reader (or a resume after a kill) sees the old file or the new one."""
    tmp = path + ".tmp"
    write(tmp)
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def write_json(path, obj):
    def w(tmp):
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=1)
    atomic_write(path, w)


def stage_done(name, rid):
    """A stage is done when its finished model folder records the same recipe id."""
    for fn in ("gddcm.json", "config.json"):
        p = os.path.join(MODELS, name, fn)
        if os.path.exists(p):
            try:
                if json.load(open(p)).get("recipe_id") == rid:
                    return True
            except (OSError, ValueError):
                pass
    return False


class Stopped(Exception):
    pass


_STOP = {"signal": None}


def _on_signal(signum, frame):
    _STOP["signal"] = signum


class Trainer:
    """Step-based, resumable Adam loop: linear warmup, constant LR, linear decay over the last (1-decay_start)
    of the steps to lr_floor*lr, gradient clipping, EMA with an EDM-style half-life ramp, loss log.

    Everything random in a step must come from self.g() (seeded by (seed, name, step)) and the data order from
    EpochOrder(seed): the run is then a pure function of (recipe, seed), and a resume from the checkpoint
    continues exactly where the stopped run was.

    The checkpoint is ONE file, CKPT_DIR/<name>.safetensors, rewritten atomically every ckpt_minutes, on
    SIGTERM/SIGINT, on CKPT_DIR/STOP, after stop_minutes and when the last step is done. It holds the state
    (step, loss log, wall time, hardware of every segment) as JSON in the safetensors metadata; a copy of that
    JSON is written beside it as <name>.json for people. After the final weights are saved the stage calls
    remove_checkpoint(). It comes in two forms:
      * full (the periodic saves, against crashes): training weights, EMA weights, extra networks (the CM
        target) and the Adam moments, all f32. A resume from it is the uninterrupted run, bit for bit.
      * compact (a stop on purpose: the file that is committed to carry a run to another machine): training
        weights and extra networks f32, Adam moments bf16, and the EMA as its difference from the training
        weights in bf16. tools/train/README.md says what that costs (measured: next to nothing).
    """

    def __init__(self, name, model, *, lr, steps, batch, seed, recipe, warmup=500, decay_start=0.6, lr_floor=0.05,
                 grad_clip=1.0, ema=True, ema_ramp=0.05, ema_halflife_img=500_000, extra=None, ckpt_minutes=5.0,
                 stop_minutes=None, stop_at_step=None, moments=True, rewarm=0, resume=True, log_every=20, print_every=200):
        self.name, self.model, self.lr, self.steps, self.batch, self.seed = name, model, lr, steps, batch, seed
        self.warmup, self.decay_start, self.lr_floor, self.grad_clip = warmup, decay_start, lr_floor, grad_clip
        self.ema_ramp, self.ema_halflife_img = ema_ramp, ema_halflife_img
        self.recipe, self.rid = recipe, recipe_id(recipe)
        self.extra = dict(extra or {})
        self.ckpt_s, self.stop_s = ckpt_minutes * 60.0, (stop_minutes * 60.0 if stop_minutes else None)
        self.moments, self.rewarm, self.stop_at_step = moments, rewarm, stop_at_step
        self.log_every, self.print_every = log_every, print_every
        self.opt = torch.optim.Adam(model.parameters(), lr=lr)
        self.ema = copy.deepcopy(model).eval().requires_grad_(False) if ema else None
        self.step, self.wall_before, self.acc, self.nacc = 0, 0.0, 0.0, 0
        self.log, self.last = [], []      # log rows [step, wall_s, mean loss over log_every steps, lr]; last 200 losses
        self.segments, self.rewarm_from, self.length_changes = [], None, []
        os.makedirs(CKPT_DIR, exist_ok=True)
        self.path = os.path.join(CKPT_DIR, name + ".safetensors")
        if resume and os.path.exists(self.path):
            self.load()
        elif os.path.exists(self.path):
            print(f"[{name}] --fresh: ignoring and replacing {self.path}", flush=True)
        self.seg = {"start_step": self.step, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "hardware": hardware(),
                    "resumed_without_adam_moments": self.rewarm_from is not None}
        self.t0 = self.t_ckpt = time.time()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, _on_signal)
        print(f"[{name}] {'resuming at' if self.step else 'starting at'} step {self.step}/{steps}, recipe {self.rid}, "
              f"checkpoint {self.path}", flush=True)

    # ---- randomness and schedule
    def g(self, stream="step"):
        return gen(self.seed, self.name, stream, self.step)

    def wall(self):
        return self.wall_before + time.time() - self.t0

    def lr_now(self):
        return self.lr_at(self.step, self.steps)

    def lr_at(self, s, steps):
        """The LR of step s in a schedule of `steps` steps."""
        w = min(1.0, (s + 1) / self.warmup) if self.warmup else 1.0
        frac = s / steps
        dec = 1.0 if frac < self.decay_start else max(self.lr_floor, (1 - frac) / (1 - self.decay_start))
        if self.rewarm_from is not None and self.rewarm and s >= self.rewarm_from:
            w *= min(1.0, (s - self.rewarm_from + 1) / self.rewarm)
        return self.lr * w * dec

    def _adopt_new_length(self, state):
        """A checkpoint whose recipe differs from ours only in the number of steps is the same run so far when no
        step done had a different LR in the new schedule (the EMA and the data order do not depend on the length).
        Then the run continues under the new length, and the change is recorded."""
        old, done = state["recipe"], state["step"]
        if set(recipe_diff(old, self.recipe)) != {"steps"}:
            return False
        if done >= self.steps or any(self.lr_at(s, old["steps"]) != self.lr_at(s, self.steps) for s in range(done)):
            return False
        self.length_changes = self.length_changes + [
            {"at_step": done, "from_steps": old["steps"], "to_steps": self.steps, "from_recipe_id": state["recipe_id"],
             "note": "same LR at every step done so far, so the same run as if it had started with the new length"}]
        print(f"[{self.name}] schedule length {old['steps']} -> {self.steps} at step {done}: the LR of every step done "
              f"so far is the same in both, continuing as recipe {self.rid}", flush=True)
        return True

    def ema_beta(self):
        nimg = self.step * self.batch
        hl = self.ema_halflife_img if self.ema_ramp is None else min(self.ema_halflife_img, nimg * self.ema_ramp)
        return 0.5 ** (self.batch / max(hl, 1e-8))

    # ---- loop
    def running(self):
        if self.step >= self.steps:
            if self.seg.get("end_step") != self.step and self.seg["start_step"] != self.step:
                self.save()
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, signal.SIG_DFL)
            return False
        why = None
        if _STOP["signal"] is not None:
            why = f"signal {_STOP['signal']}"
        elif os.path.exists(os.path.join(CKPT_DIR, "STOP")):
            why = f"{os.path.join(CKPT_DIR, 'STOP')} exists"
        elif self.stop_s is not None and time.time() - self.t0 >= self.stop_s:
            why = f"--stop-after-minutes {self.stop_s / 60:g}"
        elif self.stop_at_step is not None and self.step >= self.stop_at_step:
            why = f"--stop-at-step {self.stop_at_step}"
        if why:
            self.save(compact=True)
            print(f"[{self.name}] stopped at step {self.step}/{self.steps} ({why}); checkpoint {self.path}", flush=True)
            raise Stopped(why)
        if time.time() - self.t_ckpt >= self.ckpt_s:
            self.save()
        return True

    def update(self, loss):
        lr = self.lr_now()
        for grp in self.opt.param_groups:
            grp["lr"] = lr
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if self.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        self.opt.step()
        self.step += 1
        if self.ema is not None:
            b = self.ema_beta()
            with torch.no_grad():
                for pe, p in zip(self.ema.parameters(), self.model.parameters()):
                    pe.lerp_(p, 1 - b)
        l = float(loss.detach())
        self.acc += l; self.nacc += 1
        self.last = (self.last + [l])[-200:]
        if self.step % self.log_every == 0:
            self.log.append([self.step, round(self.wall(), 1), round(self.acc / self.nacc, 6), float(f"{lr:.4e}")])
            self.acc, self.nacc = 0.0, 0
            if self.step % self.print_every == 0:
                print(f"[{self.name}] step {self.step}/{self.steps} wall={self.wall():.0f}s loss={self.log[-1][2]:.5f} "
                      f"lr={lr:.2e} {time.strftime('%H:%M:%S')}", flush=True)

    # ---- checkpoint
    def _state(self):
        seg = dict(self.seg, end_step=self.step, wall_s=round(time.time() - self.t0, 1))
        return {"name": self.name, "recipe_id": self.rid, "recipe": self.recipe, "step": self.step, "steps": self.steps,
                "wall_s": round(self.wall(), 1), "acc": self.acc, "nacc": self.nacc, "log": self.log, "last": self.last,
                "segments": self.segments + [seg], "adam_moments": self.moments,
                "adam_step": int(self._adam_step()), "rewarm_from": self.rewarm_from,
                "length_changes": self.length_changes,
                "rng": "none to save: every draw of step s comes from a generator seeded by (seed, name, stream, s)",
                "saved": time.strftime("%Y-%m-%dT%H:%M:%S%z")}

    def _adam_step(self):
        for st in self.opt.state.values():
            return float(st["step"])
        return 0

    def save(self, compact=False):
        from safetensors.torch import save_file
        t = {}
        for k, v in self.model.state_dict().items():
            t["model." + k] = v
        if self.ema is not None:
            weights = self.model.state_dict()
            for k, v in self.ema.state_dict().items():
                if compact:  # the EMA as its small difference from the training weights, rounded to bf16 below
                    t["ema_delta." + k] = v - weights[k]
                else:
                    t["ema." + k] = v
        for nm, m in self.extra.items():
            for k, v in m.state_dict().items():
                t[nm + "." + k] = v
        if self.moments:
            names = {id(p): k for k, p in self.model.named_parameters()}
            for p, st in self.opt.state.items():
                t["adam_m." + names[id(p)]] = st["exp_avg"]
                t["adam_v." + names[id(p)]] = st["exp_avg_sq"]
        t = {k: v.detach().float().cpu().contiguous() for k, v in t.items()}
        if compact:
            t = {k: v.bfloat16() if k.startswith(("adam_", "ema_delta.")) else v for k, v in t.items()}
        state = dict(self._state(), form="compact" if compact else "full")
        atomic_write(self.path, lambda tmp: save_file(t, tmp, metadata={"gddcm_state": json.dumps(state)}))
        sidecar = dict(state, log=f"{len(self.log)} rows (in the .safetensors metadata)", last=f"{len(self.last)} values",
                       checkpoint_bytes=os.path.getsize(self.path))
        write_json(self.path[:-len(".safetensors")] + ".json", sidecar)
        self.seg["end_step"] = self.step
        self.t_ckpt = time.time()
        print(f"[{self.name}] {state['form']} checkpoint step {self.step} -> {self.path} "
              f"({os.path.getsize(self.path) / 1e6:.1f} MB)", flush=True)

    def load(self):
        from safetensors import safe_open
        with safe_open(self.path, framework="pt") as f:
            state = json.loads(f.metadata()["gddcm_state"])
            t = {k: f.get_tensor(k) for k in f.keys()}
        self.rewarm_from, self.length_changes = state.get("rewarm_from"), state.get("length_changes", [])
        if state["recipe_id"] != self.rid and not self._adopt_new_length(state):
            diff = recipe_diff(state["recipe"], self.recipe)
            why = ""
            if set(diff) == {"steps"}:
                why = (f" Only the length differs, but a new length is taken over only while every step done had the "
                       f"same LR in both schedules; this checkpoint is at step {state['step']}.")
            raise SystemExit(f"[{self.name}] checkpoint {self.path} is for another recipe ({state['recipe_id']} != "
                             f"{self.rid}): {diff}.{why} Use the same arguments, or --fresh to start over.")

        def sub(prefix):
            return {k[len(prefix):]: v.to(DEV) for k, v in t.items() if k.startswith(prefix)}
        self.model.load_state_dict(sub("model."))
        if self.ema is not None:
            ema, delta = sub("ema."), sub("ema_delta.")
            if delta:
                weights = self.model.state_dict()
                ema = {k: weights[k] + d.float() for k, d in delta.items()}
            self.ema.load_state_dict(ema)
        for nm, m in self.extra.items():
            m.load_state_dict(sub(nm + "."))
        # compact checkpoints hold the moments in bf16: Adam runs on f32
        m_ = {k: v.float() for k, v in sub("adam_m.").items()}
        v_ = {k: v.float() for k, v in sub("adam_v.").items()}
        self.step, self.wall_before = state["step"], state["wall_s"]
        self.acc, self.nacc, self.log, self.last = state["acc"], state["nacc"], state["log"], state["last"]
        self.segments = state["segments"]
        if m_ and self.moments:
            for k, p in self.model.named_parameters():
                self.opt.state[p] = {"step": torch.tensor(float(state["adam_step"])), "exp_avg": m_[k].clone(),
                                     "exp_avg_sq": v_[k].clone()}
        else:
            # Adam restarts from zero moments (bias correction from its step 1) with an LR re-warmup
            self.rewarm_from = self.step
        print(f"[{self.name}] loaded checkpoint at step {self.step} (wall so far {self.wall_before:.0f}s, "
              f"{state.get('form', 'full')} form, Adam moments "
              f"{'restored' if (m_ and self.moments) else 'reset, re-warmup %d steps' % self.rewarm})", flush=True)

    def remove_checkpoint(self):
        for p in (self.path, self.path[:-len(".safetensors")] + ".json"):
            if os.path.exists(p):
                os.remove(p)

    def finish(self, title, out_dir):
        """Loss CSV/plot in out_dir and the training record for gddcm.json."""
        os.makedirs(out_dir, exist_ok=True)
        csv_path = os.path.join(out_dir, "loss.csv")
        with open(csv_path, "w") as f:
            f.write(f"step,elapsed_s,loss,lr\n")
            for r in self.log:
                f.write(f"{r[0]},{r[1]},{r[2]:.6f},{r[3]:.3e}\n")
        plot_loss(csv_path, csv_path.replace(".csv", ".png"), title)
        segs = self._state()["segments"]
        return {"steps": self.step, "wall_time_s": round(self.wall(), 1), "recipe_id": self.rid,
                "final_loss_mean_last_200_steps": float(np.mean(self.last)) if self.last else None,
                "training_segments": segs, **({"schedule_length_changes": self.length_changes} if self.length_changes else {}),
                "loss_at": {str(r[0]): r[2] for r in self.log if r[0] in
                            sorted({max(self.log_every, (self.steps * k // 10) // self.log_every * self.log_every) for k in range(1, 11)})}}


def save_unet(model, out_dir, meta):
    """model.save_pretrained (config.json + diffusion_pytorch_model.safetensors, f32) + gddcm.json."""
    model.save_pretrained(out_dir, safe_serialization=True)
    with open(os.path.join(out_dir, "gddcm.json"), "w") as f:
        json.dump(meta, f, indent=2)


def load_unet(name):
    from diffusers import UNet2DModel
    return UNet2DModel.from_pretrained(os.path.join(MODELS, name)).to(DEV).eval()
