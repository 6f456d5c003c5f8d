"""Land finished models from a training output folder ($GDDCM_TRAIN_OUT, e.g. tools/train/checkpoints/models)
into the repository's models/ (issue 18). Two commands, run from the checkout:

    python tools/train/land.py dtype-check edm [--point 11] [--limit 32]
        Measures with the Rust codec whether f16 weights are harmless: the same images encoded and decoded at a
        shipped operating point with the f32 weights and with their f16 rounding (each codec run end to end on
        its own weights), mean PSNR / SSIM / bytes of both and the largest per-image PSNR change. Writes
        <out>/<model>/dtype_check.json; nothing in models/ changes.
    python tools/train/land.py install edm [--dtype f16|f32]
        Copies the model into models/<model>/: config.json, the weights (f16 only if a dtype check is there and
        passed, or with --force), gddcm.json (weights_dtype and the check recorded), loss.csv/png, train.log,
        samples.png. Files that belong to the codec, not to the training (x_ref.safetensors, profile.json,
        operating_points.json) stay: search them again with tools/research_ladder.py. rf1 (the reflow's start,
        not a gddcm model) lands without weights. The classifier lands as models/classifier.

After `install edm`, rebuild gddcm: fmnist-edm is embedded in the binary.
Needs numpy, safetensors and Pillow (the training venv), not PyTorch.
"""
import argparse, json, os, shutil, subprocess, sys, tempfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ZOO = {"edm": "fmnist-edm", "ddpm": "fmnist-ddpm", "cm": "fmnist-cm", "rf": "fmnist-rf"}
WEIGHTS = "diffusion_pytorch_model.safetensors"
# A dtype change is harmless when no image's PSNR moves by more than this and the mean by less than a tenth of it.
MAX_IMAGE_DB, MAX_MEAN_DB = 0.5, 0.05


def f16_copy(src, dst):
    from safetensors import safe_open
    from safetensors.numpy import save_file
    with safe_open(src, framework="numpy") as f:
        meta, t = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    big = {k: float(np.abs(v).max()) for k, v in t.items() if v.size and np.abs(v).max() > 65504}
    if big:
        raise SystemExit(f"{src}: weights beyond the f16 range: {big}")
    save_file({k: v.astype(np.float16) for k, v in t.items()}, dst + ".tmp", metadata=meta)
    os.replace(dst + ".tmp", dst)


def source(a, name):
    d = os.path.join(a.train_out, name)
    if not os.path.isdir(d):
        raise SystemExit(f"{d}: no finished model '{name}' (train it: tools/train/run_resumable.sh {name})")
    return d


def eval_run(a, model, weights_dir, work):
    """gddcm eval at the point, reconstructions kept; the report and each image's PSNR against its original."""
    keep, out_json = os.path.join(work, "keep"), os.path.join(work, "report.json")
    cmd = [a.gddcm, "eval", "-m", model, "--weights", weights_dir, "--point", str(a.point), "--limit", str(a.limit),
           "--metrics", "pixel", "--batch", "16", "--quiet", "--json", out_json, "--keep", keep]
    print(" ".join(cmd), flush=True)
    if subprocess.run(cmd, stdout=subprocess.DEVNULL).returncode != 0:
        raise SystemExit(f"gddcm eval failed (above) on {weights_dir}")
    from PIL import Image
    originals = fmnist_test(a.limit)
    psnr = []
    for i, x in enumerate(originals):
        y = np.asarray(Image.open(os.path.join(keep, f"fmnist_t10k_{i:05d}.png")).convert("L"), dtype=np.float64)
        mse = float(np.mean((x.astype(np.float64) - y) ** 2))
        psnr.append(100.0 if mse == 0 else min(100.0, float(10 * np.log10(255.0 ** 2 / mse))))
    with open(out_json) as f:
        report = json.load(f)
    return {k: report[k] for k in ("psnr", "ssim", "file_bpp", "bpp", "nfe") if k in report}, psnr


def fmnist_test(n):
    import gzip
    path = os.path.join(os.environ.get("FMNIST_DIR", "/usr/share/datasets/fashion-mnist"), "t10k-images-idx3-ubyte.gz")
    with gzip.open(path) as f:
        data = f.read()
    return np.frombuffer(data, dtype=np.uint8, offset=16).reshape(-1, 28, 28)[:n]


