#!/usr/bin/env python
"""Train the Fashion-MNIST models shipped with gddcm: step-based and resumable (recipe v2, issue 18).

  python tools/train/train.py classifier            # models/classifier (the FD feature net)
  python tools/train/train.py edm                   # models/edm
  python tools/train/train.py ddpm                  # models/ddpm
  python tools/train/train.py rf                    # models/rf1 (1-RF), reflow pairs, models/rf (2-RF)
  python tools/train/train.py cm                    # models/cm, distilled from models/edm
  python tools/train/train.py examples              # assets/examples/*.png
or tools/train/run_resumable.sh, which runs them all in that order and restarts itself.

Every stage resumes from its checkpoint (tools/train/checkpoints/<name>.safetensors) by default and is skipped
when its model folder already holds the same recipe (recipe_id in gddcm.json). Stop a run with SIGTERM/SIGINT,
`touch tools/train/checkpoints/STOP` or --stop-after-minutes: it writes its checkpoint and exits with 75.
Defaults are the CPU recipe (see README.md); --steps/--batch/--lr override it (a new recipe id).
"""
import argparse, json, math, os, sys, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common as C
from common import *  # noqa

RECIPE = "v2"
SD = 0.5          # sigma_data
SMIN, SMAX = 0.002, 80.0
DEFAULTS = {  # stage: (steps, batch, lr, warmup)
    "classifier": (3500, 128, 1e-3, 100),
    "edm": (30000, 32, 5e-4, 1000),
    "ddpm": (20000, 32, 5e-4, 1000),
    "rf": (20000, 32, 5e-4, 1000),
    "cm": (10000, 32, 2e-4, 500),
}
EMA_DESC = ("EMA of the training weights with an EDM-style half-life ramp: beta = 0.5^(batch / h), "
            "h = min({hl} images, {ramp} * images seen so far)")


def net(model, x, t):
    with C.autocast():
        return model(x, t).sample.float()


def dev_full(n, v, dtype=torch.float32):
    return torch.full((n,), v, dtype=dtype, device=C.DEV)


# ------------------------------------------------------------------ DDPM
def ddpm_sched():
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    ab = torch.cumprod(1 - betas, 0)
    return ab.sqrt().float().to(C.DEV), (1 - ab).sqrt().float().to(C.DEV), ab


