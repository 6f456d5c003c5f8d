//! Token payload packing (SPEC 6): `N` indices below `K` in exactly `⌈N·log2 K⌉` bits.
//!
//! The payload is the little-endian byte string of the integer `V = Σ_i t_i·K^i` (token 0 is
//! the least significant digit), padded with zero bits to whole bytes. When `K = 2^m` this is
//! plain LSB-first bit packing at `m` bits per token, so both cases share one definition; the
//! power-of-two case just takes a linear-time path.
//!
//! For other `K` the base conversion is a schoolbook multi-limb one (quadratic in the payload
//! size), which is why [`super::MAX_MIXED_RADIX_BITS`] bounds the payload of such files.

use super::FormatError;

/// Largest `c` with `K^c ≤ u64::MAX`, and `K^c` itself.
fn group(k: u32) -> (usize, u64) {
    let mut c = 0usize;
    let mut pow = 1u64;
    while let Some(next) = pow.checked_mul(u64::from(k)) {
        pow = next;
        c += 1;
    }
    (c, pow)
}

/// `K^g` for `g ≤ group(k).0`.
fn pow_small(k: u32, g: usize) -> u64 {
    (0..g).fold(1u64, |acc, _| acc * u64::from(k))
}

/// `limbs ← limbs·mult + add` (little-endian u64 limbs).
fn mul_add(limbs: &mut Vec<u64>, mult: u64, add: u64) {
    let mut carry = u128::from(add);
    for l in limbs.iter_mut() {
        let x = u128::from(*l) * u128::from(mult) + carry;
        *l = x as u64;
        carry = x >> 64;
    }
    if carry != 0 {
        limbs.push(carry as u64);
    }
}

/// `limbs ← limbs / d`, returns the remainder; trims high zero limbs.
fn div_rem(limbs: &mut Vec<u64>, d: u64) -> u64 {
    let d = u128::from(d);
    let mut rem = 0u128;
    for l in limbs.iter_mut().rev() {
        let x = (rem << 64) | u128::from(*l);
        *l = (x / d) as u64;
        rem = x % d;
    }
    while limbs.last() == Some(&0) {
        limbs.pop();
    }
    rem as u64
}

/// Bit length of `K^N`, computed exactly with multi-limb arithmetic.
///
/// Used only when the floating-point estimate of `N·log2 K` is too close to an integer to be
/// trusted; the caller bounds `N·log2 K` first, so the cost is bounded.
pub(super) fn bit_length_of_power(k: u32, n: u32) -> u64 {
    let (c, kc) = group(k);
    let mut limbs = vec![1u64];
    let mut left = n as usize;
    while left > 0 {
        let g = left.min(c);
        let mult = if g == c { kc } else { pow_small(k, g) };
        mul_add(&mut limbs, mult, 0);
        left -= g;
    }
    let top = *limbs.last().expect("K^N ≥ 1");
    (limbs.len() as u64 - 1) * 64 + u64::from(64 - top.leading_zeros())
}

/// Number of payload bits for `N` tokens below `K`: `⌈N·log2 K⌉` (SPEC 6).
///
/// Exact for every `K` in `2..=2^24` and `N ≤` [`super::MAX_N`]: powers of two use integer
/// arithmetic; otherwise `K^N` is not a power of two, so the answer is `⌊N·log2 K⌋ + 1`, taken
/// from `libm::log2` when the product is at least `1e-6` away from an integer (the error of the
/// product is below `1e-8` there) and from an exact multi-limb `K^N` otherwise. The result thus
/// never depends on the platform's libm (SPEC 5 G2). Returns 0 for `K < 2` or `N = 0`, and a
/// float estimate for `N` beyond the cap (such headers are rejected anyway).
pub fn packed_bits(k: u32, n: u32) -> u64 {
    if k < 2 || n == 0 {
        return 0;
    }
    if k.is_power_of_two() {
        return u64::from(n) * u64::from(k.trailing_zeros());
    }
    let x = f64::from(n) * libm::log2(f64::from(k));
    let floor = x.floor();
    let frac = x - floor;
    if n > super::MAX_N || (frac > 1e-6 && frac < 1.0 - 1e-6) {
        return floor as u64 + 1;
    }
    if x > (super::MAX_MIXED_RADIX_BITS + 64) as f64 {
        // Beyond what a file may hold: the estimate only has to be good enough to reject it.
        return x.ceil() as u64;
    }
    bit_length_of_power(k, n)
}

