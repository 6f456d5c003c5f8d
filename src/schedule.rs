//! Time grids for Algorithm 1 and the interval schedules of Algorithm 2 (SPEC 2.5, 2.6).
//!
//! Float arithmetic that decides anything discrete is done only by the encoder: the interval
//! list `(Δ_k, r_k)` goes into the token file, and the DDPM grids are integer-only, so a
//! decoder on another machine never evaluates a float rounding (guarantee G2).

use serde::{Deserialize, Serialize};

/// One interval of an Algorithm-2 schedule: `repeats` tokens with jump size `delta`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    pub delta: f64,
    pub repeats: u32,
}

/// The ρ-spaced grid `t_k = (a^{1/ρ} + (k/n)(b^{1/ρ} − a^{1/ρ}))^ρ`, `k = 0..=n`, from `a` to `b`
/// (EDM's sampler grid; ρ = 1 is uniform). Computed with `libm` so it is the same everywhere.
pub fn rho_grid(a: f64, b: f64, n: usize, rho: f64) -> Vec<f64> {
    assert!(n > 0, "a grid needs at least one step");
    let (ia, ib) = (libm::pow(a, 1.0 / rho), libm::pow(b, 1.0 / rho));
    (0..=n)
        .map(|k| {
            if k == 0 {
                a
            } else if k == n {
                b
            } else {
                libm::pow(ia + (k as f64 / n as f64) * (ib - ia), rho)
            }
        })
        .collect()
}

/// The DDPM integer grid `t_k = ⌊(2(a(n−k) + b·k) + n)/(2n)⌋`, `k = 0..=n` (round half up in
/// integers, SPEC 2.5). Strictly decreasing when `a − b ≥ n`.
pub fn integer_grid(a: i64, b: i64, n: usize) -> Vec<i64> {
    assert!(n > 0, "a grid needs at least one step");
    let n = n as i64;
    (0..=n).map(|k| (2 * (a * (n - k) + b * k) + n).div_euclid(2 * n)).collect()
}

/// Largest-remainder rounding of `n · w_k / Σw` (SPEC 2.6 fix 1): floors first, then the
/// missing units go to the largest fractional parts, ties toward the lower `k`.
pub fn largest_remainder(weights: &[f64], n: u32) -> Vec<u32> {
    let total: f64 = weights.iter().sum();
    let quotas: Vec<f64> = weights.iter().map(|w| n as f64 * w / total).collect();
    let mut out: Vec<u32> = quotas.iter().map(|q| q.floor() as u32).collect();
    let assigned: u32 = out.iter().sum();
    let mut order: Vec<usize> = (0..weights.len()).collect();
    // Stable sort keeps lower k first among equal remainders.
    order.sort_by(|&a, &b| {
        let (ra, rb) = (quotas[a] - quotas[a].floor(), quotas[b] - quotas[b].floor());
        rb.partial_cmp(&ra).unwrap_or(std::cmp::Ordering::Equal)
    });
    for &k in order.iter().take(n.saturating_sub(assigned) as usize) {
        out[k] += 1;
    }
    out
}

/// The repeat weight `ω(m) = (1 + (m/P)(σ_max^{1/ρ} − 1))^ρ` of eqs. 10 and 13.
fn repeat_weight(m: f64, intervals: usize, sigma_max: f64, rho: f64) -> f64 {
    libm::pow(1.0 + (m / intervals as f64) * (libm::pow(sigma_max, 1.0 / rho) - 1.0), rho)
}

/// The continuous interval schedule (eqs. 9, 10 with the fixes of SPEC 2.6): `P` intervals with
/// `Δ_k = Δ_min^{k/P} Δ_max^{(P−k)/P}`, repeats by largest remainder, visited in decreasing Δ;
/// intervals with no repeats are dropped.
pub fn continuous_intervals(
    n: u32,
    intervals: usize,
    dt_min: f64,
    dt_max: f64,
    sigma_max: f64,
    rho: f64,
) -> Vec<Interval> {
    assert!(intervals > 0, "at least one interval");
    let p = intervals as f64;
    let deltas: Vec<f64> =
        (0..intervals).map(|k| libm::pow(dt_min, k as f64 / p) * libm::pow(dt_max, (p - k as f64) / p)).collect();
    let weights: Vec<f64> = (0..intervals).map(|k| repeat_weight(k as f64, intervals, sigma_max, rho)).collect();
    let repeats = largest_remainder(&weights, n);
    let mut out: Vec<Interval> = deltas
        .into_iter()
        .zip(repeats)
        .filter(|&(_, r)| r > 0)
        .map(|(delta, repeats)| Interval { delta, repeats })
        .collect();
    out.sort_by(|a, b| b.delta.partial_cmp(&a.delta).unwrap_or(std::cmp::Ordering::Equal));
    out
}

/// The discrete (DDPM) interval schedule (eqs. 12, 13 with the fixes of SPEC 2.6): integer
/// steps `Δ_k = Δ_min + k`, `k < P`, exponents `m_k = P ln(Δ_max/Δ_k)/ln(Δ_max/Δ_min)` with
/// `Δ_max = Δ_min + P`, repeats by largest remainder, visited in decreasing Δ.
pub fn discrete_intervals(n: u32, intervals: usize, dt_min: u32, sigma_max: f64, rho: f64) -> Vec<Interval> {
    assert!(intervals > 0 && dt_min >= 1, "at least one interval and Δ_min ≥ 1");
    let p = intervals as f64;
    let dt_max = (dt_min as usize + intervals) as f64;
    let weights: Vec<f64> = (0..intervals)
        .map(|k| {
            let dk = (dt_min as usize + k) as f64;
            let m = p * libm::log(dt_max / dk) / libm::log(dt_max / dt_min as f64);
            repeat_weight(m, intervals, sigma_max, rho)
        })
        .collect();
    let repeats = largest_remainder(&weights, n);
    (0..intervals)
        .rev()
        .filter(|&k| repeats[k] > 0)
        .map(|k| Interval { delta: (dt_min as usize + k) as f64, repeats: repeats[k] })
        .collect()
}

/// Total number of tokens of a schedule.
pub fn total_repeats(schedule: &[Interval]) -> u64 {
    schedule.iter().map(|i| i.repeats as u64).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_examples() {
        // discrete_output.txt (3): continuous N=300 P=5 dt∈[0.01,0.4] σmax=10 ρ=7.
        let c = continuous_intervals(300, 5, 0.01, 0.4, 10.0, 7.0);
        assert_eq!(c.iter().map(|i| i.repeats).collect::<Vec<_>>(), vec![18, 31, 50, 79, 122]);
        assert!((c[1].delta - 0.1913).abs() < 1e-4);
        // discrete N=300 P=6 dt_min=2: r = 123, 68, 43, 29, 21, 16 for Δ = 2..7, visited 7 → 2.
        let d = discrete_intervals(300, 6, 2, 10.0, 7.0);
        assert_eq!(
            d.iter().map(|i| (i.delta as u32, i.repeats)).collect::<Vec<_>>(),
            vec![(7, 16), (6, 21), (5, 29), (4, 43), (3, 68), (2, 123)]
        );
    }

    #[test]
    fn ddcm_grid() {
        let g = integer_grid(999, 0, 300);
        assert_eq!((g[0], g[300], g.len()), (999, 0, 301));
        assert!(g.windows(2).all(|w| w[0] > w[1]));
    }
}
