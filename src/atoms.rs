//! How one token step turns the codebook into noise: the atom rules (SPEC 2.4, 2.4a).
//!
//! DDCM and gDDCM pick one codeword per step (eq. 14). At low rates most of a step's budget
//! goes to network evaluations, not bits, so the codec also offers rules that spend more bits
//! per step on several codewords ("atoms") and reach a rate with fewer steps:
//!
//! - [`AtomRule::TopM`] (Turbo-DDCM): the `M` entries with the largest `|<C[j], x_tgt − x0h>|`,
//!   each with the sign of its score; the noise is their signed sum over `√M`. The set is
//!   coded by its rank in the combinatorial number system, `⌈log2 C(K, M)⌉ + M` bits.
//! - [`AtomRule::Pursuit`] (DDCM's matching pursuit): `M` atoms chosen greedily, each one the
//!   best match to what the previous ones left of the residual, the first with weight 1 and
//!   the others with weights quantised to `C` bits; `M·⌈log2 K⌉ + (M − 1)·C` bits.
//!
//! Scoring the `K` entries once per step gives the top-M with no extra network call; the
//! pursuit rescoring costs `M − 1` more passes over the codebook, still far below a network
//! evaluation. The codebooks stay those of SPEC 5, and a decoder generates only the chosen
//! entries. This module knows nothing of networks or files: the tokenizer asks it for a step's
//! symbols and noise, the format for the bits of those symbols.
//!
//! In memory a step is a few `u32` symbols ([`AtomRule::symbols_per_step`]):
//! `Single`: `[j]`; `TopM`: `[j_0 < j_1 < … < j_{M−1}, signs]` with bit `m` of `signs` set when
//! atom `m` enters negated; `Pursuit`: `[j_1, …, j_M, w_2, …, w_M]`, the atoms in the order
//! chosen and the weight levels of atoms 2..M ([`AtomRule::weight`]).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Largest number of atoms per step (a step's signs fit one `u32`).
pub const MAX_ATOMS: u32 = 32;
/// Largest weight precision of the pursuit, in bits.
pub const MAX_WEIGHT_BITS: u32 = 8;
/// Largest `⌈log2 C(K, M)⌉` of a top-M set: its rank is computed in `u128`.
pub const MAX_RANK_BITS: u32 = 120;

/// How a step's noise is built from its codebook.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum AtomRule {
    /// One codeword per step, `argmax_j <C[j], x_tgt − x0h>` (eq. 14). \[D\]
    #[default]
    Single,
    /// Turbo-DDCM: the `m` codewords of largest `|score|`, signed, summed, over `√m`.
    TopM { m: u32 },
    /// Matching pursuit: `m` codewords chosen greedily on the residual, weights of the
    /// second and later quantised to `bits` bits (sign and magnitude).
    Pursuit { m: u32, bits: u32 },
}

impl AtomRule {
    /// Whether this is the one-atom rule of eq. 14.
    pub fn is_single(&self) -> bool {
        *self == AtomRule::Single
    }

    /// Atoms per step.
    pub fn atoms(&self) -> u32 {
        match *self {
            AtomRule::Single => 1,
            AtomRule::TopM { m } | AtomRule::Pursuit { m, .. } => m,
        }
    }

    /// `u32` symbols per step in a token stream (module docs).
    pub fn symbols_per_step(&self) -> usize {
        match *self {
            AtomRule::Single => 1,
            AtomRule::TopM { m } => m as usize + 1,
            AtomRule::Pursuit { m, .. } => 2 * m as usize - 1,
        }
    }

    /// A valid step (the first indices, no signs, the smallest weights), to size a file before
    /// any tokens exist.
    pub fn first_step(&self) -> Vec<u32> {
        let mut step: Vec<u32> = (0..self.atoms()).collect();
        step.resize(self.symbols_per_step(), 0);
        step
    }