@torch.no_grad()
def sample_ddim(model, n, steps=50, bs=250, seed=0):
    a, b, ab = ddpm_sched()
    g = torch.Generator().manual_seed(seed)
    ts = list(range(0, 1000, 1000 // steps))[::-1]  # 980..0 ("leading" spacing)
    out = []
    for i in range(0, n, bs):
        x = randn(g, min(bs, n - i), 1, 32, 32)
        for k, t in enumerate(ts):
            e = net(model, x, dev_full(len(x), t, torch.long))
            x0 = ((x - b[t] * e) / a[t]).clamp(-1, 1)
            e = (x - a[t] * x0) / b[t]
            tp = ts[k + 1] if k + 1 < len(ts) else -1
            ap, bp = (a[tp], b[tp]) if tp >= 0 else (1.0, 0.0)
            x = ap * x0 + bp * e
        out.append(x.cpu())
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
    f64 = torch.float64 if C.DEV.type == "cpu" else torch.float32
    out = []
    for i in range(0, n, bs):
        m = min(bs, n - i)
        x = torch.randn(m, 1, 32, 32, generator=g, dtype=torch.float64).to(C.DEV, f64) * ts[0]
        for k in range(steps):
            tc, tn = ts[k], ts[k + 1]
            d = (x - edm_denoise(model, x.float(), dev_full(m, float(tc))).to(f64)) / tc
            xn = x + (tn - tc) * d
            if k < steps - 1:
                d2 = (xn - edm_denoise(model, xn.float(), dev_full(m, float(tn))).to(f64)) / tn
                xn = x + (tn - tc) * (0.5 * d + 0.5 * d2)
            x = xn
        out.append(x.float().cpu())
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
        x = randn(g, m, 1, 32, 32) * SMAX
        out.append(cm_f(model, x, dev_full(m, SMAX)).cpu())
    return torch.cat(out)


# ------------------------------------------------------------------ RF
@torch.no_grad()
def rf_euler(model, z0, steps=20, eps=1e-3):
    x = z0.clone()
    dt = 1.0 / steps
    for k in range(steps):
        t = k / steps * (1 - eps) + eps
        x = x + net(model, x, dev_full(len(x), 999.0 * t)) * dt
    return x


@torch.no_grad()
def sample_rf_euler(model, n, steps=20, bs=250, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.cat([rf_euler(model, randn(g, min(bs, n - i), 1, 32, 32), steps).cpu() for i in range(0, n, bs)])


def pair_noise(seed, idx):
    """z0 of reflow pair i: a pure function of (seed, i), so the pairs file only stores x1 (u8)."""
    return torch.stack([torch.randn(1, 32, 32, generator=gen(seed, "pair", int(i))) for i in idx]).to(C.DEV)


# ------------------------------------------------------------------ common glue
def stage_args(a, stage):
    st, bs, lr, wu = DEFAULTS[stage]
    return (a.steps or st, a.batch or bs, a.lr or lr, a.warmup if a.warmup is not None else wu)


def base_recipe(a, stage, steps, batch, lr, warmup, **extra):
    r = {"recipe": RECIPE, "stage": stage, "steps": steps, "batch": batch, "lr": lr, "warmup": warmup,
         "decay_start": 0.6, "lr_floor": 0.05, "grad_clip": 1.0, "optimizer": "Adam(0.9,0.999,eps=1e-8)",
         "seed": a.seed, "augmentation": "none"}
    if stage != "classifier":
        r["network"] = {k: (list(v) if isinstance(v, tuple) else v) for k, v in UNET_KW.items()}
        r["ema"] = {"halflife_img": a.ema_halflife_kimg * 1000, "ramp": a.ema_ramp}
    r.update(extra)
    return r


def make_trainer(a, name, model, recipe, **kw):
    return Trainer(name, model, lr=recipe["lr"], steps=recipe["steps"], batch=recipe["batch"], seed=a.seed,
                   recipe=recipe, warmup=recipe["warmup"], decay_start=recipe["decay_start"],
                   lr_floor=recipe["lr_floor"], grad_clip=recipe["grad_clip"],
                   ema_ramp=a.ema_ramp, ema_halflife_img=a.ema_halflife_kimg * 1000,
                   ckpt_minutes=a.ckpt_minutes, stop_minutes=a.stop_after_minutes, stop_at_step=a.stop_at_step, moments=not a.no_moments,
                   rewarm=a.rewarm, resume=not a.fresh, log_every=a.log_every, print_every=a.print_every, **kw)


def skip(name, recipe, a):
    if not a.fresh and stage_done(name, recipe_id(recipe)):
        print(f"[{name}] already done with recipe {recipe_id(recipe)} in {os.path.join(C.MODELS, name)}: skipped", flush=True)
        return True
    return False


def base_meta(model, family, param, recipe, info, a):
    meta = {"family": family, "parameterization": param, "data": DATA_DESC,
            "network": {"class": "diffusers.UNet2DModel", "config": "config.json",
                        **{k: (list(v) if isinstance(v, tuple) else v) for k, v in UNET_KW.items()}},
            "params": nparams(model), "forward_gflop_per_image": round(unet_gflop(model), 4),
            "gflop_note": "torch.utils.flop_counter (2 FLOP per multiply-add), one 1x1x32x32 forward",
            "weights_dtype": "float32", "weights": EMA_DESC.format(hl=a.ema_halflife_kimg * 1000, ramp=a.ema_ramp),
            "recipe_id": recipe_id(recipe), "recipe": recipe, "hardware": hardware()}
    meta.update(info)
    meta["final_loss"] = info["final_loss_mean_last_200_steps"]
    meta["wall_time_note"] = ("sum over training segments (a run stopped and resumed has several); "
                              "hardware of each in training_segments")
    return meta


@torch.no_grad()
def f16_check(model, ts):
    """Relative RMS change of the network output (f32 compute, CPU) when the weights are rounded to f16."""
    m32 = copy.deepcopy(model).float().cpu().eval()
    m16 = copy.deepcopy(m32)
    for p in m16.parameters():
        p.copy_(p.half().float())
    g = torch.Generator().manual_seed(123)
    worst = 0.0
    for t in ts:
        x = torch.randn(16, 1, 32, 32, generator=g)
        tt = torch.full((16,), t)
        y32, y16 = m32(x, tt).sample, m16(x, tt).sample
        worst = max(worst, float((y32 - y16).norm() / y32.norm()))
    return {"max_relative_rms_output_change": worst, "inputs": f"16 N(0,1) images at each of {len(ts)} timesteps",
            "compute": "f32 on CPU, f16-rounded vs f32 weights"}


def finish_unet(name, tr, meta, sampler_desc, sampler, f16_ts):
    out = os.path.join(C.MODELS, name)
    os.makedirs(out, exist_ok=True)
    model_ema = tr.ema
    t0 = time.time()
    xs = sampler(model_ema)
    q = sample_quality(xs)
    q["sampler"] = sampler_desc
    q["sampling_precision"] = "network under bf16 autocast, state f32/f64"
    q["sampling_wall_s"] = round(time.time() - t0, 1)
    meta["sample_quality"] = q
    meta["f16_weights_check"] = f16_check(model_ema, f16_ts)
    save_grid(xs, os.path.join(out, "samples.png"))
    save_unet(model_ema.cpu(), out, meta)
    print(json.dumps({k: meta[k] for k in ("family", "steps", "wall_time_s", "final_loss", "sample_quality") if k in meta}, indent=1), flush=True)


def common_training(recipe, ema=True):
    return {"optimizer": recipe["optimizer"], "lr": recipe["lr"], "batch_size": recipe["batch"],
            "lr_schedule": f"linear warmup {recipe['warmup']} steps, constant, linear decay over the last 40% of the steps to 5%",
            "grad_clip": 1.0, "steps": recipe["steps"], "seed": recipe["seed"],
            "data_order": "epoch permutations seeded by (seed, epoch), drop-last batches; per-step noise seeded by (seed, stage, step)",
            "augmentation": "none (horizontal flips measured harmful for the classifier-FD target: flipping all classes "
                            "moves 1000 real images from FD 2.8 to 177, flipping non-footwear only to 5.9; see README)"}


def train_loop(tr, loss_fn):
    while tr.running():
        tr.update(loss_fn(tr))


# ------------------------------------------------------------------ stages
def cmd_ddpm(a):
    steps, batch, lr, wu = stage_args(a, "ddpm")
    recipe = base_recipe(a, "ddpm", steps, batch, lr, wu, loss="MSE(eps_hat, eps), t ~ U{0..999}")
    if skip("ddpm", recipe, a):
        return
    data, _ = load_padded("train")
    order = EpochOrder(len(data), batch, a.seed)
    model = make_unet(a.seed).train()
    sa, sb, _ = ddpm_sched()
    tr = make_trainer(a, "ddpm", model, recipe)

    def loss(tr):
        g = tr.g()
        x = to_float(data[order(tr.step)])
        t = torch.randint(0, 1000, (len(x),), generator=g).to(C.DEV)
        e = randn(g, *x.shape)
        xt = sa[t].view(-1, 1, 1, 1) * x + sb[t].view(-1, 1, 1, 1) * e
        return F.mse_loss(net(model, xt, t), e)
    train_loop(tr, loss)
    info = tr.finish("ddpm eps-MSE", os.path.join(C.MODELS, "ddpm"))
    meta = base_meta(model, "ddpm", "eps", recipe, info, a)
    meta["schedule"] = {"betas": "linear 1e-4..0.02 (f64)", "T": 1000, "timestep": "integer t in 0..999 passed to UNet"}
    meta["training"] = {"loss": recipe["loss"], **common_training(recipe)}
    finish_unet("ddpm", tr, meta, "DDIM 50 steps eta=0 (t=980,960,..,0; final alpha_bar=1), x0 clipped to [-1,1]",
                lambda m: sample_ddim(m, a.eval_n), [0, 10, 100, 500, 999])
    tr.remove_checkpoint()


def cmd_edm(a):
    steps, batch, lr, wu = stage_args(a, "edm")
    recipe = base_recipe(a, "edm", steps, batch, lr, wu,
                         loss="EDM: lambda(s)*|D(x+s n; s)-x|^2, lambda=(s^2+sd^2)/(s sd)^2, ln s ~ N(-1.2, 1.2^2) clamped to [0.002,80]")
    if skip("edm", recipe, a):
        return
    data, _ = load_padded("train")
    order = EpochOrder(len(data), batch, a.seed)
    model = make_unet(a.seed).train()
    tr = make_trainer(a, "edm", model, recipe)

    def loss(tr):
        g = tr.g()
        x = to_float(data[order(tr.step)])
        sigma = (randn(g, len(x)) * 1.2 - 1.2).exp().clamp(SMIN, SMAX)
        w = (sigma ** 2 + SD ** 2) / (sigma * SD) ** 2
        D = edm_denoise(model, x + randn(g, *x.shape) * sigma.view(-1, 1, 1, 1), sigma)
        return (w.view(-1, 1, 1, 1) * (D - x) ** 2).mean()
    train_loop(tr, loss)
    info = tr.finish("edm weighted denoising loss", os.path.join(C.MODELS, "edm"))
    meta = base_meta(model, "edm", "edm precond sigma_data 0.5 (c_skip=sd^2/(s^2+sd^2), c_out=s*sd/sqrt(s^2+sd^2), c_in=1/sqrt(s^2+sd^2), c_noise=ln(s)/4 passed as UNet timestep)", recipe, info, a)
    meta["schedule"] = {"sigma_min": SMIN, "sigma_max": SMAX, "sigma_data": SD, "s": 1}
    meta["training"] = {"loss": recipe["loss"], **common_training(recipe)}
    finish_unet("edm", tr, meta, "EDM Heun 18 steps (35 NFE), Karras rho=7 in [0.002,80], S_churn=0",
                lambda m: sample_edm_heun(m, a.eval_n), [math.log(s) / 4 for s in (0.002, 0.1, 1.0, 10.0, 80.0)])
    tr.remove_checkpoint()


def rf_loss(model, get_pair):
    def loss(tr):
        g = tr.g()
        x1, z0 = get_pair(tr)
        t = rand(g, len(x1)) * (1 - 1e-3) + 1e-3
        tt = t.view(-1, 1, 1, 1)
        z = tt * x1 + (1 - tt) * z0
        return F.mse_loss(net(model, z, 999.0 * t), x1 - z0)
    return loss


def rf_meta(model, recipe, info, a, which):
    meta = base_meta(model, "rf", "velocity with t_rf*999 (RectifiedFlow code convention: z = t x + (1-t) noise, v = x - noise, net(z, 999 t), noise at t=0)", recipe, info, a)
    meta["schedule"] = {"t_rf_range": [1e-3, 1.0], "unified_tau": "tau = 1 - t_rf"}
    meta["rectified_flow_round"] = which
    meta["training"] = {"loss": recipe["loss"], **common_training(recipe)}
    return meta


PAIRS_FILE = "rf-pairs.safetensors"


def make_pairs(a, rf1, rid1, npairs, bs=250):
    """Reflow pairs (z0_i, x1_i = Euler-20 of 1-RF EMA from z0_i). x1 stored as u8 like the data set; z0_i is
    regenerated from (seed, i). Resumable: CKPT_DIR/rf-pairs.safetensors is rewritten with the pairs done so far."""
    from safetensors import safe_open
    from safetensors.torch import save_file
    path = os.path.join(C.CKPT_DIR, PAIRS_FILE)
    meta = {"rf1_recipe_id": rid1, "npairs": npairs, "seed": a.seed + 1, "sampler": "1-RF EMA, Euler 20 steps, bf16 autocast",
            "storage": "x1 as u8 (round((x+1)*127.5), clamped), z0_i = randn(1,32,32) from generator seed_of(seed, 'pair', i)"}
    xs = torch.zeros(0, 1, 32, 32, dtype=torch.uint8)
    wall = 0.0
    if os.path.exists(path):
        with safe_open(path, framework="pt") as f:
            m = json.loads(f.metadata()["pairs"])
            if {k: m.get(k) for k in meta} == meta:
                xs, wall = f.get_tensor("x1"), m.get("wall_s", 0.0)
            else:
                print(f"[pairs] {path} is for another 1-RF/recipe: regenerating", flush=True)
    if len(xs) >= npairs:
        return xs[:npairs], wall

    def save(xs, wall):
        m = dict(meta, done=len(xs), wall_s=round(wall, 1))
        atomic_write(path, lambda tmp: save_file({"x1": xs.contiguous()}, tmp, metadata={"pairs": json.dumps(m)}))
        print(f"[pairs] {len(xs)}/{npairs} pairs saved to {path}", flush=True)
    print(f"[pairs] generating from {len(xs)} to {npairs}", flush=True)
    t0, tsave = time.time(), time.time()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, C._on_signal)
    while len(xs) < npairs:
        i = len(xs)
        idx = range(i, min(i + bs, npairs))
        x = rf_euler(rf1, pair_noise(a.seed + 1, idx)).cpu()
        xs = torch.cat([xs, ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)])
        stop = C._STOP["signal"] is not None or os.path.exists(os.path.join(C.CKPT_DIR, "STOP"))
        if stop or time.time() - tsave > a.ckpt_minutes * 60 or len(xs) >= npairs:
            save(xs, wall + time.time() - t0)
            tsave = time.time()
        if stop:
            raise Stopped("pairs")
    return xs, wall + time.time() - t0


def cmd_rf(a):
    steps, batch, lr, wu = stage_args(a, "rf")
    r1 = base_recipe(a, "rf1", steps, batch, lr, wu, loss="MSE(v_hat, x - noise), t ~ U[1e-3, 1]")
    rid1 = recipe_id(r1)
    if not skip("rf1", r1, a):
        data, _ = load_padded("train")
        order = EpochOrder(len(data), batch, a.seed)
        model = make_unet(a.seed).train()
        tr = make_trainer(a, "rf1", model, r1)

        def pair1(tr):
            x = to_float(data[order(tr.step)])
            return x, randn(tr.g("noise"), *x.shape)
        train_loop(tr, rf_loss(model, pair1))
        info = tr.finish("1-rf velocity MSE", os.path.join(C.MODELS, "rf1"))
        meta = rf_meta(model, r1, info, a, "1-rectified flow (trained on independent noise/data pairs)")
        finish_unet("rf1", tr, meta, "RF Euler 20 steps from t_rf=1e-3 to 1 (dt=1/20)",
                    lambda m: sample_rf_euler(m, a.eval_n), [0.999, 100, 500, 999])
        tr.remove_checkpoint()
        del data, model, tr
    # 2-rectified flow, initialised from the 1-RF EMA weights, trained on its pairs
    r2 = base_recipe(a, "rf", a.reflow_steps, batch, a.reflow_lr, 200, loss="MSE(v_hat, x1 - z0) on reflow pairs, t ~ U[1e-3, 1]",
                     init="1-RF EMA weights", rf1_recipe_id=rid1, reflow_pairs=a.pairs)
    if skip("rf", r2, a):
        return
    rf1 = load_unet("rf1")
    t0 = time.time()
    xs, pair_wall = make_pairs(a, rf1, rid1, a.pairs)
    print(f"[pairs] {len(xs)} reflow pairs ({pair_wall:.0f}s of generation in all)", flush=True)
    model2 = copy.deepcopy(rf1).train().requires_grad_(True)
    del rf1
    order = EpochOrder(len(xs), batch, a.seed, stream="pair-order")
    tr2 = make_trainer(a, "rf", model2, r2)

    def pair2(tr):
        idx = order(tr.step)
        return xs[idx].to(C.DEV).float() / 127.5 - 1.0, pair_noise(a.seed + 1, idx)
    train_loop(tr2, rf_loss(model2, pair2))
    info2 = tr2.finish("2-rf velocity MSE", os.path.join(C.MODELS, "rf"))
    meta2 = rf_meta(model2, r2, info2, a, "2-rectified flow (one reflow round)")
    meta2["training"].update({"init": "1-RF EMA weights (rf1)", "reflow_pairs": a.pairs,
                              "reflow_pair_sampler": "1-RF EMA, Euler 20 steps, z0 seeds (seed+1, 'pair', i), x1 stored as u8",
                              "reflow_pair_generation_wall_s": round(pair_wall, 1)})
    rf1_meta = json.load(open(os.path.join(C.MODELS, "rf1", "gddcm.json")))
    meta2["stage1"] = {k: rf1_meta.get(k) for k in ("steps", "wall_time_s", "recipe_id", "final_loss")}
    meta2["total_wall_time_s_including_stage1_and_pairs"] = round(rf1_meta["wall_time_s"] + pair_wall + info2["wall_time_s"], 1)
    finish_unet("rf", tr2, meta2, "RF Euler 20 steps from t_rf=1e-3 to 1 (dt=1/20)",
                lambda m: sample_rf_euler(m, a.eval_n), [0.999, 100, 500, 999])
    tr2.remove_checkpoint()
    p = os.path.join(C.CKPT_DIR, PAIRS_FILE)
    if os.path.exists(p):
        os.remove(p)


def cmd_cm(a):
    steps, batch, lr, wu = stage_args(a, "cm")
    edm_meta = json.load(open(os.path.join(C.MODELS, "edm", "gddcm.json")))
    N = a.N
    c_hub = 0.00054 * math.sqrt(32 * 32)
    recipe = base_recipe(a, "cm", steps, batch, lr, wu, teacher_recipe_id=edm_meta.get("recipe_id", "pre-v2"),
                         N=N, mu=a.mu, init="teacher (EDM EMA) weights",
                         loss=f"pseudo-Huber sqrt(|f(x_t(n+1)) - f_target(x_t(n))|^2 + c^2) - c, c=0.00054*sqrt(1024)={c_hub:.5f}, lambda=1")
    if skip("cm", recipe, a):
        return
    data, _ = load_padded("train")
    order = EpochOrder(len(data), batch, a.seed)
    teacher = load_unet("edm").requires_grad_(False)
    model = load_unet("edm").train().requires_grad_(True)
    target = copy.deepcopy(model).eval().requires_grad_(False)
    ts = karras(N).flip(0).float().to(C.DEV)  # ascending: ts[0]=0.002 .. ts[N-1]=80
    tr = make_trainer(a, "cm", model, recipe, extra={"target": target})

    def loss(tr):
        g = tr.g()
        x = to_float(data[order(tr.step)])
        B = len(x)
        n = torch.randint(0, N - 1, (B,), generator=g).to(C.DEV)
        tn, tn1 = ts[n], ts[n + 1]
        xt1 = x + tn1.view(-1, 1, 1, 1) * randn(g, *x.shape)
        with torch.no_grad():
            # EDM Heun step of the teacher's PF-ODE from tn1 to tn
            d = (xt1 - edm_denoise(teacher, xt1, tn1)) / tn1.view(-1, 1, 1, 1)
            h = (tn - tn1).view(-1, 1, 1, 1)
            xe = xt1 + h * d
            d2 = (xe - edm_denoise(teacher, xe, tn)) / tn.view(-1, 1, 1, 1)
            xtn = xt1 + h * 0.5 * (d + d2)
            ytgt = cm_f(target, xtn, tn)
        y = cm_f(model, xt1, tn1)
        return (((y - ytgt) ** 2).flatten(1).sum(1) + c_hub ** 2).sqrt().sub(c_hub).mean()

    while tr.running():
        tr.update(loss(tr))
        with torch.no_grad():
            for pt, p in zip(target.parameters(), model.parameters()):
                pt.lerp_(p, 1 - a.mu)
    info = tr.finish("cm pseudo-Huber", os.path.join(C.MODELS, "cm"))
    meta = base_meta(model, "cm", "consistency sigma_min 0.002 sigma_data 0.5 c_noise ln(s)/4 (c_skip=sd^2/((s-smin)^2+sd^2), c_out=sd(s-smin)/sqrt(s^2+sd^2), c_in=1/sqrt(s^2+sd^2))", recipe, info, a)
    meta["schedule"] = {"sigma_min": SMIN, "sigma_max": SMAX, "sigma_data": SD, "s": 1}
    meta["training"] = {"method": "consistency distillation from edm (EDM teacher, Heun step between adjacent points)",
                        "teacher_recipe_id": recipe["teacher_recipe_id"], "init": recipe["init"],
                        "grid": f"Karras rho=7, N={N} points in [0.002, 80]", "loss": recipe["loss"],
                        "target_network": f"EMA mu={a.mu} of the online network", **common_training(recipe)}
    finish_unet("cm", tr, meta, "one step: x = 80*n, f(x, 80)", lambda m: sample_cm(m, a.eval_n),
                [math.log(s) / 4 for s in (0.002, 0.1, 1.0, 10.0, 80.0)])
    tr.remove_checkpoint()


def cmd_classifier(a):
    from safetensors.torch import save_file
    steps, batch, lr, wu = stage_args(a, "classifier")
    recipe = base_recipe(a, "classifier", steps, batch, lr, wu, loss="cross-entropy", architecture="Classifier v1 (unchanged)")
    if skip("classifier", recipe, a):
        return
    data, lab = load_padded("train")
    xt, lt = load_padded("test")
    order = EpochOrder(len(data), batch, a.seed)
    torch.manual_seed(a.seed)
    model = Classifier().to(C.DEV).train()
    out = os.path.join(C.MODELS, "classifier")
    tr = make_trainer(a, "classifier", model, recipe, ema=False)

    def loss(tr):
        idx = order(tr.step)
        with C.autocast():
            logits = model(to_float(data[idx]))
        return F.cross_entropy(logits.float(), lab[idx].to(C.DEV))
    train_loop(tr, loss)
    info = tr.finish("classifier CE", out)
    model = model.cpu().eval()
    with torch.no_grad():
        pred = torch.cat([model(xt[i:i + 1000].float() / 127.5 - 1).argmax(1) for i in range(0, len(xt), 1000)])
    acc = float((pred == lt).float().mean())
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, os.path.join(out, "model.safetensors"))
    # floor for the Frechet distance: 1000 real train images vs the test set
    clf = load_classifier()
    C._REFS.clear()
    sel = data[torch.randperm(len(data), generator=torch.Generator().manual_seed(1))[:1000]]
    ftr, ptr = classifier_feats(clf, sel.float() / 127.5 - 1)
    ref = reference_feats(clf)
    fd_real = frechet(ftr, ref)
    fd_test_subset = frechet(ref[torch.randperm(len(ref), generator=torch.Generator().manual_seed(1))[:1000].numpy()], ref)
    cfg = {"name": "fmnist_classifier", "purpose": "offline stand-in for Inception features (NOT Inception); 128-d features = ReLU(fc1(.))",
           "input": "[B,1,32,32] float32 in [-1,1], Fashion-MNIST padded 28->32 with 2 px of -1",
           "architecture": ["conv1 Conv2d(1,32,3,pad 1) ReLU", "conv2 Conv2d(32,32,3,pad 1) ReLU", "maxpool 2",
                            "conv3 Conv2d(32,64,3,pad 1) ReLU", "conv4 Conv2d(64,64,3,pad 1) ReLU", "maxpool 2",
                            "flatten NCHW (64*8*8=4096)", "fc1 Linear(4096,128) ReLU -> features", "fc2 Linear(128,10) -> logits"],
           "keys": list(model.state_dict().keys()), "weights_dtype": "float32",
           "labels": ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"],
           "test_accuracy": acc, "test_images": len(xt), "params": nparams(model),
           "forward_gflop_per_image": round(count_flops(model, lambda: model(torch.zeros(1, 1, 32, 32))) / 1e9, 4),
           "frechet_distance_1000_real_train_vs_10000_test": fd_real,
           "frechet_distance_1000_test_subset_vs_10000_test": fd_test_subset, "mean_max_softmax_1000_real_train": float(ptr.max(1).mean()),
           "recipe_id": recipe_id(recipe), "recipe": recipe,
           "training": {"loss": "cross-entropy", **common_training(recipe), "epochs": info["steps"] * batch / len(data),
                        "weights": "final (no EMA)", **info},
           "data": DATA_DESC, "hardware": hardware()}
    cfg["training"]["augmentation"] = "none (the classifier is the FD feature net: it must stay sensitive to orientation and position)"
    json.dump(cfg, open(os.path.join(out, "config.json"), "w"), indent=2)
    print(json.dumps({k: cfg[k] for k in ("test_accuracy", "frechet_distance_1000_real_train_vs_10000_test", "mean_max_softmax_1000_real_train")}), flush=True)
    tr.remove_checkpoint()


