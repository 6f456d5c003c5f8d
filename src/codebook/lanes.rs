//! Codebook entries generated many values at a time, bit-identical to the scalar definition
//! ([`super::philox4x32_10`] and [`super::box_muller`] with the `libm` crate, SPEC 5 G1).
//!
//! `libm`'s `log` and `sincos` are the FreeBSD msun algorithms: on the inputs Box–Muller
//! feeds them (`u ∈ [2⁻³³, 1 − 2⁻³³]`, `θ = 2πu ∈ (0, 2π)`) they are straight-line IEEE
//! arithmetic apart from the choice of quadrant. Written here lane by lane, with the same
//! operations in the same order (Rust never contracts `a*b + c` into an FMA) and the quadrant
//! chosen by selects, the compiler vectorises them and each lane rounds exactly as the
//! scalar code does. The rare arguments where msun takes another path (θ below 2⁻²⁶·√2, or
//! within 2⁻²⁰ of a multiple of π/2, where its argument reduction needs extra rounds) are
//! flagged and recomputed with `libm::sincos` itself. Tests compare every lane with the
//! scalar definition, including all those special arguments.

// msun's constants are kept digit for digit as published, not trimmed to f64 precision.
#![allow(clippy::excessive_precision)]

use super::{box_muller, philox4x32_10, M0, M1, W0, W1};

/// Philox counters per pass (each gives 4 values). Four AVX-512 vectors of f64 per variable:
/// each value's chain (Philox's 10 rounds, then `ln` → `sqrt`, and `sincos`) is long and
/// serial, and independent vectors in flight hide its latency. 8 (one vector) ran at 3.4 ns
/// per value, 16 at 3.0, 32 at 2.7, 64 at 2.9 (register spills); BENCHMARKS.md.
const L: usize = 32;

/// Philox4x32-10 of the counters `(c0[l], c1[l], c2[l], c3[l])`, in place.
#[inline(always)]
#[allow(clippy::needless_range_loop)] // lane l of four arrays at once
fn philox_lanes(c: &mut [[u32; L]; 4], key: [u32; 2]) {
    let [mut k0, mut k1] = key;
    for round in 0..10 {
        if round > 0 {
            k0 = k0.wrapping_add(W0);
            k1 = k1.wrapping_add(W1);
        }
        for l in 0..L {
            let p0 = M0 as u64 * c[0][l] as u64;
            let p1 = M1 as u64 * c[2][l] as u64;
            let (hi0, lo0) = ((p0 >> 32) as u32, p0 as u32);
            let (hi1, lo1) = ((p1 >> 32) as u32, p1 as u32);
            (c[0][l], c[1][l], c[2][l], c[3][l]) = (hi1 ^ c[1][l] ^ k0, lo1, hi0 ^ c[3][l] ^ k1, lo0);
        }
    }
}

// msun's constants (libm 0.2: src/math/log.rs, k_sin.rs, k_cos.rs, rem_pio2.rs).
const LN2_HI: f64 = 6.93147180369123816490e-01;
const LN2_LO: f64 = 1.90821492927058770002e-10;
const LG1: f64 = 6.666666666666735130e-01;
const LG2: f64 = 3.999999999940941908e-01;
const LG3: f64 = 2.857142874366239149e-01;
const LG4: f64 = 2.222219843214978396e-01;
const LG5: f64 = 1.818357216161805012e-01;
const LG6: f64 = 1.531383769920937332e-01;
const LG7: f64 = 1.479819860511658591e-01;
const S1: f64 = -1.66666666666666324348e-01;
const S2: f64 = 8.33333333332248946124e-03;
const S3: f64 = -1.98412698298579493134e-04;
const S4: f64 = 2.75573137070700676789e-06;
const S5: f64 = -2.50507602534068634195e-08;
const S6: f64 = 1.58969099521155010221e-10;
const C1: f64 = 4.16666666666666019037e-02;
const C2: f64 = -1.38888888888741095749e-03;
const C3: f64 = 2.48015872894767294178e-05;
const C4: f64 = -2.75573143513906633035e-07;
const C5: f64 = 2.08757232129817482790e-09;
const C6: f64 = -1.13596475577881948265e-11;
const PIO2_1: f64 = 1.57079632673412561417e+00;
const PIO2_1T: f64 = 6.07710050650619224932e-11;

/// `ln x` for a normal `0 < x < 1` (msun `log`, main path).
#[inline(always)]
fn ln(x: f64) -> f64 {
    let ui = x.to_bits();
    // Reduce x into [√2/2, √2]: x = 2^k (1 + f).
    let hx = ((ui >> 32) as u32).wrapping_add(0x3ff00000 - 0x3fe6a09e);
    let k = ((hx >> 20) as i32) - 0x3ff;
    let hx = (hx & 0x000fffff) + 0x3fe6a09e;
    let x = f64::from_bits(((hx as u64) << 32) | (ui & 0xffffffff));
    let f: f64 = x - 1.0;
    let hfsq: f64 = 0.5 * f * f;
    let s: f64 = f / (2.0 + f);
    let z: f64 = s * s;
    let w: f64 = z * z;
    let t1: f64 = w * (LG2 + w * (LG4 + w * LG6));
    let t2: f64 = z * (LG1 + w * (LG3 + w * (LG5 + w * LG7)));
    let r: f64 = t2 + t1;
    let dk: f64 = k as f64;
    s * (hfsq + r) + dk * LN2_LO - hfsq + f + dk * LN2_HI
}