    /// Checks the rule against a codebook of `k` entries; the error says what is out of range.
    pub fn check(&self, k: u32) -> Result<(), String> {
        match *self {
            AtomRule::Single => Ok(()),
            AtomRule::TopM { m } => {
                if !(1..=MAX_ATOMS).contains(&m) || m > k {
                    return Err(format!("top-M needs 1 ≤ M ≤ min(K, {MAX_ATOMS}); found M = {m} with K = {k}"));
                }
                match binomial(k, m) {
                    Some(c) if bits_below(c) <= MAX_RANK_BITS => Ok(()),
                    _ => Err(format!(
                        "top-M with K = {k}, M = {m} needs more than {MAX_RANK_BITS} bits for the rank of a set"
                    )),
                }
            }
            AtomRule::Pursuit { m, bits } => {
                if !(2..=MAX_ATOMS).contains(&m) || m > k {
                    return Err(format!(
                        "matching pursuit needs 2 ≤ M ≤ min(K, {MAX_ATOMS}); found M = {m} with K = {k}"
                    ));
                }
                if !(1..=MAX_WEIGHT_BITS).contains(&bits) {
                    return Err(format!("matching pursuit weights take 1 to {MAX_WEIGHT_BITS} bits; found {bits}"));
                }
                Ok(())
            }
        }
    }

    /// Bits one step costs in a token payload with a codebook of `k` entries (the rule must
    /// pass [`AtomRule::check`]). `Single` is `log2 K`, fractional for other `K` (SPEC 6
    /// packs a whole stream of single tokens in mixed radix); the multi-atom rules pack each
    /// step in whole bits.
    pub fn bits_per_step(&self, k: u32) -> f64 {
        match *self {
            AtomRule::Single => f64::from(k).log2(),
            _ => self.step_bits(k) as f64,
        }
    }

    /// Whole bits of one multi-atom step: `⌈log2 C(K, M)⌉ + M` (top-M) or
    /// `M·⌈log2 K⌉ + (M − 1)·C` (pursuit); for `Single`, `⌈log2 K⌉`.
    pub fn step_bits(&self, k: u32) -> u32 {
        match *self {
            AtomRule::Single => index_bits(k),
            AtomRule::TopM { m } => bits_below(binomial(k, m).expect("checked rule")) + m,
            AtomRule::Pursuit { m, bits } => m * index_bits(k) + (m - 1) * bits,
        }
    }

    /// The weight of a pursuit level symbol `w < 2^C`: `±(q + 1)/2^(C−1)` with `q = w >> 1`,
    /// negative when `w` is odd. With `C = 1` the levels are ±1.
    pub fn weight(bits: u32, w: u32) -> f32 {
        let levels = 1u32 << (bits - 1);
        let mag = ((w >> 1) + 1) as f32 / levels as f32;
        if w & 1 == 1 {
            -mag
        } else {
            mag
        }
    }

    /// The level symbol nearest to weight `ratio` (the inverse of [`AtomRule::weight`]; the
    /// magnitude is clamped to the representable `[1/2^(C−1), 1]`).
    fn level(bits: u32, ratio: f32) -> u32 {
        let levels = 1u32 << (bits - 1);
        let q = ((ratio.abs() * levels as f32).round() as i64 - 1).clamp(0, levels as i64 - 1) as u32;
        (q << 1) | u32::from(ratio < 0.0)
    }

    /// The symbols of one step for one residual `r` (the encoder's choice). `scores` holds
    /// `<C[j], r>` for every entry; `rescore(r)` scores another residual and `entry(j)` gives
    /// an entry (the pursuit needs both; top-M neither).
    pub fn choose(
        &self,
        scores: &[f32],
        r: &[f32],
        mut rescore: impl FnMut(&[f32]) -> Vec<f32>,
        entry: impl Fn(u32) -> Vec<f32>,
    ) -> Vec<u32> {
        match *self {
            AtomRule::Single => vec![best(scores, |s| s, &[])],
            AtomRule::TopM { m } => {
                let mut chosen: Vec<u32> = Vec::with_capacity(m as usize);
                for _ in 0..m {
                    chosen.push(best(scores, f32::abs, &chosen));
                }
                chosen.sort_unstable();
                let signs = chosen
                    .iter()
                    .enumerate()
                    .fold(0u32, |acc, (a, &j)| acc | (u32::from(scores[j as usize] < 0.0) << a));
                chosen.push(signs);
                chosen
            }
            AtomRule::Pursuit { m, bits } => {
                // Atom 1 is eq. 14's choice with its projection coefficient a_1; atom m ≥ 2 is
                // the best |match| to the residual the earlier atoms left, its coefficient
                // quantised relative to a_1, and the quantised one is what it removes, so the
                // later choices see exactly the noise the decoder will build.
                let mut residual = r.to_vec();
                let mut scores = scores.to_vec();
                let mut atoms: Vec<u32> = Vec::with_capacity(m as usize);
                let mut levels: Vec<u32> = Vec::with_capacity(m as usize - 1);
                let mut first = 0.0f32;
                for a in 0..m {
                    let j = if a == 0 { best(&scores, |s| s, &[]) } else { best(&scores, f32::abs, &atoms) };
                    let c = entry(j);
                    // Only the encoder computes this (the decoder reads the choice), so any
                    // fixed summation order will do; kept local so that this module stays free
                    // of the codebook's kernels (the fuzz targets include it by path).
                    let norm2 = c.iter().map(|v| v * v).sum::<f32>().max(f32::MIN_POSITIVE);
                    let coef = scores[j as usize] / norm2;
                    let used = if a == 0 {
                        first = coef;
                        coef
                    } else {
                        let ratio = if first != 0.0 { coef / first } else { 0.0 };
                        let w = Self::level(bits, ratio);
                        levels.push(w);
                        Self::weight(bits, w) * first
                    };
                    atoms.push(j);
                    if a + 1 < m {
                        for (x, y) in residual.iter_mut().zip(&c) {
                            *x -= used * y;
                        }
                        scores = rescore(&residual);
                    }
                }
                atoms.extend(levels);
                atoms
            }
        }
    }

