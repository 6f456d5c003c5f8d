//! Helpers for the CPU kernels of [`super::ops`]: runtime ISA dispatch and small loops written
//! so that LLVM vectorises them.
//!
//! The crate is built for baseline x86-64 (SSE2), where these loops run 4 lanes wide at best.
//! [`multiversion!`] compiles a kernel again for AVX-512 and for AVX2+FMA and picks the copy
//! the CPU supports at run time (the `gemm` crate does the same for its kernels).

#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Isa {
    Avx512,
    Avx2,
    Baseline,
}

#[cfg(target_arch = "x86_64")]
pub(crate) fn isa() -> Isa {
    static ISA: std::sync::OnceLock<Isa> = std::sync::OnceLock::new();
    *ISA.get_or_init(|| {
        if is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            Isa::Avx512
        } else if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            Isa::Avx2
        } else {
            Isa::Baseline
        }
    })
}

/// Defines `pub fn $name(args) -> ret` that runs `$body(args)` compiled for the widest vector
/// ISA this CPU has. `$body` and what it calls must be `#[inline(always)]`, so that they are
/// compiled again inside each ISA-specific copy (a closure would not be inlined reliably).
macro_rules! multiversion {
    ($(#[$m:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),*) $(-> $ret:ty)? = $body:path) => {
        $(#[$m])*
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx2,fma")]
                fn avx512($($arg: $ty),*) $(-> $ret)? {
                    $body($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                fn avx2($($arg: $ty),*) $(-> $ret)? {
                    $body($($arg),*)
                }
                match $crate::nn::kernels::simd::isa() {
                    // SAFETY: the CPU has the features these copies are compiled for (checked
                    // by `isa`).
                    $crate::nn::kernels::simd::Isa::Avx512 => unsafe { avx512($($arg),*) },
                    $crate::nn::kernels::simd::Isa::Avx2 => unsafe { avx2($($arg),*) },
                    $crate::nn::kernels::simd::Isa::Baseline => $body($($arg),*),
                }
            }
            #[cfg(not(target_arch = "x86_64"))]
            $body($($arg),*)
        }
    };
}
pub(crate) use multiversion;

const LANES: usize = 8;

/// Accumulators of [`lane_sum`] over long slices: four AVX-512 vectors of f64, so that four
/// additions are in flight instead of one waiting on the last (the statistics passes of
/// GroupNorm were bound by that chain's latency).
const SUM_LANES: usize = 4 * LANES;

/// `Σ f(x)` in f64, in `N` independent accumulators (so that the loop vectorises). They are
/// added up one by one at the end, which on short slices costs more than a long `N` saves.
#[inline(always)]
fn lane_sum<const N: usize>(xs: &[f32], f: impl Fn(f32) -> f64) -> f64 {
    let mut acc = [0f64; N];
    let chunks = xs.chunks_exact(N);
    let tail = chunks.remainder();
    for c in chunks {
        for j in 0..N {
            acc[j] += f(c[j]);
        }
    }
    acc.iter().sum::<f64>() + tail.iter().map(|&v| f(v)).sum::<f64>()
}

/// `Σ (x − shift)` in f64.
#[inline(always)]
pub fn sum_f64(xs: &[f32], shift: f64) -> f64 {
    lane_sum::<SUM_LANES>(xs, |v| v as f64 - shift)
}

/// `Σ (x − mean)²` in f64.
#[inline(always)]
pub fn sum_sq_dev_f64(xs: &[f32], mean: f64) -> f64 {
    lane_sum::<SUM_LANES>(xs, |v| (v as f64 - mean) * (v as f64 - mean))
}

/// `e^x` for f32 without branches or calls, so loops over it vectorise: `x = n·ln2 + r`
/// with |r| ≤ ln2/2, `e^r` by its Taylor series to degree 7 (truncation error < 1e-8
/// relative, below f32's 6e-8), times `2^n` built in the exponent bits. Inputs are clamped to
/// [−87.3, 88.7], where `e^x` is a normal f32; relative error ≤ 2 ulp against libm's `expf`
/// (tested below).
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split so that n·LN2_HI is exact for |n| < 2^9.
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    let x = x.clamp(-87.3, 88.7);
    // Round to nearest by the 1.5·2^23 trick (`floor` is a libm call on baseline x86-64).
    const SHIFTER: f32 = 12_582_912.0;
    let shifted = x * LOG2E + SHIFTER;
    let n = shifted - SHIFTER;
    let r = (x - n * LN2_HI) - n * LN2_LO;
    // Horner form of 1 + r + r²/2! + … + r⁷/7!.
    let mut p = 1.0 / 5040.0;
    p = p * r + 1.0 / 720.0;
    p = p * r + 1.0 / 120.0;
    p = p * r + 1.0 / 24.0;
    p = p * r + 1.0 / 6.0;
    p = p * r + 0.5;
    p = p * r + 1.0;
    p = p * r + 1.0;
    // n as an integer from the mantissa of `shifted` (whose unit is 1): `n as i32` would be
    // a saturating conversion, which LLVM does lane by lane in scalar code.
    let n = shifted.to_bits() as i32 - SHIFTER.to_bits() as i32;
    // 2^n as two normal factors, since n reaches 128 near the top of the range.
    let pow2 = |e: i32| f32::from_bits(((e + 127) as u32) << 23);
    p * pow2(n >> 1) * pow2(n - (n >> 1))
}

multiversion!(
    /// Softmax in place of each `d`-value row of `rows`.
    pub fn softmax_rows(rows: &mut [f32], d: usize) = softmax_rows_body
);

#[inline(always)]
fn softmax_rows_body(rows: &mut [f32], d: usize) {
    // Plain loops: an iterator adaptor taking a closure (`for_each`, `fold`) may stay an
    // out-of-line generic function, compiled for the baseline ISA instead of this copy's.
    for row in rows.chunks_mut(d) {
        softmax_row(row);
    }
}

/// Softmax of one row in place: `e^(x − max) / Σ`, with the sum in f64.
#[inline(always)]
pub fn softmax_row(row: &mut [f32]) {
    // A compare-select maximum vectorises (`f32::max`'s NaN rule does not); NaN logits
    // would poison the row either way.
    let mut lanes = [f32::NEG_INFINITY; LANES];
    let chunks = row.chunks_exact(LANES);
    let tail = chunks.remainder();
    for c in chunks {
        for j in 0..LANES {
            lanes[j] = if c[j] > lanes[j] { c[j] } else { lanes[j] };
        }
    }
    let mut max = f32::NEG_INFINITY;
    for &v in lanes.iter().chain(tail) {
        max = if v > max { v } else { max };
    }
    for v in row.iter_mut() {
        *v = exp(*v - max);
    }
    // Rows are 64–1024 values: one vector of accumulators (see `lane_sum`).
    let inv = (1.0 / lane_sum::<LANES>(row, |v| v as f64)) as f32;
    for v in row.iter_mut() {
        *v *= inv;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_within_two_ulp_of_libm() {
        let mut worst = 0f64;
        let mut x = -87.0f32;
        while x < 88.5 {
            let (a, b) = (exp(x) as f64, x.exp() as f64);
            let ulp = (b.abs() * f32::EPSILON as f64).max(f32::MIN_POSITIVE as f64);
            worst = worst.max((a - b).abs() / ulp);
            x += 0.000_731;
        }
        assert!(worst <= 2.0, "worst error {worst} ulp");
        assert!(exp(-200.0) > 0.0 && exp(-200.0) < 1e-37);
        assert!(exp(200.0).is_finite());
    }

    #[test]
    fn vectorised_loops_match_the_scalar_definitions() {
        let xs: Vec<f32> = (0..1003).map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0).collect();
        let s: f64 = xs.iter().map(|&v| v as f64).sum();
        let q: f64 = xs.iter().map(|&v| (v as f64 - 1.5).powi(2)).sum();
        assert!((sum_f64(&xs, 0.0) - s).abs() < 1e-9 * s.abs().max(1.0));
        assert!((sum_sq_dev_f64(&xs, 1.5) - q).abs() < 1e-9 * q);
        let mut row = xs[..77].to_vec();
        softmax_rows(&mut row, 77);
        let m = xs[..77].iter().fold(f32::MIN, |a, &b| a.max(b)) as f64;
        let z: f64 = xs[..77].iter().map(|&v| (v as f64 - m).exp()).sum();
        for (r, &v) in row.iter().zip(&xs[..77]) {
            let want = (v as f64 - m).exp() / z;
            assert!((*r as f64 - want).abs() <= 1e-6 * want + 1e-12, "{r} vs {want}");
        }
    }
}
