# Sourced by tools/gpu/cudnn.sh and kernels.sh after setup.sh ($B is the gddcm binary, el a
# timed echo). Work files go to $OUT/w, packed into $OUT/results.tar.gz on exit.
mkdir -p $OUT/w
trap 'tar -C $OUT/w -czf $OUT/results.tar.gz . && rm -rf $OUT/w' EXIT

# The SPEC 5 G4 check: decodes on the GPU the token files that tools/gpu/prepare.sh encoded on
# the CPU and compares the PNGs with the CPU's decodes (tools/gpu/compare.py), then encodes the
# same images on the GPU and compares the token files byte for byte with the CPU's.
g4_check() {
  CFGS="fmnist-edm fmnist-cm fmnist-rf fmnist-ddpm fmnist-ddpm-ddcm"
  el "G4: decode the CPU-encoded files on the GPU"
  mkdir -p $OUT/w/g4gpu $OUT/w/gpuenc
  for c in $CFGS; do timeout 60 $B decode --quiet --device cuda -o $OUT/w/g4gpu/$c .gpu/g4/$c/tok/*.gddcm || echo "decode $c FAILED"; done
  mkdir -p /tmp/ref; for c in $CFGS; do ln -sfn "$PWD/.gpu/g4/$c/cpu" /tmp/ref/$c; done
  python3 tools/gpu/compare.py /tmp/ref $OUT/w/g4gpu | grep -v '^/'
  el "G4: encode on the GPU; token files against the CPU's"
  for c in $CFGS; do m=${c%-ddcm}; x=""; [ "$c" != "$m" ] && x=--ddcm
    timeout 60 $B encode --quiet --device cuda -m $m $x -o $OUT/w/gpuenc/$c assets/examples/*.png >/dev/null || echo "encode $c FAILED"
    same=0; differ=0; for f in .gpu/g4/$c/tok/*.gddcm; do
      if cmp -s "$f" "$OUT/w/gpuenc/$c/$(basename "$f")"; then same=$((same+1)); else differ=$((differ+1)); fi; done
    echo "$c: $same token files identical to the CPU's, $differ differ"; done
}

# `gddcm bench` at batch 256: the bundled fmnist-edm at N = 300, the full-size DDPM CIFAR-10
# UNet (random weights, tools/gpu/mkddpm.py) at N = 20.
bench_batch256() {
  el "gddcm bench on the GPU, batch 256"
  timeout 60 $B bench --device cuda -m fmnist-edm -n 300 --batch 256 --json $OUT/w/bench_fmnist_edm.json
  python3 tools/gpu/mkddpm.py tests/fixtures/unet2d_ddpm_cifar10_32.keys.json /tmp/ddpm
  timeout 90 $B bench --device cuda -m ddpm-cifar10 --weights /tmp/ddpm -n 20 --batch 256 --json $OUT/w/bench_ddpm.json
}