/// msun `__sin(x, y, iy)` for both values of `iy`.
#[inline(always)]
fn k_sin(x: f64, y: f64, tail: bool) -> f64 {
    let z = x * x;
    let w = z * z;
    let r = S2 + z * (S3 + z * S4) + z * w * (S5 + z * S6);
    let v = z * x;
    let plain = x + v * (S1 + z * r);
    let with_tail = x - ((z * (0.5 * y - v * r) - y) - v * S1);
    if tail {
        with_tail
    } else {
        plain
    }
}

/// msun `__cos(x, y)`.
#[inline(always)]
fn k_cos(x: f64, y: f64) -> f64 {
    let z = x * x;
    let w = z * z;
    let r = z * (C1 + z * (C2 + z * C3)) + w * w * (C4 + z * (C5 + z * C6));
    let hz = 0.5 * z;
    let w = 1.0 - hz;
    w + (((1.0 - w) - hz) + (z * r - x * y))
}

/// `(sin θ, cos θ)` for `0 < θ < 2π` as msun's `sincos`, and whether this lane needs the
/// scalar `libm::sincos` instead (tiny θ, or θ near a multiple of π/2 where msun reduces the
/// argument in more rounds).
#[inline(always)]
fn sincos(x: f64) -> (f64, f64, bool) {
    let ix = ((x.to_bits() >> 32) as u32) & 0x7fffffff;
    // Quadrant n = round(θ / (π/2)) by msun's thresholds on the high word (as a sum of
    // comparisons, and the quadrant swap below by selects, so that the loop vectorises).
    let n = (ix > 0x3fe921fb) as u32 + (ix > 0x4002d97c) as u32 + (ix > 0x400f6a7a) as u32 + (ix > 0x4015fdbc) as u32;
    let special = !(0x3e46a09e..=0x401c463b).contains(&ix)
        || (n > 0 && ix <= 0x400f6a7a && (ix & 0xfffff) == 0x921fb)
        || ix == 0x4012d97c
        || ix == 0x401921fb;
    // One round of Cody–Waite reduction (exact products: PIO2_1 has 33 trailing zero bits).
    let nf = n as f64;
    let z = x - nf * PIO2_1;
    let y0 = z - nf * PIO2_1T;
    let y1 = (z - y0) - nf * PIO2_1T;
    let s = k_sin(y0, y1, n > 0);
    let c = k_cos(y0, y1);
    // n mod 4 = 0: (s, c); 1: (c, −s); 2: (−s, −c); 3: (−c, s).
    let odd = n & 1 == 1;
    let (sin, cos) = (if odd { c } else { s }, if odd { s } else { c });
    let sign = |v: f64, negate: bool| f64::from_bits(v.to_bits() ^ ((negate as u64) << 63));
    let (sin, cos) = (sign(sin, n & 2 == 2), sign(cos, (n + 1) & 2 == 2));
    (sin, cos, special)
}

/// Box–Muller of `L` word pairs: `(r cos θ, r sin θ)` per lane, as [`box_muller`].
#[inline(always)]
fn box_muller_lanes(wa: &[u32; L], wb: &[u32; L]) -> ([f64; L], [f64; L]) {
    const SCALE: f64 = 1.0 / 4_294_967_296.0;
    let (mut first, mut second) = ([0f64; L], [0f64; L]);
    let mut special = [false; L];
    for l in 0..L {
        let ua = (wa[l] as f64 + 0.5) * SCALE;
        let ub = (wb[l] as f64 + 0.5) * SCALE;
        let r = (-2.0 * ln(ua)).sqrt(); // IEEE sqrt: correctly rounded, as libm::sqrt
        let theta = 2.0 * std::f64::consts::PI * ub;
        let (sin, cos, sp) = sincos(theta);
        (first[l], second[l], special[l]) = (r * cos, r * sin, sp);
    }
    for l in 0..L {
        if special[l] {
            (first[l], second[l]) = box_muller(wa[l], wb[l]);
        }
    }
    (first, second)
}

