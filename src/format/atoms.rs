//! The payload and header record of several atoms per step (SPEC 2.4a, SPEC 6).
//!
//! With one atom per step the payload is SPEC 6's mixed-radix integer ([`super::pack`]). With
//! several, each step is a fixed number of whole bits, written LSB first, step after step:
//!
//! - top-M: the rank of the index set in the combinatorial number system
//!   ([`crate::atoms::subset_rank`]), `⌈log2 C(K, M)⌉` bits, then the `M` sign bits (bit `m`
//!   for the `m`-th smallest index);
//! - pursuit: the `M` indices in the order chosen, `⌈log2 K⌉` bits each, then the `M − 1`
//!   weight levels, `C` bits each.
//!
//! The header names the rule in extension record 1 ([`super::EXT_ATOM_RULE`]): `u8` kind (1 top-M,
//! 2 pursuit), `u8 M`, and for the pursuit `u8 C`.

use crate::atoms::{binomial, bits_below, index_bits, subset_rank, subset_unrank, AtomRule};

use super::FormatError;

/// The body of the header record that names `rule` (none for `Single`).
pub(super) fn record(rule: AtomRule) -> Option<Vec<u8>> {
    match rule {
        AtomRule::Single => None,
        AtomRule::TopM { m } => Some(vec![1, m as u8]),
        AtomRule::Pursuit { m, bits } => Some(vec![2, m as u8, bits as u8]),
    }
}

/// The rule a header record names, checked against `K` (the record must be exactly as
/// [`record`] writes it, so the encoding stays canonical).
pub(super) fn parse_record(body: &[u8], k: u32) -> Result<AtomRule, FormatError> {
    let bad = |reason: String| FormatError::Inconsistent { field: "extension.atoms", reason };
    let rule = match body {
        [1, m] => AtomRule::TopM { m: u32::from(*m) },
        [2, m, c] => AtomRule::Pursuit { m: u32::from(*m), bits: u32::from(*c) },
        [kind, ..] if !(1..=2).contains(kind) => {
            return Err(bad(format!("atom rule {kind}, expected 1 (top-M) or 2 (pursuit)")))
        }
        _ => return Err(bad(format!("{} bytes do not describe an atom rule", body.len()))),
    };
    rule.check(k).map_err(bad)?;
    Ok(rule)
}

/// Payload bits of `n` steps of a multi-atom `rule` with `K = k`.
pub(super) fn payload_bits(rule: AtomRule, k: u32, n: u32) -> u64 {
    u64::from(n) * u64::from(rule.step_bits(k))
}

/// LSB-first bit writer into whole bytes.
struct Bits {
    out: Vec<u8>,
    acc: u128,
    n: u32,
}

impl Bits {
    /// Appends the low `width` bits of `v` (`width ≤ 120`).
    fn put(&mut self, v: u128, width: u32) {
        if width == 0 {
            return;
        }
        // Flush first so that acc has room for 120 more bits.
        while self.n >= 8 {
            self.out.push(self.acc as u8);
            self.acc >>= 8;
            self.n -= 8;
        }
        self.acc |= v << self.n;
        self.n += width;
        while self.n >= 8 {
            self.out.push(self.acc as u8);
            self.acc >>= 8;
            self.n -= 8;
        }
    }
}

/// Packs the symbols of `n` steps (checked by the caller) into `⌈bits/8⌉` bytes.
pub(super) fn pack(rule: AtomRule, k: u32, symbols: &[u32]) -> Vec<u8> {
    let mut w = Bits { out: Vec::new(), acc: 0, n: 0 };
    let m = rule.atoms() as usize;
    for step in symbols.chunks_exact(rule.symbols_per_step()) {
        match rule {
            AtomRule::TopM { m: mm } => {
                w.put(subset_rank(&step[..m]), bits_below(binomial(k, mm).expect("checked rule")));
                w.put(u128::from(step[m]), mm);
            }
            AtomRule::Pursuit { bits, .. } => {
                step[..m].iter().for_each(|&j| w.put(u128::from(j), index_bits(k)));
                step[m..].iter().for_each(|&l| w.put(u128::from(l), bits));
            }
            AtomRule::Single => unreachable!("single atoms use SPEC 6's mixed radix"),
        }
    }
    if w.n > 0 {
        w.out.push(w.acc as u8);
    }
    w.out
}