def cmd_dtype_check(a):
    if a.name not in ZOO:
        raise SystemExit(f"dtype-check is for the codec's models {sorted(ZOO)}, not {a.name!r}")
    src = source(a, a.name)
    # The codec's files (the points, the profile, x_ref) are read from beside the weights.
    codec_files = [os.path.join(ROOT, "models", a.name, f) for f in ("x_ref.safetensors", "profile.json", "operating_points.json")]
    with tempfile.TemporaryDirectory() as tmp:
        runs = {}
        for dtype in ("f32", "f16"):
            d = os.path.join(tmp, dtype)
            os.makedirs(d)
            shutil.copy(os.path.join(src, "config.json"), d)
            if dtype == "f32":
                shutil.copy(os.path.join(src, WEIGHTS), d)
            else:
                f16_copy(os.path.join(src, WEIGHTS), os.path.join(d, WEIGHTS))
            for f in codec_files:
                if os.path.isfile(f):
                    shutil.copy(f, d)
            runs[dtype] = eval_run(a, ZOO[a.name], d, os.path.join(tmp, dtype + "-eval"))
    (s32, p32), (s16, p16) = runs["f32"], runs["f16"]
    diffs = [b - c for b, c in zip(p16, p32)]
    worst, mean = max(abs(x) for x in diffs), sum(diffs) / len(diffs)
    res = {"model": ZOO[a.name], "point": a.point, "images": len(p32), "f32": s32, "f16": s16, "mean_psnr_change_db": mean, "max_abs_image_psnr_change_db": worst,
           "harmless": worst <= MAX_IMAGE_DB and abs(mean) <= MAX_MEAN_DB,
           "rule": f"harmless: no image's PSNR moves by more than {MAX_IMAGE_DB} dB and the mean by at most {MAX_MEAN_DB} dB",
           "how": "gddcm eval --point P on the first test images, once with the f32 weights and once with their f16 "
                  "rounding (encoder and decoder both on the same weights, as a user of either file would run)"}
    out = os.path.join(src, "dtype_check.json")
    with open(out + ".tmp", "w") as f:
        json.dump(res, f, indent=1)
    os.replace(out + ".tmp", out)
    print(json.dumps(res, indent=1))


def cmd_install(a):
    src = source(a, a.name)
    dst = os.path.join(a.models, a.name)
    os.makedirs(dst, exist_ok=True)
    if a.name == "classifier":
        for f in ("config.json", "model.safetensors", "loss.csv", "loss.png", "train.log"):
            if os.path.isfile(os.path.join(src, f)):
                shutil.copy(os.path.join(src, f), os.path.join(dst, f))
        print(f"{src} -> {dst}")
        return
    with open(os.path.join(src, "gddcm.json")) as f:
        meta = json.load(f)
    ship_weights = a.name != "rf1"
    if ship_weights and a.dtype == "f16":
        check = os.path.join(src, "dtype_check.json")
        if not os.path.isfile(check) and not a.force:
            raise SystemExit(f"no {check}: run `land.py dtype-check {a.name}` first (or --force, or --dtype f32)")
        res = json.load(open(check)) if os.path.isfile(check) else None
        if res is not None and not res["harmless"] and not a.force:
            raise SystemExit(f"{check}: f16 is not harmless here ({res['max_abs_image_psnr_change_db']:.3f} dB on one "
                             f"image): install with --dtype f32")
        f16_copy(os.path.join(src, WEIGHTS), os.path.join(dst, WEIGHTS))
        meta["weights_dtype"] = "float16"
        meta["weights_dtype_note"] = "EMA weights trained in f32, rounded to f16 when landed (tools/train/land.py)"
        if res is not None:
            meta["f16_codec_check"] = res
    elif ship_weights:
        shutil.copy(os.path.join(src, WEIGHTS), os.path.join(dst, WEIGHTS))
    else:
        if os.path.exists(os.path.join(dst, WEIGHTS)):
            os.remove(os.path.join(dst, WEIGHTS))
        meta["weights_note"] = "not shipped: rf1 is the start of the reflow, not a gddcm model; retrain with train.py rf"
    for f in ("config.json", "loss.csv", "loss.png", "train.log", "samples.png"):
        if os.path.isfile(os.path.join(src, f)):
            shutil.copy(os.path.join(src, f), os.path.join(dst, f))
    tmp = os.path.join(dst, "gddcm.json.tmp")
    with open(tmp, "w") as f:
        json.dump(meta, f, indent=2)
    os.replace(tmp, os.path.join(dst, "gddcm.json"))
    print(f"{src} -> {dst} ({meta.get('weights_dtype')})")
    if a.name == "edm":
        print("fmnist-edm is embedded in gddcm: cargo build --release before using it")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=["dtype-check", "install"])
    p.add_argument("name", choices=["edm", "ddpm", "cm", "rf", "rf1", "classifier"])
    p.add_argument("--train-out", default=os.environ.get("GDDCM_TRAIN_OUT", os.path.join(ROOT, "tools/train/checkpoints/models")))
    p.add_argument("--models", default=os.path.join(ROOT, "models"), help="where models land (default the repository's models/)")
    p.add_argument("--dtype", choices=["f16", "f32"], default="f16")
    p.add_argument("--force", action="store_true", help="install f16 without a passed dtype check")
    p.add_argument("--point", type=int, default=None, help="operating point of the check (default: the model's default)")
    p.add_argument("--limit", type=int, default=32, help="test images of the check")
    p.add_argument("--gddcm", default=os.path.join(ROOT, "target", "release", "gddcm"))
    a = p.parse_args()
    a.train_out = os.path.abspath(a.train_out)
    if a.what == "dtype-check":
        if not os.access(a.gddcm, os.X_OK):
            raise SystemExit(f"{a.gddcm}: no gddcm binary (cargo build --release, or --gddcm PATH)")
        if a.point is None:
            reg = json.load(open(os.path.join(ROOT, "models", a.name, "operating_points.json")))
            a.point = reg.get("default", reg["points"][-1]["id"])
        cmd_dtype_check(a)
    else:
        cmd_install(a)


if __name__ == "__main__":
    sys.exit(main())