/// Bytes of a payload of `bits` bits.
pub(super) fn bytes_for_bits(bits: u64) -> u64 {
    bits.div_ceil(8)
}

/// Packs tokens (all `< k`, `k ≥ 2`, checked by the caller) into `⌈bits/8⌉` bytes.
pub(super) fn pack(tokens: &[u32], k: u32, bits: u64) -> Vec<u8> {
    let nbytes = bytes_for_bits(bits) as usize;
    if k.is_power_of_two() {
        pack_pow2(tokens, k.trailing_zeros(), nbytes)
    } else {
        pack_mixed_radix(tokens, k, nbytes)
    }
}

fn pack_pow2(tokens: &[u32], m: u32, nbytes: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(nbytes);
    let mut acc = 0u64;
    let mut nacc = 0u32;
    for &t in tokens {
        acc |= u64::from(t) << nacc;
        nacc += m;
        while nacc >= 8 {
            out.push(acc as u8);
            acc >>= 8;
            nacc -= 8;
        }
    }
    if nacc > 0 {
        out.push(acc as u8);
    }
    debug_assert_eq!(out.len(), nbytes);
    out
}

pub(super) fn pack_mixed_radix(tokens: &[u32], k: u32, nbytes: usize) -> Vec<u8> {
    let (c, kc) = group(k);
    let mut limbs: Vec<u64> = Vec::with_capacity(nbytes / 8 + 1);
    // Horner from the most significant digit, c digits at a time.
    let mut hi = tokens.len();
    while hi > 0 {
        let lo = hi.saturating_sub(c);
        let g = hi - lo;
        let digits = tokens[lo..hi].iter().rev().fold(0u64, |acc, &t| acc * u64::from(k) + u64::from(t));
        let mult = if g == c { kc } else { pow_small(k, g) };
        mul_add(&mut limbs, mult, digits);
        hi = lo;
    }
    let mut out: Vec<u8> = limbs.iter().flat_map(|l| l.to_le_bytes()).collect();
    debug_assert!(out[nbytes.min(out.len())..].iter().all(|&b| b == 0));
    out.resize(nbytes, 0);
    out
}

/// Checks that the bits after `bits` in the last byte are zero.
pub(super) fn check_padding(payload: &[u8], bits: u64) -> Result<(), FormatError> {
    let used = (bits % 8) as u32;
    if used != 0 {
        let last = *payload.last().expect("bits > 0 implies a byte");
        let found = last >> used;
        if found != 0 {
            return Err(FormatError::NonZeroPadding { bits, unused: 8 - used, found });
        }
    }
    Ok(())
}

/// Unpacks `n ≥ 1` tokens below `k` from a payload of exactly `⌈bits/8⌉` bytes.
///
/// Rejects non-zero padding and (mixed radix) an integer `≥ K^N`, which shows up as a last
/// token `≥ K`.
pub(super) fn unpack(payload: &[u8], k: u32, n: u32, bits: u64) -> Result<Vec<u32>, FormatError> {
    debug_assert_eq!(payload.len() as u64, bytes_for_bits(bits));
    check_padding(payload, bits)?;
    if k.is_power_of_two() {
        Ok(unpack_pow2(payload, k.trailing_zeros(), n))
    } else {
        unpack_mixed_radix(payload, k, n)
    }
}

fn unpack_pow2(payload: &[u8], m: u32, n: u32) -> Vec<u32> {
    let mask = (1u64 << m) - 1;
    let mut out = Vec::with_capacity(n as usize);
    let mut acc = 0u64;
    let mut nacc = 0u32;
    let mut bytes = payload.iter();
    for _ in 0..n {
        while nacc < m {
            let b = bytes.next().copied().unwrap_or(0);
            acc |= u64::from(b) << nacc;
            nacc += 8;
        }
        out.push((acc & mask) as u32);
        acc >>= m;
        nacc -= m;
    }
    out
}