/// Reads `n` steps from a payload of exactly `⌈bits/8⌉` bytes whose padding bits the caller
/// has checked; every step is checked as a decoder needs it ([`AtomRule::check_step`]), a rank
/// beyond `C(K, M)` included.
pub(super) fn unpack(rule: AtomRule, k: u32, n: u32, payload: &[u8]) -> Result<Vec<u32>, FormatError> {
    let mut pos = 0u64;
    let get = |pos: &mut u64, width: u32| -> u128 {
        let mut v = 0u128;
        for b in 0..u64::from(width) {
            let at = *pos + b;
            let bit = payload.get((at / 8) as usize).map_or(0, |byte| (byte >> (at % 8)) & 1);
            v |= u128::from(bit) << b;
        }
        *pos += u64::from(width);
        v
    };
    let m = rule.atoms();
    let mut out = Vec::with_capacity(n as usize * rule.symbols_per_step());
    for step in 0..n as usize {
        let start = out.len();
        match rule {
            AtomRule::TopM { .. } => {
                let total = binomial(k, m).expect("checked rule");
                let rank = get(&mut pos, bits_below(total));
                let set = subset_unrank(rank, k, m).ok_or_else(|| FormatError::Inconsistent {
                    field: "tokens",
                    reason: format!("step {step}: subset rank {rank} is not below C({k}, {m}) = {total}"),
                })?;
                out.extend(set);
                out.push(get(&mut pos, m) as u32);
            }
            AtomRule::Pursuit { bits, .. } => {
                out.extend((0..m).map(|_| get(&mut pos, index_bits(k)) as u32));
                out.extend((1..m).map(|_| get(&mut pos, bits) as u32));
            }
            AtomRule::Single => unreachable!("single atoms use SPEC 6's mixed radix"),
        }
        rule.check_step(k, &out[start..])
            .map_err(|why| FormatError::Inconsistent { field: "tokens", reason: format!("step {step}: {why}") })?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn roundtrip(rule: AtomRule, k: u32, symbols: &[u32]) {
        let n = (symbols.len() / rule.symbols_per_step()) as u32;
        let bytes = pack(rule, k, symbols);
        assert_eq!(bytes.len() as u64, payload_bits(rule, k, n).div_ceil(8), "{rule} K {k}: bytes counted exactly");
        assert_eq!(unpack(rule, k, n, &bytes).unwrap(), symbols, "{rule} K {k}");
    }

    proptest! {
        #[test]
        fn top_m_payloads_round_trip(k in 2u32..5000, m in 1u32..12, seed in any::<u64>(), n in 1usize..6) {
            prop_assume!(m <= k && AtomRule::TopM { m }.check(k).is_ok());
            let rule = AtomRule::TopM { m };
            let mut state = seed | 1;
            let mut next = || { state ^= state << 13; state ^= state >> 7; state ^= state << 17; state };
            let mut symbols = Vec::new();
            for _ in 0..n {
                let mut set: Vec<u32> = Vec::new();
                while set.len() < m as usize {
                    let j = (next() % u64::from(k)) as u32;
                    if !set.contains(&j) { set.push(j); }
                }
                set.sort_unstable();
                symbols.extend(set);
                symbols.push((next() as u32) & (((1u64 << m) - 1) as u32));
            }
            roundtrip(rule, k, &symbols);
        }

        #[test]
        fn pursuit_payloads_round_trip(k in 2u32..70000, m in 2u32..9, c in 1u32..=8, seed in any::<u64>()) {
            prop_assume!(m <= k);
            let rule = AtomRule::Pursuit { m, bits: c };
            let mut state = seed | 1;
            let mut next = || { state ^= state << 13; state ^= state >> 7; state ^= state << 17; state };
            let mut symbols = Vec::new();
            for _ in 0..3 {
                let mut atoms: Vec<u32> = Vec::new();
                while atoms.len() < m as usize {
                    let j = (next() % u64::from(k)) as u32;
                    if !atoms.contains(&j) { atoms.push(j); }
                }
                symbols.extend(atoms);
                symbols.extend((1..m).map(|_| (next() % (1u64 << c)) as u32));
            }
            roundtrip(rule, k, &symbols);
        }
    }

    #[test]
    fn largest_ranks_fit_their_fields() {
        // The last set in colex order has rank C(K, M) − 1, the largest value of its field.
        for (k, m) in [(256u32, 8u32), (4096, 8), (1 << 24, 4)] {
            let rule = AtomRule::TopM { m };
            let last: Vec<u32> = (k - m..k).collect();
            assert_eq!(subset_rank(&last), binomial(k, m).unwrap() - 1);
            let mut symbols = last.clone();
            symbols.push((1 << m) - 1);
            roundtrip(rule, k, &symbols);
        }
    }

    #[test]
    fn a_rank_beyond_the_sets_is_refused() {
        // K = 5, M = 2: C = 10 sets in a 4-bit field; ranks 10..15 name no set.
        let rule = AtomRule::TopM { m: 2 };
        let bytes = [0x0F, 0]; // rank 15, signs 0
        let err = unpack(rule, 5, 1, &bytes[..1]).unwrap_err().to_string();
        assert!(err.contains("rank 15 is not below C(5, 2) = 10"), "{err}");
    }

    #[test]
    fn records_are_canonical() {
        for rule in [AtomRule::TopM { m: 4 }, AtomRule::Pursuit { m: 3, bits: 2 }] {
            assert_eq!(parse_record(&record(rule).unwrap(), 256).unwrap(), rule);
        }
        assert!(record(AtomRule::Single).is_none());
        assert!(parse_record(&[3, 4], 256).unwrap_err().to_string().contains("atom rule 3"));
        assert!(parse_record(&[1, 4, 0], 256).is_err(), "a trailing byte is refused");
        assert!(parse_record(&[1, 0], 256).is_err(), "M = 0 is refused");
        assert!(parse_record(&[2, 40, 2], 256).is_err(), "M beyond the limit is refused");
    }
}
