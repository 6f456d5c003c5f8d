"""Re-search a bundled model's shipped operating points for new weights (issue 18: the ladders were searched
on the v1 models; retrained weights need their settings searched again).

Each point is searched again where it stands: same K, N, atoms, p (fixed: the point's name says it), x_ref and
score region, from the point's own settings as the start, with the objective and validation set it was made
for. Those come from the trial log of the search that made it (the log under results/ whose best settings are
the point's): PSNR for the ladder rungs, the classifier Frechet distance for each model's first Algorithm 2
profile (point 0), the classifier's NLL of the true label on 128 images for the "-class" point. One `gddcm search` per point, one profile + trial log per point in OUT, so the job is resumable: a point
whose profile exists for the same weights is skipped. `assemble` then writes OUT/operating_points.json: the same
ids, names, rate-control flags and default, with the searched settings, and prints the old settings' score on
the new weights next to the new best.

    python3 tools/research_ladder.py plan fmnist-edm
    python3 tools/research_ladder.py run fmnist-edm --out results/ladder-v2/fmnist-edm [--weights DIR] [--points 1,2]
    python3 tools/research_ladder.py assemble fmnist-edm --out results/ladder-v2/fmnist-edm
    cp results/ladder-v2/fmnist-edm/operating_points.json models/edm/   # after reading the table

The budget (--trials, --refine) is the same for every point; the defaults (4 random trials and 1 round of
coordinate refinement) assume the old settings are a good start. --val overrides the validation images of all
but the class-kept points.
Needs only the gddcm binary (no PyTorch).
"""
import argparse, hashlib, json, os, subprocess, sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def gddcm_json(binary, *args):
    out = subprocess.run([binary, *args], check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def model_entry(binary, name):
    for m in gddcm_json(binary, "models", "--json"):
        if m["name"] == name:
            if not m.get("bundled_dir"):
                raise SystemExit(f"{name} is not a bundled model: only bundled models ship operating points")
            return m
    raise SystemExit(f"unknown model {name!r} (see `gddcm models`)")


def weights_file(entry, weights):
    d = weights or os.path.join(ROOT, "models", entry["bundled_dir"])
    if os.path.isfile(d):
        return d
    for f in entry["files"]:
        if f.endswith(".safetensors") or f.endswith(".bin"):
            p = os.path.join(d, f)
            if os.path.isfile(p):
                return p
    raise SystemExit(f"{d}: no weights file of {entry['name']} ({', '.join(entry['files'])})")


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for b in iter(lambda: f.read(1 << 20), b""):
            h.update(b)
    return h.hexdigest()


def registry(entry):
    path = os.path.join(ROOT, "models", entry["bundled_dir"], "operating_points.json")
    if not os.path.isfile(path):
        raise SystemExit(f"{path}: {entry['name']} ships no operating points")
    with open(path) as f:
        return path, json.load(f)


# What a setting means when a profile leaves it out.
IMPLIED = {"x_ref": "zeros", "score_region": "input", "atoms": "single"}


def same_settings(point, best):
    """Whether a search's best settings are the point's: every setting the point states, equal."""
    def eq(x, y):
        if isinstance(x, float) or isinstance(y, float):
            return x is not None and y is not None and abs(x - y) <= 1e-9 * max(1.0, abs(x))
        return x == y
    return all(eq(v, best.get(k, IMPLIED.get(k))) for k, v in point.items() if v is not None)


def provenance(model, settings):
    """The search that made a point: the trial log under results/ whose best settings are the point's. Its
    objective and validation set are the point's purpose (PSNR for most; a perceptual stand-in for the first
    Algorithm 2 profiles; the class kept for the '-class' points)."""
    import glob
    for f in sorted(glob.glob(os.path.join(ROOT, "results", "**", "*.trials.json"), recursive=True)):
        try:
            with open(f) as fh:
                d = json.load(fh)
        except (OSError, ValueError):
            continue
        if d.get("model") == model and isinstance(d.get("best"), dict) and same_settings(settings, d["best"]):
            return os.path.relpath(f, ROOT), d["objective"].replace("_", "-"), d["validation"]["images"]
    return None, "neg-psnr", 16


def plan(entry, reg, a):
    """One search per point: (id, name, start settings, gddcm search arguments, where the point came from)."""
    wanted = None if not a.points else {int(x) for x in a.points.split(",")}
    rows = []
    for p in reg["points"]:
        if wanted is not None and p["id"] not in wanted:
            continue
        s = p["settings"]
        origin, objective, val = provenance(entry["name"], s)
        if a.val is not None and objective != "classifier-nll":
            val = a.val
        args = ["-m", entry["name"], "-k", str(s["k"]), "-n", str(s["n"]), "--atoms", s.get("atoms", "single"),
                "-p", repr(float(s.get("p", 0.0))), "--objective", objective,
                "--val", str(val), "--trials", str(a.trials), "--refine", str(a.refine), "--batch", str(a.batch)]
        if float(s.get("p", 0.0)) > 0:
            args.append("--fix-p")
        if a.weights:
            args += ["--weights", a.weights]
        rows.append((p["id"], p["name"], s, args, origin))
    missing = wanted - {r[0] for r in rows} if wanted else set()
    if missing:
        raise SystemExit(f"{entry['name']} ships no point(s) {sorted(missing)}; it has {[p['id'] for p in reg['points']]}")
    return rows


def paths(out, pid):
    return (os.path.join(out, f"point-{pid}.start.json"), os.path.join(out, f"point-{pid}.json"),
            os.path.join(out, f"point-{pid}.trials.json"))


def done(out, pid, sha):
    _, prof, log = paths(out, pid)
    if not (os.path.isfile(prof) and os.path.isfile(log)):
        return False
    with open(log) as f:
        return json.load(f).get("weights_sha256") == sha


def cmd_plan(entry, reg, a):
    for pid, name, _, args, origin in plan(entry, reg, a):
        print(f"point {pid:>2} {name:<28} made by {origin or 'no search log under results/ (PSNR assumed)'}\n"
              f"         gddcm search {' '.join(args)} --start point-{pid}.start.json")


def cmd_run(entry, reg, a):
    rows = plan(entry, reg, a)  # every argument checked before the first search
    sha = sha256(weights_file(entry, a.weights))
    os.makedirs(a.out, exist_ok=True)
    for pid, name, settings, args, _ in rows:
        start, prof, log = paths(a.out, pid)
        if done(a.out, pid, sha):
            print(f"point {pid} ({name}): searched already for these weights, {prof}", flush=True)
            continue
        with open(start, "w") as f:
            json.dump(settings, f, indent=1)
        # gddcm writes the profile and the log atomically: an interrupted search leaves no profile, and runs again.
        cmd = [a.gddcm, "search", *args, "--start", start, "-o", prof, "--log", log, "--quiet"]
        print(f"point {pid} ({name}): {' '.join(cmd)}", flush=True)
        r = subprocess.run(cmd)
        if r.returncode != 0:
            raise SystemExit(f"point {pid}: gddcm search failed with status {r.returncode}")
        if not done(a.out, pid, sha):
            # e.g. fmnist-edm runs from the copy embedded in the binary, which a new models/edm does not change
            raise SystemExit(f"point {pid}: gddcm searched other weights than {weights_file(entry, a.weights)} "
                             f"(see {log}, weights_sha256): rebuild gddcm (cargo build --release) or pass --weights")


def cmd_assemble(entry, reg_path_reg, a):
    reg_path, reg = reg_path_reg
    sha = sha256(weights_file(entry, a.weights))
    new, rows = dict(reg, points=[]), []
    for p in reg["points"]:
        _, prof, log = paths(a.out, p["id"])
        if not done(a.out, p["id"], sha):
            raise SystemExit(f"point {p['id']} ({p['name']}): no search for these weights in {a.out} (run first)")
        with open(prof) as f:
            settings = json.load(f)
        with open(log) as f:
            head = json.load(f)
        settings = {k: v for k, v in settings.items() if v is not None}
        new["points"].append(dict(p, settings=settings))
        rows.append((p["id"], p["name"], head["objective"], head["base_score"], head["best_score"], head.get("seconds", 0)))
    out = os.path.join(a.out, "operating_points.json")
    with open(out + ".tmp", "w") as f:
        json.dump(new, f, indent=2)
        f.write("\n")
    os.replace(out + ".tmp", out)
    print(f"| point | name | objective | old settings | searched | gain | search s |\n|---|---|---|---|---|---|---|")
    for pid, name, obj, base, best, sec in rows:
        print(f"| {pid} | {name} | {obj} | {base:.4f} | {best:.4f} | {base - best:+.4f} | {sec:.0f} |")
    print(f"\n{out} (replaces {reg_path} once copied there; rate-control flags and default kept as shipped)")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=["plan", "run", "assemble"])
    p.add_argument("model", help="a bundled model, e.g. fmnist-edm")
    p.add_argument("--out", default=None, help="folder of the per-point profiles and logs (default results/ladder-v2/MODEL)")
    p.add_argument("--weights", default=None, help="search these weights (a folder) instead of the installed ones")
    p.add_argument("--points", default=None, help="only these ids, e.g. 1,2,3 (default: every shipped point)")
    p.add_argument("--val", type=int, default=None,
                   help="validation images of every point but the class-kept ones (default: as the point was made)")
    p.add_argument("--trials", type=int, default=4, help="random trials per point")
    p.add_argument("--refine", type=int, default=1, help="rounds of coordinate refinement per point")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--gddcm", default=os.path.join(ROOT, "target", "release", "gddcm"), help="the gddcm binary")
    a = p.parse_args()
    if not os.access(a.gddcm, os.X_OK):
        raise SystemExit(f"{a.gddcm}: no gddcm binary (cargo build --release, or --gddcm PATH)")
    if a.weights and not os.path.exists(a.weights):
        raise SystemExit(f"--weights {a.weights}: no such file or folder")
    a.out = a.out or os.path.join(ROOT, "results", "ladder-v2", a.model)
    entry = model_entry(a.gddcm, a.model)
    reg_path, reg = registry(entry)
    if a.what == "plan":
        cmd_plan(entry, reg, a)
    elif a.what == "run":
        cmd_run(entry, reg, a)
    else:
        cmd_assemble(entry, (reg_path, reg), a)


if __name__ == "__main__":
    sys.exit(main())
