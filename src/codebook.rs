//! Seeded Gaussian codebooks (SPEC 5).
//!
//! Entry `C_i[j] ∈ R^d` is a pure function of `(seed, i, j)`: element `e` comes from
//! `Philox4x32-10(counter = (e>>2, j, i, stream), key = (seed_lo, seed_hi))`, whose four words
//! feed two Box–Muller transforms evaluated in f64 with the `libm` crate (so that `ln`, `sin`
//! and `cos` are the same on every platform, guarantee G1) and rounded to f32.
//!
//! The encoder scores all `K` entries of a codebook against a batch of residuals without ever
//! holding `K × d` floats: entries are generated in blocks, in parallel, keeping a running
//! argmax. The decoder generates only the chosen entry.

use rayon::prelude::*;

/// The generator id written in token files: Philox4x32-10 + Box–Muller(f64) → f32.
pub const GENERATOR_PHILOX_BOX_MULLER: u8 = 1;

/// The counter stream of the codebooks proper.
pub const STREAM_CODEBOOK: u32 = 0;
/// The counter stream of the initial-point noise `z` (SPEC 7).
pub const STREAM_INIT: u32 = 1;

const M0: u32 = 0xD251_1F53;
const M1: u32 = 0xCD9E_8D57;
const W0: u32 = 0x9E37_79B9;
const W1: u32 = 0xBB67_AE85;

/// Philox4x32 with 10 rounds (Salmon et al. 2011), the Random123 reference algorithm.
#[inline]
pub fn philox4x32_10(counter: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    let [mut c0, mut c1, mut c2, mut c3] = counter;
    let [mut k0, mut k1] = key;
    for round in 0..10 {
        if round > 0 {
            k0 = k0.wrapping_add(W0);
            k1 = k1.wrapping_add(W1);
        }
        let p0 = M0 as u64 * c0 as u64;
        let p1 = M1 as u64 * c2 as u64;
        let (hi0, lo0) = ((p0 >> 32) as u32, p0 as u32);
        let (hi1, lo1) = ((p1 >> 32) as u32, p1 as u32);
        (c0, c1, c2, c3) = (hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0);
    }
    [c0, c1, c2, c3]
}

/// Box–Muller on two 32-bit words: `u = (w + ½)·2⁻³²` (exact in f64), then
/// `r = √(−2 ln u_a)`, `θ = 2π u_b`, returning `(r cos θ, r sin θ)`.
#[inline]
pub fn box_muller(wa: u32, wb: u32) -> (f64, f64) {
    const SCALE: f64 = 1.0 / 4_294_967_296.0;
    let ua = (wa as f64 + 0.5) * SCALE;
    let ub = (wb as f64 + 0.5) * SCALE;
    let r = libm::sqrt(-2.0 * libm::log(ua));
    let theta = 2.0 * std::f64::consts::PI * ub;
    let (sin, cos) = libm::sincos(theta);
    (r * cos, r * sin)
}

/// The codebooks of one tokenization: a seed and the dimension `d` of an image vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Codebooks {
    pub seed: u64,
    pub dim: usize,
}

impl Codebooks {
    pub fn new(seed: u64, dim: usize) -> Self {
        Self { seed, dim }
    }

    fn key(&self) -> [u32; 2] {
        [self.seed as u32, (self.seed >> 32) as u32]
    }

    /// Writes entry `j` of codebook `i` on `stream` into `out` (length `dim`).
    pub fn entry_into(&self, stream: u32, i: u32, j: u32, out: &mut [f32]) {
        debug_assert_eq!(out.len(), self.dim);
        let key = self.key();
        for (q, chunk) in out.chunks_mut(4).enumerate() {
            let w = philox4x32_10([q as u32, j, i, stream], key);
            let (n0, n1) = box_muller(w[0], w[1]);
            let (n2, n3) = box_muller(w[2], w[3]);
            for (o, v) in chunk.iter_mut().zip([n0, n1, n2, n3]) {
                *o = v as f32;
            }
        }
    }

    /// Entry `j` of codebook `i` on `stream`.
    pub fn entry(&self, stream: u32, i: u32, j: u32) -> Vec<f32> {
        let mut v = vec![0.0; self.dim];
        self.entry_into(stream, i, j, &mut v);
        v
    }

    /// For each residual `r_b` (each of length `dim`), `argmax_{j<k} <C_i[j], r_b>`, ties to the
    /// smallest `j` (eq. 14, SPEC 2.4). Entries are generated once and shared by the batch.
    ///
    /// Blocks of entries run in parallel; within a block, [`GROUP`] entries are generated and
    /// then scored together against each residual ([`dot_group`]), so each residual is read
    /// once per group rather than once per entry. Every score is computed exactly as [`dot`]
    /// computes it, so the choice is the same as scoring one entry at a time.
    pub fn argmax(&self, stream: u32, i: u32, k: u32, residuals: &[&[f32]]) -> Vec<u32> {
        assert!(residuals.iter().all(|r| r.len() == self.dim), "residual length must equal the codebook dimension");
        const BLOCK: u32 = 32;
        let nblocks = k.div_ceil(BLOCK);
        let best = (0..nblocks)
            .into_par_iter()
            .map(|blk| {
                let mut bufs = vec![0.0f32; GROUP * self.dim];
                let mut best = vec![(f32::NEG_INFINITY, u32::MAX); residuals.len()];
                let end = ((blk + 1) * BLOCK).min(k);
                let mut j0 = blk * BLOCK;
                while j0 < end {
                    let g = ((end - j0) as usize).min(GROUP);
                    for (e, buf) in bufs.chunks_mut(self.dim).take(g).enumerate() {
                        self.entry_into(stream, i, j0 + e as u32, buf);
                    }
                    for (b, r) in residuals.iter().enumerate() {
                        let scores = if g == GROUP {
                            dot_group(&bufs, self.dim, r)
                        } else {
                            let mut sc = [f32::NEG_INFINITY; GROUP];
                            for (e, buf) in bufs.chunks(self.dim).take(g).enumerate() {
                                sc[e] = dot(buf, r);
                            }
                            sc
                        };
                        for (e, &score) in scores.iter().take(g).enumerate() {
                            if score > best[b].0 {
                                best[b] = (score, j0 + e as u32);
                            }
                        }
                    }
                    j0 += g as u32;
                }
                best
            })
            .reduce_with(|a, b| {
                a.into_iter().zip(b).map(|(x, y)| if y.0 > x.0 || (y.0 == x.0 && y.1 < x.1) { y } else { x }).collect()
            })
            .unwrap_or_default();
        // A NaN residual scores nothing: fall back to entry 0 so the stream stays decodable.
        best.into_iter().map(|(_, j)| if j == u32::MAX { 0 } else { j }).collect()
    }
}

