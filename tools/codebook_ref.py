"""Reference (slow, pure-Python) codebook generator proposed in docs/spec/SPEC.md section 5, with test vectors.

c[i][j][e] (token index i, codebook entry j, element e of the flattened CHW image vector):
  q, lane = e // 4, e % 4
  (w0, w1, w2, w3) = Philox4x32-10(counter = (q, j, i, STREAM), key = (seed & 0xffffffff, seed >> 32))
  Box-Muller on (w0, w1) -> lanes 0, 1 and on (w2, w3) -> lanes 2, 3:
      u_a = (w_a + 0.5) * 2^-32, u_b = (w_b + 0.5) * 2^-32            (exact in float64)
      r = sqrt(-2 ln u_a), th = 2 pi u_b, n_a = r cos th, n_b = r sin th  (float64)
  value = float32(n_lane)  (round to nearest even)
STREAM = 0 for codebooks, 1 for the initial-noise candidates (section 7).
Only integer operations decide the stream; the float transform must use a pinned libm
(e.g. the Rust `libm` crate) to be bit-exact on every platform.
"""
import math
import struct

M0, M1, W0, W1 = 0xD2511F53, 0xCD9E8D57, 0x9E3779B9, 0xBB67AE85
MASK = 0xFFFFFFFF


def philox4x32_10(ctr, key):
    c0, c1, c2, c3 = ctr
    k0, k1 = key
    for r in range(10):
        if r:
            k0, k1 = (k0 + W0) & MASK, (k1 + W1) & MASK
        p0, p1 = M0 * c0, M1 * c2
        hi0, lo0, hi1, lo1 = p0 >> 32, p0 & MASK, p1 >> 32, p1 & MASK
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
    return c0, c1, c2, c3


def box_muller(wa, wb):
    ua = (wa + 0.5) * 2.0**-32
    ub = (wb + 0.5) * 2.0**-32
    r = math.sqrt(-2.0 * math.log(ua))
    th = 2.0 * math.pi * ub
    return r * math.cos(th), r * math.sin(th)


def f32(x):
    return struct.unpack("<f", struct.pack("<f", x))[0]


def codebook_entry(seed, i, j, d, stream=0):
    key = (seed & MASK, (seed >> 32) & MASK)
    out = []
    for q in range((d + 3) // 4):
        w = philox4x32_10((q, j, i, stream), key)
        out.extend(box_muller(w[0], w[1]) + box_muller(w[2], w[3]))
    return [f32(v) for v in out[:d]]


if __name__ == "__main__":
    kat = [((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
           ((MASK,) * 4, (MASK, MASK), (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
           ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
            (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1))]
    for ctr, key, want in kat:
        got = philox4x32_10(ctr, key)
        print("Philox4x32-10 KAT", "OK " if got == want else "FAIL", [hex(g) for g in got])
    seed = 0x0123456789ABCDEF
    for (i, j) in [(0, 0), (0, 1), (1, 0), (299, 4095)]:
        v = codebook_entry(seed, i, j, 8)
        print(f"seed=0x{seed:016x} i={i} j={j}: raw u32 of block 0 = "
              f"{[hex(x) for x in philox4x32_10((0, j, i, 0), (seed & MASK, seed >> 32))]}")
        print("    first 8 f32 values:", " ".join(f"{x:.9g}" for x in v),
              " hex:", " ".join(f"{struct.unpack('<I', struct.pack('<f', x))[0]:08x}" for x in v))
    # sanity: moments over one full CIFAR entry
    v = codebook_entry(seed, 0, 0, 3072)
    m = sum(v) / len(v)
    var = sum((x - m) ** 2 for x in v) / len(v)
    print(f"one 3072-dim entry: mean {m:.4f} var {var:.4f}")
