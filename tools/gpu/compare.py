"""G4 check (SPEC 5): GPU decodes of CPU-encoded token files against the CPU decodes.
usage: compare.py REF_ROOT GPU_ROOT  (each holds <config>/<image>.png)"""
import math, os, sys
import numpy as np
from PIL import Image

ref_root, gpu_root = sys.argv[1], sys.argv[2]
print(f"{'config':<22} {'images':>6} {'PSNR vs CPU (dB)':>17} {'max |diff|':>10} {'pixels differing':>17}")
worst = math.inf
for cfg in sorted(os.listdir(ref_root)):
    rdir, gdir = os.path.join(ref_root, cfg), os.path.join(gpu_root, cfg)
    names = sorted(n for n in os.listdir(rdir) if n.endswith(".png"))
    se, cnt, mx, ndiff = 0.0, 0, 0, 0
    for n in names:
        a = np.asarray(Image.open(os.path.join(rdir, n)), dtype=np.float64)
        b = np.asarray(Image.open(os.path.join(gdir, n)), dtype=np.float64)
        assert a.shape == b.shape, (cfg, n, a.shape, b.shape)
        d = a - b
        se += (d ** 2).sum(); cnt += d.size; mx = max(mx, np.abs(d).max()); ndiff += (d != 0).sum()
    mse = se / cnt
    psnr = math.inf if mse == 0 else 10 * math.log10(255 ** 2 / mse)
    worst = min(worst, psnr)
    print(f"{cfg:<22} {len(names):>6} {psnr:>17.2f} {mx:>10.0f} {ndiff:>9d} ({100*ndiff/cnt:.3f}%)")
print(f"G4 (PSNR >= 50 dB against the CPU decoder): {'PASS' if worst >= 50 else 'FAIL'} (worst {worst:.2f} dB)")