def cmd_examples(a):
    from PIL import Image
    img, lab = load_idx("test")
    d = os.path.join(REPO, "assets", "examples")
    os.makedirs(d, exist_ok=True)
    for i in range(8):
        Image.fromarray(img[i], mode="L").save(os.path.join(d, f"fmnist_test_{i}_{int(lab[i])}.png"))
    print(sorted(os.listdir(d)))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=["classifier", "ddpm", "edm", "rf", "cm", "examples"])
    p.add_argument("--steps", type=int, default=None, help="optimizer steps (default: the stage's CPU recipe)")
    p.add_argument("--batch", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--warmup", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-n", type=int, default=1000)
    p.add_argument("--ema-halflife-kimg", type=float, default=500.0)
    p.add_argument("--ema-ramp", type=float, default=0.05)
    p.add_argument("--reflow-steps", type=int, default=10000)
    p.add_argument("--reflow-lr", type=float, default=2e-4)
    p.add_argument("--pairs", type=int, default=20000)
    p.add_argument("--N", type=int, default=18)
    p.add_argument("--mu", type=float, default=0.95)
    p.add_argument("--resume", action="store_true", default=True, help="resume from the checkpoint (the default)")
    p.add_argument("--fresh", action="store_true", help="ignore (and overwrite) the checkpoint and any finished model")
    p.add_argument("--ckpt-minutes", type=float, default=5.0, help="checkpoint period (wall minutes)")
    p.add_argument("--stop-after-minutes", type=float, default=None, help="write the checkpoint and exit 75 after this long")
    p.add_argument("--stop-at-step", type=int, default=None, help="write the checkpoint and exit 75 at this step")
    p.add_argument("--no-moments", action="store_true", help="leave the Adam moments out of the checkpoint (resume re-warms the LR)")
    p.add_argument("--rewarm", type=int, default=200, help="LR re-warmup steps after a resume without Adam moments")
    p.add_argument("--log-every", type=int, default=20, help="loss log row every N steps (mean over them)")
    p.add_argument("--print-every", type=int, default=200)
    p.add_argument("--out-root", default=None, help="folder of the finished models (default models/ or $GDDCM_TRAIN_OUT)")
    p.add_argument("--ckpt-dir", default=None, help="checkpoint folder (default tools/train/checkpoints or $GDDCM_TRAIN_CKPT)")
    p.add_argument("--device", default=None, help="cpu (default) or cuda")
    a = p.parse_args()
    set_paths(a.out_root, a.ckpt_dir, a.device)
    print(f"{time.strftime('%H:%M:%S')} {a} out={C.MODELS} ckpt={C.CKPT_DIR} device={C.DEV}", flush=True)
    try:
        globals()["cmd_" + a.what](a)
    except Stopped:
        sys.exit(EXIT_STOPPED)
    print(f"{time.strftime('%H:%M:%S')} done", flush=True)


if __name__ == "__main__":
    main()