/// Entries scored together by [`Codebooks::argmax`] (fixed: [`dot_group`] is written for 4).
pub const GROUP: usize = 4;

/// `[dot(e_0, r), …, dot(e_{GROUP−1}, r)]` for the `GROUP` entries laid end to end in
/// `entries` (each of length `dim`), reading `r` once. Each result is bit-identical to
/// [`dot`]: the same 8 partial sums in the same order, the same final combination.
#[inline]
pub fn dot_group(entries: &[f32], dim: usize, r: &[f32]) -> [f32; GROUP] {
    assert!(entries.len() >= GROUP * dim && r.len() == dim);
    let es: [&[f32]; GROUP] = std::array::from_fn(|e| &entries[e * dim..(e + 1) * dim]);
    let (mut a0, mut a1, mut a2, mut a3) = ([0.0f32; 8], [0.0f32; 8], [0.0f32; 8], [0.0f32; 8]);
    let rows = r
        .chunks_exact(8)
        .zip(es[0].chunks_exact(8))
        .zip(es[1].chunks_exact(8))
        .zip(es[2].chunks_exact(8))
        .zip(es[3].chunks_exact(8));
    for ((((y, x0), x1), x2), x3) in rows {
        for l in 0..8 {
            a0[l] += x0[l] * y[l];
            a1[l] += x1[l] * y[l];
            a2[l] += x2[l] * y[l];
            a3[l] += x3[l] * y[l];
        }
    }
    let n8 = dim / 8 * 8;
    let acc = [a0, a1, a2, a3];
    std::array::from_fn(|e| {
        let mut tail = 0.0f32;
        for (x, y) in es[e][n8..].iter().zip(&r[n8..]) {
            tail += x * y;
        }
        let a = &acc[e];
        ((a[0] + a[4]) + (a[1] + a[5])) + ((a[2] + a[6]) + (a[3] + a[7])) + tail
    })
}

/// A dot product with a fixed summation order (8 partial sums), so that scores are
/// reproducible run to run on one machine.
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    let mut tail = 0.0f32;
    for (x, y) in ra.iter().zip(rb) {
        tail += x * y;
    }
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argmax_matches_brute_force_with_ties_to_smallest() {
        let cb = Codebooks::new(7, 10);
        let r: Vec<f32> = (0..10).map(|e| (e as f32 * 0.37).sin()).collect();
        let got = cb.argmax(STREAM_CODEBOOK, 3, 100, &[&r])[0];
        let scores: Vec<f32> = (0..100).map(|j| dot(&cb.entry(STREAM_CODEBOOK, 3, j), &r)).collect();
        let best = scores.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
        assert_eq!(got, scores.iter().position(|&s| s == best).unwrap() as u32);
        // A zero residual ties everything: the smallest index wins.
        let zero = vec![0.0f32; 10];
        assert_eq!(cb.argmax(STREAM_CODEBOOK, 3, 100, &[&zero])[0], 0);
    }

    #[test]
    fn grouped_scores_are_bit_identical_to_dot() {
        for dim in [1, 7, 8, 13, 64, 1027] {
            let cb = Codebooks::new(3, dim);
            let entries: Vec<f32> = (0..GROUP as u32).flat_map(|j| cb.entry(0, 1, j)).collect();
            let r = cb.entry(0, 2, 0);
            let got = dot_group(&entries, dim, &r);
            for (e, g) in got.iter().enumerate() {
                assert_eq!(g.to_bits(), dot(&entries[e * dim..(e + 1) * dim], &r).to_bits(), "dim {dim} entry {e}");
            }
        }
    }

    #[test]
    fn grouped_argmax_equals_one_at_a_time() {
        // K not a multiple of the group or block sizes; a batch of residuals.
        let cb = Codebooks::new(9, 37);
        let res: Vec<Vec<f32>> = (0..5).map(|j| cb.entry(1, 0, j)).collect();
        let refs: Vec<&[f32]> = res.iter().map(|r| r.as_slice()).collect();
        for k in [1, 2, 3, 5, 33, 70] {
            let got = cb.argmax(STREAM_CODEBOOK, 4, k, &refs);
            for (b, r) in res.iter().enumerate() {
                let scores: Vec<f32> = (0..k).map(|j| dot(&cb.entry(STREAM_CODEBOOK, 4, j), r)).collect();
                let best = scores.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
                assert_eq!(got[b], scores.iter().position(|&s| s == best).unwrap() as u32, "K {k} image {b}");
            }
        }
    }
}