#[inline(always)]
fn entry_body(key: [u32; 2], stream: u32, i: u32, j: u32, out: &mut [f32]) {
    let mut blocks = out.chunks_exact_mut(4 * L);
    let mut q0 = 0u32;
    for block in &mut blocks {
        let mut c = [[0u32; L], [j; L], [i; L], [stream; L]];
        for (l, c0) in c[0].iter_mut().enumerate() {
            *c0 = q0 + l as u32;
        }
        philox_lanes(&mut c, key);
        let (n0, n1) = box_muller_lanes(&c[0], &c[1]);
        let (n2, n3) = box_muller_lanes(&c[2], &c[3]);
        for (l, o) in block.chunks_exact_mut(4).enumerate() {
            o.copy_from_slice(&[n0[l] as f32, n1[l] as f32, n2[l] as f32, n3[l] as f32]);
        }
        q0 += L as u32;
    }
    // The last < 4·L values one counter at a time.
    for (q, chunk) in blocks.into_remainder().chunks_mut(4).enumerate() {
        let w = philox4x32_10([q0 + q as u32, j, i, stream], key);
        let (n0, n1) = box_muller(w[0], w[1]);
        let (n2, n3) = box_muller(w[2], w[3]);
        for (o, v) in chunk.iter_mut().zip([n0, n1, n2, n3]) {
            *o = v as f32;
        }
    }
}

crate::nn::kernels::simd::multiversion!(
    /// Entry `j` of codebook `i` on `stream` into `out`, bit-identical to the scalar
    /// definition, 128 values per pass.
    pub(super) fn entry_into(key: [u32; 2], stream: u32, i: u32, j: u32, out: &mut [f32]) = entry_body
);

#[cfg(test)]
mod tests {
    use super::*;

    fn scalar_entry(key: [u32; 2], stream: u32, i: u32, j: u32, d: usize) -> Vec<f32> {
        let mut out = vec![0f32; d];
        for (q, chunk) in out.chunks_mut(4).enumerate() {
            let w = philox4x32_10([q as u32, j, i, stream], key);
            let (n0, n1) = box_muller(w[0], w[1]);
            let (n2, n3) = box_muller(w[2], w[3]);
            for (o, v) in chunk.iter_mut().zip([n0, n1, n2, n3]) {
                *o = v as f32;
            }
        }
        out
    }

    #[test]
    fn entries_are_bit_identical_to_the_scalar_definition() {
        for (d, key) in
            [(1usize, [1u32, 2]), (31, [7, 0]), (32, [0x89abcdef, 0x01234567]), (3072, [5, 9]), (1000, [3, 3])]
        {
            for j in [0u32, 1, 4095] {
                let mut got = vec![0f32; d];
                entry_into(key, 0, 17, j, &mut got);
                let want = scalar_entry(key, 0, 17, j, d);
                for (e, (a, b)) in got.iter().zip(&want).enumerate() {
                    assert_eq!(a.to_bits(), b.to_bits(), "d {d} j {j} element {e}: {a} vs {b}");
                }
            }
        }
    }

    crate::nn::kernels::simd::multiversion!(
        fn box_muller_dispatched(wa: &[u32; L], wb: &[u32; L]) -> ([f64; L], [f64; L]) = box_muller_lanes
    );

    /// Every lane against `box_muller` in f64 (before rounding to f32), on random words and
    /// on the words whose θ falls on each of msun's special paths and quadrant boundaries,
    /// both as compiled for this CPU's vector ISA and for baseline x86-64.
    #[test]
    fn box_muller_lanes_match_libm_bit_for_bit() {
        let mut words: Vec<(u32, u32)> = Vec::new();
        let mut state = [0x1234_5678u32, 0x9abc_def0, 0, 0];
        for n in 0..500_000u32 {
            state = philox4x32_10([n, 0, 0, 0], [state[0], state[1]]);
            words.push((state[0], state[1]));
            words.push((state[2], state[3]));
        }
        // θ tiny, and θ near 0, π/4, π/2, 3π/4, π, 5π/4, 3π/2, 7π/4, 2π (the thresholds and
        // the cancellation cases of msun's rem_pio2).
        for wb in 0..4096u32 {
            words.push((wb.wrapping_mul(2_654_435_761), wb));
        }
        for m in 1..8u64 {
            let centre = (m << 29) as i64; // θ = m·π/4  ⇔  w ≈ m·2^29
            for off in -70_000i64..70_000 {
                let wb = (centre + off).clamp(0, u32::MAX as i64) as u32;
                words.push((wb ^ 0x5555_5555, wb));
            }
        }
        words.push((u32::MAX, u32::MAX));
        words.push((0, 0));
        for chunk in words.chunks_exact(L) {
            let wa: [u32; L] = std::array::from_fn(|l| chunk[l].0);
            let wb: [u32; L] = std::array::from_fn(|l| chunk[l].1);
            for (a, b) in [box_muller_lanes(&wa, &wb), box_muller_dispatched(&wa, &wb)] {
                for l in 0..L {
                    let (x, y) = box_muller(wa[l], wb[l]);
                    assert_eq!((a[l].to_bits(), b[l].to_bits()), (x.to_bits(), y.to_bits()), "words {:?}", chunk[l]);
                }
            }
        }
    }
}
