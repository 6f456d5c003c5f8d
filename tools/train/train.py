#!/usr/bin/env python
"""Train the small Fashion-MNIST models shipped with gddcm (CPU, 1 thread, bf16 autocast).

  python tools/train/train.py classifier --minutes 3
  python tools/train/train.py ddpm --minutes 8 --batch 32
  python tools/train/train.py edm  --minutes 12 --batch 32
  python tools/train/train.py rf   --minutes 8 --batch 32 --reflow-minutes 5 --pairs 2000
  python tools/train/train.py cm   --minutes 9 --batch 32     (needs models/edm; default lr 4e-4)
  python tools/train/train.py examples
(the shipped models were made with exactly these commands, see run_all.sh)
"""
import argparse, json, math, os, sys, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import *  # noqa

AC = dict(device_type="cpu", dtype=torch.bfloat16)
SD = 0.5          # sigma_data
SMIN, SMAX = 0.002, 80.0


def net(model, x, t):
    with torch.autocast(**AC):
        return model(x, t).sample.float()


# ------------------------------------------------------------------ DDPM
def ddpm_sched():
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    ab = torch.cumprod(1 - betas, 0)
    return ab.sqrt().float(), (1 - ab).sqrt().float(), ab


@torch.no_grad()
def sample_ddim(model, n, steps=50, bs=250, seed=0):
    a, b, ab = ddpm_sched()
    g = torch.Generator().manual_seed(seed)
    ts = list(range(0, 1000, 1000 // steps))[::-1]  # 980..0 ("leading" spacing)
    out = []
    for i in range(0, n, bs):
        x = torch.randn(min(bs, n - i), 1, 32, 32, generator=g)
        for k, t in enumerate(ts):
            e = net(model, x, torch.full((len(x),), t, dtype=torch.long))
            x0 = ((x - b[t] * e) / a[t]).clamp(-1, 1)
            e = (x - a[t] * x0) / b[t]
            tp = ts[k + 1] if k + 1 < len(ts) else -1
            ap, bp = (a[tp], b[tp]) if tp >= 0 else (1.0, 0.0)
            x = ap * x0 + bp * e
        out.append(x)
    return torch.cat(out)


# ------------------------------------------------------------------ EDM
def edm_denoise(model, x, sigma):
    s = sigma.view(-1, 1, 1, 1)
    c_skip = SD ** 2 / (s ** 2 + SD ** 2)
    c_out = s * SD / (s ** 2 + SD ** 2).sqrt()
    c_in = 1 / (s ** 2 + SD ** 2).sqrt()
    return c_skip * x + c_out * net(model, c_in * x, sigma.log() / 4)


def karras(n, rho=7.0):
    i = torch.arange(n, dtype=torch.float64)
    return ((SMAX ** (1 / rho) + i / (n - 1) * (SMIN ** (1 / rho) - SMAX ** (1 / rho))) ** rho)  # descending


@torch.no_grad()
def sample_edm_heun(model, n, steps=18, bs=250, seed=0):
    ts = torch.cat([karras(steps), torch.zeros(1, dtype=torch.float64)])
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(0, n, bs):
        m = min(bs, n - i)
        x = torch.randn(m, 1, 32, 32, generator=g, dtype=torch.float64) * ts[0]
        for k in range(steps):
            tc, tn = ts[k], ts[k + 1]
            d = (x - edm_denoise(model, x.float(), torch.full((m,), float(tc))).double()) / tc
            xn = x + (tn - tc) * d
            if k < steps - 1:
                d2 = (xn - edm_denoise(model, xn.float(), torch.full((m,), float(tn))).double()) / tn
                xn = x + (tn - tc) * (0.5 * d + 0.5 * d2)
            x = xn
        out.append(x.float())
    return torch.cat(out)


# ------------------------------------------------------------------ CM
def cm_f(model, x, sigma):
    s = sigma.view(-1, 1, 1, 1)
    c_skip = SD ** 2 / ((s - SMIN) ** 2 + SD ** 2)
    c_out = SD * (s - SMIN) / (s ** 2 + SD ** 2).sqrt()
    c_in = 1 / (s ** 2 + SD ** 2).sqrt()
    return c_skip * x + c_out * net(model, c_in * x, sigma.log() / 4)


@torch.no_grad()
def sample_cm(model, n, bs=250, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(0, n, bs):
        m = min(bs, n - i)
        x = torch.randn(m, 1, 32, 32, generator=g) * SMAX
        out.append(cm_f(model, x, torch.full((m,), SMAX)))
    return torch.cat(out)


# ------------------------------------------------------------------ RF
@torch.no_grad()
def sample_rf_euler(model, n, steps=20, bs=250, seed=0, return_noise=False, eps=1e-3):
    g = torch.Generator().manual_seed(seed)
    xs, zs = [], []
    for i in range(0, n, bs):
        m = min(bs, n - i)
        z0 = torch.randn(m, 1, 32, 32, generator=g)
        x = z0.clone()
        dt = 1.0 / steps
        for k in range(steps):
            t = k / steps * (1 - eps) + eps
            x = x + net(model, x, torch.full((m,), 999.0 * t)) * dt
        xs.append(x); zs.append(z0)
    return (torch.cat(xs), torch.cat(zs)) if return_noise else torch.cat(xs)


# ------------------------------------------------------------------ common glue
def base_meta(model, family, param):
    return {"family": family, "parameterization": param, "data": DATA_DESC,
            "network": {"class": "diffusers.UNet2DModel", "config": "config.json", **{k: (list(v) if isinstance(v, tuple) else v) for k, v in UNET_KW.items()}},
            "params": nparams(model), "forward_gflop_per_image": round(unet_gflop(model), 4),
            "gflop_note": "torch.utils.flop_counter (2 FLOP per multiply-add), one 1x1x32x32 forward",
            "weights_dtype": "float32", "weights": "EMA of training weights",
            "hardware": hardware()}


def finish_unet(name, model_ema, meta, sampler_desc, sampler):
    out = os.path.join(MODELS, name)
    t0 = time.time()
    xs = sampler(model_ema)
    q = sample_quality(xs)
    q["sampler"] = sampler_desc
    q["sampling_precision"] = "network under bf16 autocast, state f32/f64"
    q["sampling_wall_s"] = round(time.time() - t0, 1)
    meta["sample_quality"] = q
    save_grid(xs, os.path.join(out, "samples.png"))
    save_unet(model_ema, out, meta)
    print(json.dumps({k: meta[k] for k in ("family", "steps", "wall_time_s", "final_loss", "sample_quality") if k in meta}, indent=1), flush=True)


def batches(data, bs, g):
    n = len(data)
    bs = min(bs, n)
    while True:
        perm = torch.randperm(n, generator=g)
        for i in range(0, n - bs + 1, bs):
            yield perm[i:i + bs]


def cmd_ddpm(a):
    torch.manual_seed(a.seed); g = torch.Generator().manual_seed(a.seed)
    data, _ = load_padded("train")
    model = make_unet().train()
    sa, sb, _ = ddpm_sched()
    out = os.path.join(MODELS, "ddpm")
    tr = Trainer(model, a.lr, a.minutes, out)
    it = batches(data, a.batch, g)
    while tr.running():
        x = to_float(data[next(it)])
        t = torch.randint(0, 1000, (len(x),))
        e = torch.randn_like(x)
        xt = sa[t].view(-1, 1, 1, 1) * x + sb[t].view(-1, 1, 1, 1) * e
        loss = F.mse_loss(net(model, xt, t), e)
        tr.update(loss)
    info = tr.finish("ddpm eps-MSE")
    meta = base_meta(model, "ddpm", "eps")
    meta.update(info); meta["final_loss"] = info["final_loss_mean_last_200_steps"]
    meta["schedule"] = {"betas": "linear 1e-4..0.02 (f64)", "T": 1000, "timestep": "integer t in 0..999 passed to UNet"}
    meta["training"] = {"loss": "MSE(eps_hat, eps), t ~ U{0..999}", "optimizer": "Adam(0.9,0.999)", "lr": a.lr,
                        "lr_schedule": "linear warmup 100 steps, constant, linear decay over the last 40% of the time budget to 5%",
                        "batch_size": a.batch, "grad_clip": 1.0, "ema": "decay min(0.995,(1+n)/(10+n))",
                        "time_budget_min": a.minutes, "seed": a.seed, "augmentation": "none"}
    finish_unet("ddpm", tr.ema, meta, "DDIM 50 steps eta=0 (t=980,960,..,0; final alpha_bar=1), x0 clipped to [-1,1]",
                lambda m: sample_ddim(m, a.eval_n))


def cmd_edm(a):
    torch.manual_seed(a.seed); g = torch.Generator().manual_seed(a.seed)
    data, _ = load_padded("train")
    model = make_unet().train()
    out = os.path.join(MODELS, "edm")
    tr = Trainer(model, a.lr, a.minutes, out)
    it = batches(data, a.batch, g)
    while tr.running():
        x = to_float(data[next(it)])
        sigma = (torch.randn(len(x)) * 1.2 - 1.2).exp().clamp(SMIN, SMAX)
        w = (sigma ** 2 + SD ** 2) / (sigma * SD) ** 2
        D = edm_denoise(model, x + torch.randn_like(x) * sigma.view(-1, 1, 1, 1), sigma)
        loss = (w.view(-1, 1, 1, 1) * (D - x) ** 2).mean()
        tr.update(loss)
    info = tr.finish("edm weighted denoising loss")
    meta = base_meta(model, "edm", "edm precond sigma_data 0.5 (c_skip=sd^2/(s^2+sd^2), c_out=s*sd/sqrt(s^2+sd^2), c_in=1/sqrt(s^2+sd^2), c_noise=ln(s)/4 passed as UNet timestep)")
    meta.update(info); meta["final_loss"] = info["final_loss_mean_last_200_steps"]
    meta["schedule"] = {"sigma_min": SMIN, "sigma_max": SMAX, "sigma_data": SD, "s": 1}
    meta["training"] = {"loss": "EDM: lambda(s)*|D(x+s n; s)-x|^2, lambda=(s^2+sd^2)/(s sd)^2, ln s ~ N(-1.2, 1.2^2) clamped to [0.002,80]",
                        "optimizer": "Adam(0.9,0.999)", "lr": a.lr,
                        "lr_schedule": "linear warmup 100 steps, constant, linear decay over the last 40% of the time budget to 5%",
                        "batch_size": a.batch, "grad_clip": 1.0, "ema": "decay min(0.995,(1+n)/(10+n))",
                        "time_budget_min": a.minutes, "seed": a.seed, "augmentation": "none"}
    finish_unet("edm", tr.ema, meta, "EDM Heun 18 steps (35 NFE), Karras rho=7 in [0.002,80], S_churn=0",
                lambda m: sample_edm_heun(m, a.eval_n))


def rf_train(model, minutes, lr, batch, out, title, get_pair, seed):
    tr = Trainer(model, lr, minutes, out, warmup=100 if title == "1-rf" else 20)
    while tr.running():
        x1, z0 = get_pair()
        t = torch.rand(len(x1)) * (1 - 1e-3) + 1e-3
        tt = t.view(-1, 1, 1, 1)
        z = tt * x1 + (1 - tt) * z0
        loss = F.mse_loss(net(model, z, 999.0 * t), x1 - z0)
        tr.update(loss)
    return tr, tr.finish(title + " velocity MSE")


def rf_meta(model, info, a, which, extra):
    meta = base_meta(model, "rf", "velocity with t_rf*999 (RectifiedFlow code convention: z = t x + (1-t) noise, v = x - noise, net(z, 999 t), noise at t=0)")
    meta.update(info); meta["final_loss"] = info["final_loss_mean_last_200_steps"]
    meta["schedule"] = {"t_rf_range": [1e-3, 1.0], "unified_tau": "tau = 1 - t_rf"}
    meta["rectified_flow_round"] = which
    meta["training"] = {"loss": "MSE(v_hat, x - noise), t ~ U[1e-3, 1]", "optimizer": "Adam(0.9,0.999)",
                        "lr_schedule": "linear warmup, constant, linear decay over the last 40% of the time budget to 5%",
                        "batch_size": a.batch, "grad_clip": 1.0, "ema": "decay min(0.995,(1+n)/(10+n))",
                        "seed": a.seed, "augmentation": "none", **extra}
    return meta


def cmd_rf(a):
    torch.manual_seed(a.seed); g = torch.Generator().manual_seed(a.seed)
    data, _ = load_padded("train")
    model = make_unet().train()
    it = batches(data, a.batch, g)

    def pair1():
        x = to_float(data[next(it)])
        return x, torch.randn_like(x)
    tr, info = rf_train(model, a.minutes, a.lr, a.batch, os.path.join(MODELS, "rf1"), "1-rf", pair1, a.seed)
    rf1 = tr.ema
    meta = rf_meta(model, info, a, "1-rectified flow (trained on independent noise/data pairs)",
                   {"lr": a.lr, "time_budget_min": a.minutes})
    # reflow pairs from the 1-RF EMA model; the first eval_n of them double as its sample-quality set
    t0 = time.time()
    npairs = max(a.pairs, a.eval_n)
    xs, zs = sample_rf_euler(rf1, npairs, seed=a.seed + 1, return_noise=True)
    pair_time = time.time() - t0
    print(f"generated {npairs} reflow pairs in {pair_time:.0f}s", flush=True)
    finish_unet("rf1", rf1, meta, "RF Euler 20 steps from t_rf=1e-3 to 1 (dt=1/20)", lambda m: xs[:a.eval_n])
    # 2-rectified flow, initialised from 1-RF EMA weights
    model2 = copy.deepcopy(rf1).train().requires_grad_(True)
    gp = torch.Generator().manual_seed(a.seed + 2)
    itp = batches(xs, a.batch, gp)

    def pair2():
        idx = next(itp)
        return xs[idx], zs[idx]
    tr2, info2 = rf_train(model2, a.reflow_minutes, a.reflow_lr, a.batch, os.path.join(MODELS, "rf"), "2-rf", pair2, a.seed)
    meta2 = rf_meta(model2, info2, a, "2-rectified flow (one reflow round)",
                    {"lr": a.reflow_lr, "time_budget_min": a.reflow_minutes, "init": "1-RF EMA weights (models/rf1)",
                     "reflow_pairs": npairs, "reflow_pair_sampler": "1-RF EMA, Euler 20 steps, seed %d" % (a.seed + 1),
                     "reflow_pair_generation_wall_s": round(pair_time, 1),
                     "stage1": {"steps": info["steps"], "wall_time_s": info["wall_time_s"], "lr": a.lr, "time_budget_min": a.minutes}})
    meta2["total_wall_time_s_including_stage1_and_pairs"] = round(info["wall_time_s"] + pair_time + info2["wall_time_s"], 1)
    finish_unet("rf", tr2.ema, meta2, "RF Euler 20 steps from t_rf=1e-3 to 1 (dt=1/20)", lambda m: sample_rf_euler(m, a.eval_n))


def cmd_cm(a):
    torch.manual_seed(a.seed); g = torch.Generator().manual_seed(a.seed)
    data, _ = load_padded("train")
    teacher = load_unet("edm").requires_grad_(False)
    model = load_unet("edm").train().requires_grad_(True)
    target = copy.deepcopy(model).eval().requires_grad_(False)
    N = a.N
    ts = karras(N).flip(0).float()  # ascending: ts[0]=0.002 .. ts[N-1]=80
    c_hub = 0.00054 * math.sqrt(32 * 32)
    out = os.path.join(MODELS, "cm")
    tr = Trainer(model, a.lr, a.minutes, out, warmup=50)
    it = batches(data, a.batch, g)
    while tr.running():
        x = to_float(data[next(it)])
        B = len(x)
        n = torch.randint(0, N - 1, (B,))
        tn, tn1 = ts[n], ts[n + 1]
        xt1 = x + tn1.view(-1, 1, 1, 1) * torch.randn_like(x)
        with torch.no_grad():
            # EDM Heun step of the teacher's PF-ODE from tn1 to tn
            d = (xt1 - edm_denoise(teacher, xt1, tn1)) / tn1.view(-1, 1, 1, 1)
            h = (tn - tn1).view(-1, 1, 1, 1)
            xe = xt1 + h * d
            d2 = (xe - edm_denoise(teacher, xe, tn)) / tn.view(-1, 1, 1, 1)
            xtn = xt1 + h * 0.5 * (d + d2)
            ytgt = cm_f(target, xtn, tn)
        y = cm_f(model, xt1, tn1)
        loss = (((y - ytgt) ** 2).flatten(1).sum(1) + c_hub ** 2).sqrt().sub(c_hub).mean()
        tr.update(loss)
        with torch.no_grad():
            for pt, p in zip(target.parameters(), model.parameters()):
                pt.lerp_(p, 1 - a.mu)
    info = tr.finish("cm pseudo-Huber")
    meta = base_meta(model, "cm", "consistency sigma_min 0.002 sigma_data 0.5 c_noise ln(s)/4 (c_skip=sd^2/((s-smin)^2+sd^2), c_out=sd(s-smin)/sqrt(s^2+sd^2), c_in=1/sqrt(s^2+sd^2))")
    meta.update(info); meta["final_loss"] = info["final_loss_mean_last_200_steps"]
    meta["schedule"] = {"sigma_min": SMIN, "sigma_max": SMAX, "sigma_data": SD, "s": 1}
    meta["training"] = {"method": "consistency distillation from models/edm (EDM teacher, Heun step between adjacent points)",
                        "init": "models/edm EMA weights", "grid": f"Karras rho=7, N={N} points in [0.002, 80]",
                        "loss": f"pseudo-Huber sqrt(|f(x_t(n+1)) - f_target(x_t(n))|^2 + c^2) - c, c=0.00054*sqrt(1024)={c_hub:.5f}, lambda=1",
                        "target_network": f"EMA mu={a.mu}", "optimizer": "Adam(0.9,0.999)", "lr": a.lr,
                        "lr_schedule": "linear warmup 50 steps, constant, linear decay over the last 40% of the time budget to 5%",
                        "batch_size": a.batch, "grad_clip": 1.0, "shipped_weights": "EMA decay min(0.995,(1+n)/(10+n)) of the online network",
                        "time_budget_min": a.minutes, "seed": a.seed, "augmentation": "none"}
    finish_unet("cm", tr.ema, meta, "one step: x = 80*n, f(x, 80)", lambda m: sample_cm(m, a.eval_n))


def cmd_classifier(a):
    from safetensors.torch import save_file
    torch.manual_seed(a.seed); g = torch.Generator().manual_seed(a.seed)
    data, lab = load_padded("train")
    xt, lt = load_padded("test")
    model = Classifier().train()
    out = os.path.join(MODELS, "classifier")
    tr = Trainer(model, a.lr, a.minutes, out, warmup=50, ema_max=0.0)
    it = batches(data, a.batch, g)
    while tr.running():
        idx = next(it)
        with torch.autocast(**AC):
            logits = model(to_float(data[idx]))
        tr.update(F.cross_entropy(logits.float(), lab[idx]))
    info = tr.finish("classifier CE")
    model.eval()
    with torch.no_grad():
        pred = torch.cat([model(to_float(xt[i:i + 1000])).argmax(1) for i in range(0, len(xt), 1000)])
    acc = float((pred == lt).float().mean())
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, os.path.join(out, "model.safetensors"))
    # floor for the Frechet distance: 1000 real train images vs the test set
    clf = load_classifier()
    ftr, ptr = classifier_feats(clf, to_float(data[torch.randperm(len(data), generator=torch.Generator().manual_seed(1))[:1000]]))
    fd_real = frechet(ftr, reference_feats(clf))
    cfg = {"name": "fmnist_classifier", "purpose": "offline stand-in for Inception features (NOT Inception); 128-d features = ReLU(fc1(.))",
           "input": "[B,1,32,32] float32 in [-1,1], Fashion-MNIST padded 28->32 with 2 px of -1",
           "architecture": ["conv1 Conv2d(1,32,3,pad 1) ReLU", "conv2 Conv2d(32,32,3,pad 1) ReLU", "maxpool 2",
                            "conv3 Conv2d(32,64,3,pad 1) ReLU", "conv4 Conv2d(64,64,3,pad 1) ReLU", "maxpool 2",
                            "flatten NCHW (64*8*8=4096)", "fc1 Linear(4096,128) ReLU -> features", "fc2 Linear(128,10) -> logits"],
           "keys": list(model.state_dict().keys()), "weights_dtype": "float32",
           "labels": ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"],
           "test_accuracy": acc, "test_images": len(xt), "params": nparams(model),
           "forward_gflop_per_image": round(count_flops(model, lambda: model(torch.zeros(1, 1, 32, 32))) / 1e9, 4),
           "frechet_distance_1000_real_train_vs_10000_test": fd_real, "mean_max_softmax_1000_real_train": float(ptr.max(1).mean()),
           "training": {"loss": "cross-entropy", "optimizer": "Adam(0.9,0.999)", "lr": a.lr, "batch_size": a.batch,
                        "lr_schedule": "linear warmup 50 steps, constant, linear decay over the last 40% of the time budget to 5%",
                        "augmentation": "none", "time_budget_min": a.minutes, "epochs": info["steps"] * a.batch / len(data), "seed": a.seed,
                        "weights": "final (no EMA)", **info},
           "data": DATA_DESC, "hardware": hardware()}
    json.dump(cfg, open(os.path.join(out, "config.json"), "w"), indent=2)
    print(json.dumps({k: cfg[k] for k in ("test_accuracy", "frechet_distance_1000_real_train_vs_10000_test", "mean_max_softmax_1000_real_train")}), flush=True)


def cmd_examples(a):
    from PIL import Image
    img, lab = load_idx("test")
    d = os.path.join(REPO, "assets", "examples")
    os.makedirs(d, exist_ok=True)
    for i in range(8):
        Image.fromarray(img[i], mode="L").save(os.path.join(d, f"fmnist_test_{i}_{int(lab[i])}.png"))
    print(sorted(os.listdir(d)))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("what", choices=["classifier", "ddpm", "edm", "rf", "cm", "examples"])
    p.add_argument("--minutes", type=float, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--batch", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-n", type=int, default=1000)
    p.add_argument("--reflow-minutes", type=float, default=5.0)
    p.add_argument("--reflow-lr", type=float, default=2e-4)
    p.add_argument("--pairs", type=int, default=2000)
    p.add_argument("--N", type=int, default=18)
    p.add_argument("--mu", type=float, default=0.95)
    a = p.parse_args()
    defaults = {"classifier": (3.0, 1e-3, 128), "ddpm": (8.0, 1e-3, 32), "edm": (12.0, 1e-3, 32),
                "rf": (8.0, 1e-3, 32), "cm": (9.0, 4e-4, 32), "examples": (0, 0, 0)}[a.what]
    a.minutes = a.minutes if a.minutes is not None else defaults[0]
    a.lr = a.lr if a.lr is not None else defaults[1]
    a.batch = a.batch if a.batch is not None else defaults[2]
    print(f"{time.strftime('%H:%M:%S')} {a}", flush=True)
    globals()["cmd_" + a.what](a)
    print(f"{time.strftime('%H:%M:%S')} done", flush=True)


if __name__ == "__main__":
    main()
