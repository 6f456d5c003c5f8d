"""Export the EMA weights of a training checkpoint as a diffusers UNet2DModel folder, so a run that is
still going can be measured by the Rust sampler:

    python tools/train/snapshot.py tools/train/checkpoints/edm.safetensors /tmp/edm-snap
    gddcm sample -m fmnist-edm --weights /tmp/edm-snap -n 1000 --quality --json q.json

Works on both checkpoint forms (full: `ema.*`; compact: `ema_delta.*` + `model.*`, see common.Trainer).
Reads the checkpoint only; the training run is not disturbed. The folder gets config.json,
diffusion_pytorch_model.safetensors (f32) and snapshot.json (step, recipe id, source file).
"""
import argparse, json, os, sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import atomic_write, make_unet, write_json  # noqa: E402


def ema_state(path):
    from safetensors import safe_open
    with safe_open(path, framework="pt") as f:
        state = json.loads(f.metadata()["gddcm_state"])
        keys = list(f.keys())
        full = {k[len("ema."):]: f.get_tensor(k).float() for k in keys if k.startswith("ema.")}
        if full:
            return full, state
        delta = {k[len("ema_delta."):]: f.get_tensor(k).float() for k in keys if k.startswith("ema_delta.")}
        if not delta:
            raise SystemExit(f"{path}: no EMA in this checkpoint (neither ema.* nor ema_delta.* tensors)")
        return {k: f.get_tensor("model." + k).float() + d for k, d in delta.items()}, state


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", help="a Trainer checkpoint, e.g. tools/train/checkpoints/edm.safetensors")
    p.add_argument("out", help="folder to write (created; its files are replaced)")
    a = p.parse_args()
    if not os.path.isfile(a.checkpoint):
        raise SystemExit(f"{a.checkpoint}: no such checkpoint file")
    ema, state = ema_state(a.checkpoint)
    net = state["recipe"].get("network")
    if net is None:
        raise SystemExit(f"{a.checkpoint}: stage {state['name']!r} has no UNet (recipe without 'network')")
    model = make_unet()
    missing, unexpected = model.load_state_dict(ema, strict=False)
    if missing or unexpected:
        raise SystemExit(f"{a.checkpoint}: EMA does not fit this trainer's UNet: missing {missing[:3]}, "
                         f"unexpected {unexpected[:3]} (recipe network {net})")
    os.makedirs(a.out, exist_ok=True)
    tmp = a.out.rstrip("/") + ".tmp-snapshot"
    model.save_pretrained(tmp, safe_serialization=True)
    for f in ("config.json", "diffusion_pytorch_model.safetensors"):
        atomic_write(os.path.join(a.out, f), lambda t, f=f: os.replace(os.path.join(tmp, f), t))
    os.rmdir(tmp)
    write_json(os.path.join(a.out, "snapshot.json"),
               {"source": os.path.abspath(a.checkpoint), "stage": state["name"], "step": state["step"],
                "steps": state["steps"], "recipe_id": state["recipe_id"], "form": state.get("form", "full"),
                "saved": state.get("saved"), "weights": "EMA, f32"})
    print(f"{state['name']} EMA at step {state['step']}/{state['steps']} -> {a.out}")


if __name__ == "__main__":
    main()
