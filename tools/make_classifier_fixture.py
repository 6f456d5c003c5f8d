"""Write tests/fixtures/classifier_small.safetensors for the Rust classifier stand-in.

Builds the fixed Fashion-MNIST stand-in classifier (the same module names the trained model
uses) with seeded random weights, runs it on a few random inputs in [-1, 1] and saves the
weights (`conv1.weight`, ..., `fc2.bias`) together with `in.x`, `out.features` and
`out.logits`. Needs torch and safetensors (e.g. venv/bin/python).

To keep the file under 1 MB the weights are stored in float16, except `fc1.weight`
(4096x128, the bulk of the parameters) which is stored as float8_e4m3fn. The reference
outputs are computed in float32 with exactly those rounded values, so a loader that upcasts
to float32 must reproduce them to float32 round-off. Trained checkpoints may use any float
dtype.

Usage: python tools/make_classifier_fixture.py [output_path]
"""

import sys
from pathlib import Path

import torch
from safetensors.torch import save_file


# The architecture the bundled classifier is trained with (tools/train/common.py).
sys.path.insert(0, str(Path(__file__).resolve().parent / "train"))
from common import Classifier as StandInClassifier  # noqa: E402


def main():
    root = Path(__file__).resolve().parent.parent
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else root / "tests/fixtures/classifier_small.safetensors"
    torch.manual_seed(20251127)
    net = StandInClassifier().eval()
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        # Perturb biases so that no path is tested with near-zero values.
        for name, p in net.named_parameters():
            if name.endswith("bias"):
                p.add_(0.05 * torch.randn(p.shape, generator=g))
        net.fc1.weight.copy_(torch.randn(net.fc1.weight.shape, generator=g) * (2.0 / 4096) ** 0.5)
        # Round to the stored dtypes; the reference uses the rounded values.
        stored = {}
        for name, p in net.named_parameters():
            dt = torch.float8_e4m3fn if name == "fc1.weight" else torch.float16
            stored[name] = p.detach().to(dt).contiguous()
            p.copy_(stored[name].float())
        # Smooth-ish random images in [-1, 1] (batch > 1).
        x = torch.rand(4, 1, 8, 8, generator=g) * 2 - 1
        x = torch.nn.functional.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False)
        x = (x + 0.2 * torch.randn(x.shape, generator=g)).clamp(-1, 1)
        feats = net.features(x)
        logits = net.fc2(feats)
    tensors = dict(stored)
    tensors["in.x"] = x.contiguous()
    tensors["out.features"] = feats.contiguous()
    tensors["out.logits"] = logits.contiguous()
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out), metadata={"generator": "tools/make_classifier_fixture.py"})
    print(f"wrote {out} ({out.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