fn unpack_mixed_radix(payload: &[u8], k: u32, n: u32) -> Result<Vec<u32>, FormatError> {
    let (c, kc) = group(k);
    let mut limbs: Vec<u64> = payload
        .chunks(8)
        .map(|ch| {
            let mut b = [0u8; 8];
            b[..ch.len()].copy_from_slice(ch);
            u64::from_le_bytes(b)
        })
        .collect();
    while limbs.last() == Some(&0) {
        limbs.pop();
    }
    let n = n as usize;
    let mut out = vec![0u32; n];
    let mut i = 0usize;
    while i + 1 < n {
        let g = c.min(n - 1 - i);
        let d = if g == c { kc } else { pow_small(k, g) };
        let mut rem = div_rem(&mut limbs, d);
        for slot in &mut out[i..i + g] {
            *slot = (rem % u64::from(k)) as u32;
            rem /= u64::from(k);
        }
        i += g;
    }
    // What is left is the most significant digit; it must be a token.
    let last = match limbs.as_slice() {
        [] => 0,
        [v] => *v,
        _ => u64::MAX,
    };
    if last >= u64::from(k) {
        return Err(FormatError::TokenOutOfRange { index: n - 1, value: last, k });
    }
    out[n - 1] = last as u32;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_is_maximal() {
        for k in [2u32, 3, 5, 1000, 65_537, (1 << 24) - 1, 1 << 24] {
            let (c, kc) = group(k);
            assert_eq!(kc, pow_small(k, c));
            assert!(kc.checked_mul(u64::from(k)).is_none());
        }
    }

    #[test]
    fn bit_length_matches_small_cases() {
        // 3^1 = 3 (2 bits), 3^2 = 9 (4 bits), 3^5 = 243 (8 bits), 1000^2 = 10^6 (20 bits)
        assert_eq!(bit_length_of_power(3, 1), 2);
        assert_eq!(bit_length_of_power(3, 2), 4);
        assert_eq!(bit_length_of_power(3, 5), 8);
        assert_eq!(bit_length_of_power(1000, 2), 20);
        assert_eq!(bit_length_of_power(2, 64), 65);
        assert_eq!(packed_bits(3, 5), 8);
        assert_eq!(packed_bits(1000, 2), 20);
    }

    #[test]
    fn fast_bits_match_exact_bits() {
        let ks = [3u32, 5, 6, 7, 10, 100, 255, 257, 1000, 4095, 65_535, (1 << 24) - 1];
        for &k in &ks {
            for n in (1..=3000u32).step_by(7).chain([4096]) {
                let x = f64::from(n) * libm::log2(f64::from(k));
                if x > 100_000.0 {
                    continue;
                }
                assert_eq!(packed_bits(k, n), bit_length_of_power(k, n), "K={k} N={n}");
            }
        }
    }

    #[test]
    fn near_integer_product_takes_the_exact_path() {
        // 190537·log2 3 = 301993.99999990…: 3^190537 is just below 2^301994.
        let x = 190_537.0 * libm::log2(3.0);
        assert!((x - x.round()).abs() < 1e-6, "{x}");
        assert_eq!(packed_bits(3, 190_537), 301_994);
        assert_eq!(bit_length_of_power(3, 190_537), 301_994);
        // K = 2^24 − 1: N·log2 K is just below 24·N for small N.
        for n in 1..=11u32 {
            assert_eq!(packed_bits((1 << 24) - 1, n), 24 * u64::from(n));
        }
    }

    #[test]
    fn mixed_radix_equals_bit_packing_for_powers_of_two() {
        for m in 1..=24u32 {
            let k = 1u32 << m;
            let tokens: Vec<u32> = (0..97u32).map(|i| i.wrapping_mul(2_654_435_761) % k).collect();
            let bits = packed_bits(k, tokens.len() as u32);
            let nbytes = bytes_for_bits(bits) as usize;
            let a = pack_pow2(&tokens, m, nbytes);
            let b = pack_mixed_radix(&tokens, k, nbytes);
            assert_eq!(a, b, "K = 2^{m}");
            assert_eq!(unpack_mixed_radix(&b, k, tokens.len() as u32).unwrap(), tokens);
        }
    }

    #[test]
    fn mixed_radix_extremes_round_trip() {
        for k in [3u32, 1000, (1 << 24) - 1] {
            for n in [1u32, 2, 3, 50, 301] {
                for fill in [0u32, k - 1] {
                    let tokens = vec![fill; n as usize];
                    let bits = packed_bits(k, n);
                    let bytes = pack(&tokens, k, bits);
                    assert_eq!(bytes.len() as u64, bytes_for_bits(bits));
                    assert_eq!(unpack(&bytes, k, n, bits).unwrap(), tokens, "K={k} N={n}");
                }
            }
        }
    }
}