    /// The atoms of a step's symbols with their weights, and the scale that makes their sum
    /// unit-variance noise (`1/√Σ w²`; exactly 1 for `Single`, which is then the codeword
    /// itself, bit for bit).
    pub fn atoms_of(&self, symbols: &[u32]) -> (Vec<(u32, f32)>, f32) {
        match *self {
            AtomRule::Single => (vec![(symbols[0], 1.0)], 1.0),
            AtomRule::TopM { m } => {
                let signs = symbols[m as usize];
                let atoms: Vec<(u32, f32)> = symbols[..m as usize]
                    .iter()
                    .enumerate()
                    .map(|(a, &j)| (j, if signs >> a & 1 == 1 { -1.0 } else { 1.0 }))
                    .collect();
                (atoms, 1.0 / (m as f32).sqrt())
            }
            AtomRule::Pursuit { m, bits } => {
                let m = m as usize;
                let weights = std::iter::once(1.0).chain(symbols[m..].iter().map(|&w| Self::weight(bits, w)));
                let atoms: Vec<(u32, f32)> = symbols[..m].iter().copied().zip(weights).collect();
                let sum2: f32 = atoms.iter().map(|(_, w)| w * w).sum();
                (atoms, 1.0 / sum2.sqrt())
            }
        }
    }

    /// The step's noise `scale·Σ w_a C[j_a]` into `out`, the entries given by `entry` (the
    /// decoder and the encoder call this alike, so both build the same bits).
    pub fn noise_into(&self, symbols: &[u32], entry: impl Fn(u32) -> Vec<f32>, out: &mut [f32]) {
        let (atoms, scale) = self.atoms_of(symbols);
        if let [(j, _)] = atoms[..] {
            if matches!(self, AtomRule::Single) {
                out.copy_from_slice(&entry(j));
                return;
            }
        }
        out.fill(0.0);
        for (j, w) in atoms {
            for (o, c) in out.iter_mut().zip(entry(j)) {
                *o += w * c;
            }
        }
        for o in out.iter_mut() {
            *o *= scale;
        }
    }

    /// Checks one step's symbols as a decoder reads them: indices below `k`, top-M indices
    /// strictly increasing and signs within `M` bits, pursuit atoms distinct and levels
    /// below `2^C`. The error names the first problem.
    pub fn check_step(&self, k: u32, symbols: &[u32]) -> Result<(), String> {
        if symbols.len() != self.symbols_per_step() {
            return Err(format!("a step has {} symbols, the rule needs {}", symbols.len(), self.symbols_per_step()));
        }
        let m = self.atoms() as usize;
        if let Some(&j) = symbols[..m].iter().find(|&&j| j >= k) {
            return Err(format!("codeword index {j} is not below K = {k}"));
        }
        match *self {
            AtomRule::Single => Ok(()),
            AtomRule::TopM { m } => {
                if symbols[..m as usize].windows(2).any(|w| w[0] >= w[1]) {
                    return Err("the indices of a top-M set must be strictly increasing".into());
                }
                if m < 32 && symbols[m as usize] >> m != 0 {
                    return Err(format!("the sign mask {:#x} has bits beyond M = {m}", symbols[m as usize]));
                }
                Ok(())
            }
            AtomRule::Pursuit { m, bits } => {
                let mut seen = symbols[..m as usize].to_vec();
                seen.sort_unstable();
                if seen.windows(2).any(|w| w[0] == w[1]) {
                    return Err("the atoms of a pursuit step must be distinct".into());
                }
                match symbols[m as usize..].iter().find(|&&w| w >> bits != 0) {
                    Some(w) => Err(format!("weight level {w} does not fit {bits} bits")),
                    None => Ok(()),
                }
            }
        }
    }
}

