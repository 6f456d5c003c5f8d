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

mod lanes;

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
    /// (128 values per pass, vectorised, bit-identical to [`philox4x32_10`] + [`box_muller`]
    /// value by value: see `lanes.rs`.)
    pub fn entry_into(&self, stream: u32, i: u32, j: u32, out: &mut [f32]) {
        debug_assert_eq!(out.len(), self.dim);
        lanes::entry_into(self.key(), stream, i, j, out);
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
    /// Blocks of entries run in parallel; each entry is generated into an L1-sized buffer and
    /// scored against every residual with [`dot`] while it is hot. (Scoring four entries per
    /// pass over each residual was 1.5× faster at B = 64 with 4-wide SSE2 loops; since the
    /// loops are compiled for AVX-512/AVX2 it is 10–25% slower than this, BENCHMARKS.md.)
    pub fn argmax(&self, stream: u32, i: u32, k: u32, residuals: &[&[f32]]) -> Vec<u32> {
        blocked_argmax(Entries::Generated { codebooks: self, stream, i }, self.dim, k, residuals)
    }

    /// `<C_i[j], r_b>` for every entry `j < k` and residual `r_b` (`[b][j]`), the same values
    /// [`Codebooks::argmax`] compares: what the multi-atom rules of [`crate::atoms`] choose
    /// from.
    pub fn scores(&self, stream: u32, i: u32, k: u32, residuals: &[&[f32]]) -> Vec<Vec<f32>> {
        blocked_scores(Entries::Generated { codebooks: self, stream, i }, self.dim, k, residuals)
    }

    /// All `k` entries of codebook `i` on `stream`, generated in parallel and kept, for a
    /// caller that can generate them while it waits for something else (the encoder does so
    /// during the network evaluation of the same step, `tokenizer.rs`). Its
    /// [`Codebook::argmax`] gives [`Codebooks::argmax`]'s indices.
    pub fn generate(&self, stream: u32, i: u32, k: u32) -> Codebook {
        let mut entries = vec![0.0f32; k as usize * self.dim];
        entries.par_chunks_mut((self.dim * 8).max(1)).enumerate().for_each(|(block, chunk)| {
            for (e, out) in chunk.chunks_exact_mut(self.dim).enumerate() {
                self.entry_into(stream, i, (block * 8 + e) as u32, out);
            }
        });
        Codebook { stream, i, k, dim: self.dim, entries }
    }
}

/// The entries of one codebook, held in memory ([`Codebooks::generate`]): `k × dim` values,
/// entry by entry.
#[derive(Debug, Clone)]
pub struct Codebook {
    /// The counter stream it was generated for.
    pub stream: u32,
    /// The codebook (token step) it was generated for.
    pub i: u32,
    /// Its number of entries.
    pub k: u32,
    dim: usize,
    entries: Vec<f32>,
}

impl Codebook {
    /// Entry `j`.
    pub fn entry(&self, j: u32) -> &[f32] {
        &self.entries[j as usize * self.dim..(j as usize + 1) * self.dim]
    }

    /// As [`Codebooks::argmax`] (same scores, same ties), over the held entries.
    pub fn argmax(&self, residuals: &[&[f32]]) -> Vec<u32> {
        blocked_argmax(Entries::Held(self), self.dim, self.k, residuals)
    }

    /// As [`Codebooks::scores`], over the held entries.
    pub fn scores(&self, residuals: &[&[f32]]) -> Vec<Vec<f32>> {
        blocked_scores(Entries::Held(self), self.dim, self.k, residuals)
    }
}

/// Where [`blocked_argmax`] gets entry `j`: generated on the fly, or from memory.
#[derive(Clone, Copy)]
enum Entries<'a> {
    Generated { codebooks: &'a Codebooks, stream: u32, i: u32 },
    Held(&'a Codebook),
}

impl<'a> Entries<'a> {
    /// A scratch buffer for [`Entries::get`] (empty when the entries are held).
    fn buffer(&self, dim: usize) -> Vec<f32> {
        match self {
            Entries::Generated { .. } => vec![0.0f32; dim],
            Entries::Held(_) => Vec::new(),
        }
    }

    /// Entry `j`, generated into `buf` or borrowed from memory.
    fn get<'b>(&self, j: u32, buf: &'b mut [f32]) -> &'b [f32]
    where
        'a: 'b,
    {
        match *self {
            Entries::Generated { codebooks, stream, i } => {
                codebooks.entry_into(stream, i, j, buf);
                buf
            }
            Entries::Held(cb) => cb.entry(j),
        }
    }
}