/// The index of the largest `key(score)` not in `taken`, ties to the smallest index (as
/// eq. 14's argmax); a NaN score never wins, and all-NaN scores give the smallest free index.
fn best(scores: &[f32], key: impl Fn(f32) -> f32, taken: &[u32]) -> u32 {
    let mut best: Option<(f32, u32)> = None;
    for (j, &s) in scores.iter().enumerate() {
        let j = j as u32;
        if taken.contains(&j) {
            continue;
        }
        let v = key(s);
        if v.is_nan() {
            best.get_or_insert((f32::NEG_INFINITY, j));
            continue;
        }
        match best {
            Some((b, _)) if v <= b => {}
            _ => best = Some((v, j)),
        }
    }
    best.map(|(_, j)| j).unwrap_or(0)
}

/// `⌈log2 K⌉`: the bits of one index below `k` in a whole-bit field.
pub fn index_bits(k: u32) -> u32 {
    32 - (k - 1).leading_zeros()
}

/// `⌈log2 c⌉` for `c ≥ 1`: the bits of a value below `c`.
pub fn bits_below(c: u128) -> u32 {
    if c <= 1 {
        0
    } else {
        128 - (c - 1).leading_zeros()
    }
}

/// `C(n, r)`, or `None` when it (or an intermediate product) exceeds `u128`.
pub fn binomial(n: u32, r: u32) -> Option<u128> {
    if r > n {
        return Some(0);
    }
    let r = r.min(n - r);
    let mut c: u128 = 1;
    for i in 0..r {
        // C(n, i+1) = C(n, i)·(n − i)/(i + 1), exact at every step.
        c = c.checked_mul(u128::from(n - i))? / u128::from(i + 1);
    }
    Some(c)
}

/// The rank of a strictly increasing set `j_0 < … < j_{M−1}` in the combinatorial number
/// system: `Σ_a C(j_a, a + 1)`, a bijection onto `0..C(K, M)` for subsets of `0..K`.
pub fn subset_rank(set: &[u32]) -> u128 {
    set.iter().enumerate().map(|(a, &j)| binomial(j, a as u32 + 1).expect("rank fits u128")).sum()
}

/// The set of rank `rank` among the `m`-subsets of `0..k` (the inverse of [`subset_rank`]),
/// or `None` when `rank ≥ C(k, m)`.
pub fn subset_unrank(mut rank: u128, k: u32, m: u32) -> Option<Vec<u32>> {
    if rank >= binomial(k, m)? {
        return None;
    }
    let mut set = vec![0u32; m as usize];
    let mut hi = k; // every element still to find is below hi
    for a in (0..m).rev() {
        // The largest j < hi with C(j, a + 1) ≤ rank (binary search; C is increasing in j ≥ a).
        let (mut lo, mut up) = (a, hi - 1);
        while lo < up {
            let mid = lo + (up - lo).div_ceil(2);
            if binomial(mid, a + 1)? <= rank {
                lo = mid;
            } else {
                up = mid - 1;
            }
        }
        set[a as usize] = lo;
        rank -= binomial(lo, a + 1)?;
        hi = lo;
    }
    Some(set)
}

impl fmt::Display for AtomRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AtomRule::Single => write!(f, "single"),
            AtomRule::TopM { m } => write!(f, "topm:{m}"),
            AtomRule::Pursuit { m, bits } => write!(f, "pursuit:{m}:{bits}"),
        }
    }
}

impl FromStr for AtomRule {
    type Err = String;

    /// `single`, `topm:M` or `pursuit:M:C` (C: weight bits).
    fn from_str(s: &str) -> Result<Self, String> {
        let parts: Vec<&str> = s.trim().split(':').collect();
        let num = |p: &str, what: &str| -> Result<u32, String> {
            p.parse().map_err(|_| format!("'{s}': {what} must be a whole number, found '{p}'"))
        };
        let rule = match parts[..] {
            ["single"] | ["1"] => AtomRule::Single,
            ["topm", m] => AtomRule::TopM { m: num(m, "M")? },
            ["pursuit", m, c] => AtomRule::Pursuit { m: num(m, "M")?, bits: num(c, "C")? },
            _ => return Err(format!("'{s}' is not an atom rule: expected single, topm:M or pursuit:M:C")),
        };
        // The limits that do not depend on K (K = M is the smallest codebook a rule allows).
        rule.check(rule.atoms().max(2)).map(|_| rule)
    }
}

impl From<AtomRule> for String {
    fn from(r: AtomRule) -> String {
        r.to_string()
    }
}

impl TryFrom<String> for AtomRule {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rank_is_a_bijection_onto_the_binomial_range() {
        // Exhaustive for small K, M: every subset in increasing colex order gets the next rank.
        for k in 1..=12u32 {
            for m in 1..=k {
                let total = binomial(k, m).unwrap();
                let mut seen = vec![false; total as usize];
                for mask in 0u32..(1 << k) {
                    if mask.count_ones() != m {
                        continue;
                    }
                    let set: Vec<u32> = (0..k).filter(|j| mask >> j & 1 == 1).collect();
                    let r = subset_rank(&set);
                    assert!(r < total, "K {k} M {m}: rank {r} ≥ C = {total}");
                    assert!(!seen[r as usize], "K {k} M {m}: rank {r} twice");
                    seen[r as usize] = true;
                    assert_eq!(subset_unrank(r, k, m).unwrap(), set);
                }
                assert!(seen.iter().all(|&s| s));
                assert_eq!(subset_unrank(total, k, m), None, "rank C(K, M) is out of range");
            }
        }
    }

    #[test]
    fn binomials_and_bit_counts_are_exact() {
        assert_eq!(binomial(256, 4), Some(174_792_640));
        assert_eq!(binomial(4096, 0), Some(1));
        assert_eq!(binomial(3, 5), Some(0));
        assert_eq!(bits_below(174_792_640), 28); // 2^27 < C(256, 4) ≤ 2^28
        assert_eq!(bits_below(1 << 20), 20);
        assert_eq!(bits_below((1 << 20) + 1), 21);
        assert_eq!(AtomRule::TopM { m: 4 }.step_bits(256), 28 + 4);
        assert_eq!(AtomRule::Pursuit { m: 3, bits: 2 }.step_bits(256), 3 * 8 + 2 * 2);
        assert_eq!(AtomRule::Pursuit { m: 3, bits: 2 }.step_bits(300), 3 * 9 + 2 * 2);
        assert_eq!(AtomRule::Single.bits_per_step(256), 8.0);
        // K = M: one set, no rank bits, only the signs.
        assert_eq!(AtomRule::TopM { m: 4 }.step_bits(4), 4);
    }

    #[test]
    fn limits_are_errors_that_say_why() {
        assert!(AtomRule::TopM { m: 0 }.check(256).is_err());
        assert!(AtomRule::TopM { m: 5 }.check(4).is_err());
        assert!(AtomRule::TopM { m: 32 }.check(1 << 24).unwrap_err().contains("bits for the rank"));
        assert!(AtomRule::TopM { m: 8 }.check(4096).is_ok());
        assert!(AtomRule::TopM { m: 16 }.check(4096).is_err(), "C(4096, 16) > 2^147");
        assert!(AtomRule::Pursuit { m: 1, bits: 2 }.check(256).is_err());
        assert!(AtomRule::Pursuit { m: 4, bits: 9 }.check(256).is_err());
        assert!("topm:x".parse::<AtomRule>().unwrap_err().contains("whole number"));
        assert!("turbo:4".parse::<AtomRule>().is_err());
        for r in [AtomRule::Single, AtomRule::TopM { m: 7 }, AtomRule::Pursuit { m: 3, bits: 2 }] {
            assert_eq!(r.to_string().parse::<AtomRule>().unwrap(), r);
            let json = serde_json::to_string(&r).unwrap();
            assert_eq!(serde_json::from_str::<AtomRule>(&json).unwrap(), r);
        }
    }