/// Entries per parallel block of the scoring loops.
const BLOCK: u32 = 32;

/// Every score `<entry j, r_b>` (`[b][j]`), blocks of entries in parallel.
fn blocked_scores(entries: Entries, dim: usize, k: u32, residuals: &[&[f32]]) -> Vec<Vec<f32>> {
    assert!(residuals.iter().all(|r| r.len() == dim), "residual length must equal the codebook dimension");
    let blocks: Vec<Vec<f32>> = (0..k.div_ceil(BLOCK))
        .into_par_iter()
        .map(|blk| {
            let mut buf = entries.buffer(dim);
            let js = blk * BLOCK..((blk + 1) * BLOCK).min(k);
            let mut out = vec![0.0f32; residuals.len() * js.len()];
            for (e, j) in js.clone().enumerate() {
                let entry = entries.get(j, &mut buf);
                for (b, r) in residuals.iter().enumerate() {
                    out[b * js.len() + e] = dot(entry, r);
                }
            }
            out
        })
        .collect();
    (0..residuals.len())
        .map(|b| {
            blocks
                .iter()
                .flat_map(|blk| {
                    let per = blk.len() / residuals.len().max(1);
                    blk[b * per..(b + 1) * per].iter().copied()
                })
                .collect()
        })
        .collect()
}

/// `argmax_{j<k} <entry j, r_b>` per residual, ties to the smallest `j` (eq. 14), over blocks of
/// entries in parallel.
fn blocked_argmax(entries: Entries, dim: usize, k: u32, residuals: &[&[f32]]) -> Vec<u32> {
    assert!(residuals.iter().all(|r| r.len() == dim), "residual length must equal the codebook dimension");
    let best = (0..k.div_ceil(BLOCK))
        .into_par_iter()
        .map(|blk| {
            let mut buf = entries.buffer(dim);
            let mut best = vec![(f32::NEG_INFINITY, u32::MAX); residuals.len()];
            for j in blk * BLOCK..((blk + 1) * BLOCK).min(k) {
                let entry = entries.get(j, &mut buf);
                for (b, r) in residuals.iter().enumerate() {
                    let score = dot(entry, r);
                    if score > best[b].0 {
                        best[b] = (score, j);
                    }
                }
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

crate::nn::kernels::simd::multiversion!(
    /// A dot product with a fixed summation order (8 partial sums), so that scores are
    /// reproducible run to run and across CPUs.
    pub fn dot(a: &[f32], b: &[f32]) -> f32 = dot_body
);

#[inline(always)]
fn dot_body(a: &[f32], b: &[f32]) -> f32 {
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
    fn blocked_argmax_equals_one_at_a_time() {
        // K not a multiple of the block size; a batch of residuals.
        let cb = Codebooks::new(9, 37);
        let res: Vec<Vec<f32>> = (0..5).map(|j| cb.entry(1, 0, j)).collect();
        let refs: Vec<&[f32]> = res.iter().map(|r| r.as_slice()).collect();
        for k in [1, 2, 3, 5, 33, 70] {
            let got = cb.argmax(STREAM_CODEBOOK, 4, k, &refs);
            let held = cb.generate(STREAM_CODEBOOK, 4, k);
            assert_eq!(held.argmax(&refs), got, "K {k}: held entries");
            let scores = cb.scores(STREAM_CODEBOOK, 4, k, &refs);
            assert_eq!(held.scores(&refs), scores, "K {k}: held scores");
            assert!((0..k).all(|j| held.entry(j) == cb.entry(STREAM_CODEBOOK, 4, j).as_slice()));
            for (b, r) in res.iter().enumerate() {
                let brute: Vec<f32> = (0..k).map(|j| dot(&cb.entry(STREAM_CODEBOOK, 4, j), r)).collect();
                assert_eq!(scores[b], brute, "K {k} image {b}: scores");
                let scores = brute;
                let best = scores.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
                assert_eq!(got[b], scores.iter().position(|&s| s == best).unwrap() as u32, "K {k} image {b}");
            }
        }
    }
}