    #[test]
    fn weight_levels_round_trip() {
        for bits in 1..=MAX_WEIGHT_BITS {
            for w in 0..(1u32 << bits) {
                let v = AtomRule::weight(bits, w);
                assert!(v != 0.0 && v.abs() <= 1.0);
                assert_eq!(AtomRule::level(bits, v), w, "bits {bits} level {w}");
            }
        }
        // Out-of-range magnitudes clamp to the extreme levels.
        assert_eq!(AtomRule::weight(3, AtomRule::level(3, 7.0)), 1.0);
        assert_eq!(AtomRule::weight(3, AtomRule::level(3, -0.01)), -0.25);
    }

    fn toy(k: u32, d: usize) -> Vec<Vec<f32>> {
        let cb = crate::codebook::Codebooks::new(5, d);
        (0..k).map(|j| cb.entry(0, 0, j)).collect()
    }

    fn score(cb: &[Vec<f32>], r: &[f32]) -> Vec<f32> {
        cb.iter().map(|c| crate::codebook::dot(c, r)).collect()
    }

    #[test]
    fn top_m_takes_the_largest_magnitudes_with_their_signs() {
        let cb = toy(64, 48);
        let r: Vec<f32> = (0..48).map(|e| (e as f32 * 0.71).cos()).collect();
        let s = score(&cb, &r);
        let rule = AtomRule::TopM { m: 5 };
        let sym = rule.choose(&s, &r, |_| unreachable!(), |_| unreachable!());
        rule.check_step(64, &sym).unwrap();
        let mut by_mag: Vec<u32> = (0..64).collect();
        by_mag.sort_by(|&a, &b| s[b as usize].abs().total_cmp(&s[a as usize].abs()));
        let mut expect = by_mag[..5].to_vec();
        expect.sort_unstable();
        assert_eq!(&sym[..5], &expect[..]);
        let (atoms, _) = rule.atoms_of(&sym);
        assert!(atoms.iter().all(|&(j, w)| w * s[j as usize] > 0.0), "every atom enters with its score's sign");
    }

    #[test]
    fn more_atoms_point_closer_to_the_residual() {
        // The point of several atoms: the noise correlates better with x_tgt − x0h.
        let (k, d) = (128, 256);
        let cb = toy(k, d);
        let r: Vec<f32> = (0..d).map(|e| ((e * e) as f32 * 0.013).sin()).collect();
        let s = score(&cb, &r);
        let cos = |rule: AtomRule| {
            let sym = rule.choose(&s, &r, |x| score(&cb, x), |j| cb[j as usize].clone());
            rule.check_step(k, &sym).unwrap();
            let mut n = vec![0.0; d];
            rule.noise_into(&sym, |j| cb[j as usize].clone(), &mut n);
            crate::codebook::dot(&n, &r) / (crate::codebook::dot(&n, &n) * crate::codebook::dot(&r, &r)).sqrt()
        };
        let single = cos(AtomRule::Single);
        let top4 = cos(AtomRule::TopM { m: 4 });
        let mp4 = cos(AtomRule::Pursuit { m: 4, bits: 3 });
        assert!(top4 > single && mp4 > single, "single {single}, top-4 {top4}, pursuit-4 {mp4}");
        assert!(mp4 > top4, "quantised weights beat signs alone: top-4 {top4}, pursuit-4 {mp4}");
    }

    #[test]
    fn single_noise_is_the_codeword_bit_for_bit() {
        let cb = toy(8, 33);
        let mut n = vec![0.0; 33];
        AtomRule::Single.noise_into(&[3], |j| cb[j as usize].clone(), &mut n);
        assert!(n.iter().zip(&cb[3]).all(|(a, b)| a.to_bits() == b.to_bits()));
    }

    #[test]
    fn step_checks_refuse_what_no_encoder_writes() {
        let t = AtomRule::TopM { m: 3 };
        assert!(t.check_step(16, &[1, 5, 9, 0b101]).is_ok());
        assert!(t.check_step(16, &[5, 1, 9, 0]).unwrap_err().contains("increasing"));
        assert!(t.check_step(16, &[1, 5, 16, 0]).unwrap_err().contains("not below K"));
        assert!(t.check_step(16, &[1, 5, 9, 0b1000]).unwrap_err().contains("sign mask"));
        let p = AtomRule::Pursuit { m: 3, bits: 2 };
        assert!(p.check_step(16, &[9, 1, 5, 3, 0]).is_ok());
        assert!(p.check_step(16, &[9, 1, 9, 3, 0]).unwrap_err().contains("distinct"));
        assert!(p.check_step(16, &[9, 1, 5, 4, 0]).unwrap_err().contains("2 bits"));
    }
}
