//! Frechet distance between feature sets (the FID formula) and the Inception Score, in `f64`.
//!
//! Statistics follow pytorch-fid: `mu` is the mean of the rows and `sigma` the unbiased
//! covariance (divided by `N − 1`, as `np.cov`). The distance is
//! `‖mu1 − mu2‖² + tr(S1) + tr(S2) − 2 tr sqrt(S1 S2)`. pytorch-fid takes the trace of
//! `scipy.linalg.sqrtm(S1 S2)`; here it is computed through symmetric eigendecompositions,
//! `tr sqrt(S1 S2) = Σ_i sqrt(λ_i(√S1 · S2 · √S1))` with eigenvalues clamped at 0, which agrees
//! with pytorch-fid to ~1e-12 on well-conditioned inputs and never produces complex values.
//!
//! These functions are feature-agnostic: with Inception pool3 features they give FID, with
//! the [`crate::metrics::standin`] classifier features they give a *stand-in* distance that
//! must not be reported as FID.

use super::{invalid, MetricsError, Result};
use nalgebra::{DMatrix, DVector, SymmetricEigen};

/// Mean and unbiased covariance of a set of feature vectors.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureStats {
    /// Number of feature vectors the statistics were computed from.
    pub n: usize,
    /// Mean feature vector, length `dim`.
    pub mu: Vec<f64>,
    /// Covariance, `dim × dim`, row-major, divided by `n − 1`.
    pub sigma: Vec<f64>,
}

impl FeatureStats {
    /// Feature dimension.
    pub fn dim(&self) -> usize {
        self.mu.len()
    }

    /// Statistics of `n` feature vectors of length `dim` stored row-major in `features`
    /// (`features.len() == n * dim`). Needs `n >= 2`.
    pub fn from_features(features: &[f64], n: usize, dim: usize) -> Result<Self> {
        if dim == 0 {
            return invalid("feature dimension must be non-zero");
        }
        if n < 2 {
            return invalid(format!("need at least 2 feature vectors for a covariance, got {n}"));
        }
        if features.len() != n * dim {
            return invalid(format!(
                "features have {} values, expected n*dim = {n}*{dim} = {}",
                features.len(),
                n * dim
            ));
        }
        if features.iter().any(|v| !v.is_finite()) {
            return invalid("features contain NaN or infinite values");
        }
        let x = DMatrix::from_row_slice(n, dim, features);
        let mu: Vec<f64> = (0..dim).map(|j| x.column(j).sum() / n as f64).collect();
        let mut xc = x;
        for (j, &m) in mu.iter().enumerate() {
            xc.column_mut(j).iter_mut().for_each(|v| *v -= m);
        }
        let cov = xc.tr_mul(&xc) / (n as f64 - 1.0);
        // Row-major copy of a symmetric matrix: symmetrise to remove round-off asymmetry.
        let mut sigma = vec![0.0; dim * dim];
        for i in 0..dim {
            for j in 0..dim {
                sigma[i * dim + j] = 0.5 * (cov[(i, j)] + cov[(j, i)]);
            }
        }
        Ok(Self { n, mu, sigma })
    }

    /// Same as [`FeatureStats::from_features`] for `f32` features (widened to `f64`).
    pub fn from_features_f32(features: &[f32], n: usize, dim: usize) -> Result<Self> {
        let v: Vec<f64> = features.iter().map(|&x| x as f64).collect();
        Self::from_features(&v, n, dim)
    }

    fn check(&self) -> Result<()> {
        let d = self.dim();
        if d == 0 || self.sigma.len() != d * d {
            return invalid(format!("statistics are inconsistent: mu has {} entries, sigma {}", d, self.sigma.len()));
        }
        Ok(())
    }
}

/// `tr sqrt(S1 S2)` for symmetric positive semi-definite `S1`, `S2` via
/// `Σ sqrt(λ(√S1 S2 √S1))`.
///
/// Eigenvalues below `dim · ε · max|λ|` (round-off level, including negative ones) are set to
/// 0 in both decompositions. Without that, a rank-deficient covariance (fewer samples than
/// dimensions) would add the square roots of thousands of round-off eigenvalues and give
/// `FID(a, a) ≠ 0`; for full-rank inputs the change is far below the 1e-8 agreement with
/// pytorch-fid.
pub fn trace_sqrt_product(s1: &DMatrix<f64>, s2: &DMatrix<f64>) -> Result<f64> {
    let sym = |m: &DMatrix<f64>| (m + m.transpose()) * 0.5;
    let e1 = SymmetricEigen::try_new(sym(s1), f64::EPSILON, 0)
        .ok_or_else(|| MetricsError::Numerical("eigendecomposition of S1 failed".into()))?;
    let sqrt_vals = DVector::from_vec(clamped(e1.eigenvalues.as_slice())).map(f64::sqrt);
    let q = &e1.eigenvectors;
    let r = q * DMatrix::from_diagonal(&sqrt_vals) * q.transpose();
    let m = sym(&(&r * s2 * &r));
    let e2 = SymmetricEigen::try_new(m, f64::EPSILON, 0)
        .ok_or_else(|| MetricsError::Numerical("eigendecomposition of √S1·S2·√S1 failed".into()))?;
    Ok(clamped(e2.eigenvalues.as_slice()).into_iter().map(f64::sqrt).sum())
}

/// Eigenvalues with those at round-off level (or negative) set to 0.
fn clamped(eig: &[f64]) -> Vec<f64> {
    let max = eig.iter().fold(0.0f64, |m, l| m.max(l.abs()));
    let tol = eig.len() as f64 * f64::EPSILON * max;
    eig.iter().map(|&l| if l > tol { l } else { 0.0 }).collect()
}

/// Frechet distance between two Gaussians given by their statistics.
pub fn frechet_distance(a: &FeatureStats, b: &FeatureStats) -> Result<f64> {
    a.check()?;
    b.check()?;
    let d = a.dim();
    if b.dim() != d {
        return invalid(format!("feature dimensions differ: {} vs {}", a.dim(), b.dim()));
    }
    let mean_sq: f64 = a.mu.iter().zip(&b.mu).map(|(x, y)| (x - y) * (x - y)).sum();
    let s1 = DMatrix::from_row_slice(d, d, &a.sigma);
    let s2 = DMatrix::from_row_slice(d, d, &b.sigma);
    if s1.iter().chain(s2.iter()).any(|v| !v.is_finite()) {
        return invalid("covariance contains NaN or infinite values");
    }
    let tr = trace_sqrt_product(&s1, &s2)?;
    Ok(mean_sq + s1.trace() + s2.trace() - 2.0 * tr)
}

/// Frechet distance between two sets of feature vectors (row-major, `dim` columns).
pub fn frechet_distance_from_features(a: &[f64], n_a: usize, b: &[f64], n_b: usize, dim: usize) -> Result<f64> {
    frechet_distance(&FeatureStats::from_features(a, n_a, dim)?, &FeatureStats::from_features(b, n_b, dim)?)
}

/// Inception Score of `n` logit rows with `k` classes (row-major `logits`), split into
/// `splits` consecutive groups as in the original improved-GAN code (group `i` holds rows
/// `i*n/splits .. (i+1)*n/splits`). Returns the mean and the population standard deviation
/// of `exp(E_x KL(p(y|x) ‖ p(y)))` over the groups.
///
/// Which logits to pass is a convention: the original TensorFlow code and torch-fidelity use
/// the 1008 Inception logits without the fc bias
/// ([`crate::metrics::inception::InceptionOutput::logits_unbiased`]) over all
/// 1008 classes; some reimplementations keep only the first 1000. Use
/// [`select_classes`] for the latter.
pub fn inception_score(logits: &[f64], n: usize, k: usize, splits: usize) -> Result<(f64, f64)> {
    if k == 0 || n == 0 {
        return invalid("inception score needs at least one row and one class");
    }
    if logits.len() != n * k {
        return invalid(format!("logits have {} values, expected n*k = {n}*{k}", logits.len()));
    }
    if splits == 0 || splits > n {
        return invalid(format!("splits must be in 1..={n} (number of rows), got {splits}"));
    }
    if logits.iter().any(|v| !v.is_finite()) {
        return invalid("logits contain NaN or infinite values");
    }
    // Softmax rows.
    let mut p = vec![0.0; n * k];
    for i in 0..n {
        let row = &logits[i * k..(i + 1) * k];
        let m = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let mut s = 0.0;
        for j in 0..k {
            let e = (row[j] - m).exp();
            p[i * k + j] = e;
            s += e;
        }
        p[i * k..(i + 1) * k].iter_mut().for_each(|v| *v /= s);
    }
    let mut scores = Vec::with_capacity(splits);
    for s in 0..splits {
        let (lo, hi) = (s * n / splits, (s + 1) * n / splits);
        let m = (hi - lo) as f64;
        let mut py = vec![0.0; k];
        for i in lo..hi {
            for j in 0..k {
                py[j] += p[i * k + j] / m;
            }
        }
        let mut kl = 0.0;
        for i in lo..hi {
            for j in 0..k {
                let q = p[i * k + j];
                if q > 0.0 {
                    kl += q * (q.ln() - py[j].ln());
                }
            }
        }
        scores.push((kl / m).exp());
    }
    let mean = scores.iter().sum::<f64>() / splits as f64;
    let var = scores.iter().map(|s| (s - mean) * (s - mean)).sum::<f64>() / splits as f64;
    Ok((mean, var.sqrt()))
}

/// Which of the 1008 Inception logits the Inception Score uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IsClasses {
    /// All 1008 (the original improved-GAN code and torch-fidelity; the default).
    #[default]
    All1008,
    /// Only the first 1000, as some reimplementations do.
    First1000,
}

/// Inception Score of `n` rows of the 1008 unbiased Inception logits with the chosen class
/// convention (see [`inception_score`]).
pub fn inception_score_1008(logits: &[f64], n: usize, classes: IsClasses, splits: usize) -> Result<(f64, f64)> {
    match classes {
        IsClasses::All1008 => inception_score(logits, n, 1008, splits),
        IsClasses::First1000 => inception_score(&select_classes(logits, n, 1008, 1000)?, n, 1000, splits),
    }
}

/// Keeps the first `keep` of `k` columns of `n` row-major logit rows.
pub fn select_classes(logits: &[f64], n: usize, k: usize, keep: usize) -> Result<Vec<f64>> {
    if keep == 0 || keep > k || logits.len() != n * k {
        return invalid(format!("cannot keep {keep} of {k} classes from {} values ({n} rows)", logits.len()));
    }
    Ok((0..n).flat_map(|i| logits[i * k..i * k + keep].iter().cloned()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feats(n: usize, d: usize, seed: u64) -> Vec<f64> {
        let mut s = seed;
        (0..n * d)
            .map(|_| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((s >> 11) as f64 / (1u64 << 53) as f64) - 0.5
            })
            .collect()
    }

    #[test]
    fn same_set_is_zero() {
        let a = feats(50, 8, 1);
        let d = frechet_distance_from_features(&a, 50, &a, 50, 8).unwrap();
        assert!(d.abs() < 1e-10, "{d}");
    }

    #[test]
    fn shifted_mean_adds_squared_norm() {
        let a = feats(40, 4, 2);
        let b: Vec<f64> = a.iter().map(|v| v + 1.0).collect();
        let d = frechet_distance_from_features(&a, 40, &b, 40, 4).unwrap();
        assert!((d - 4.0).abs() < 1e-9, "{d}");
    }

    #[test]
    fn inception_score_bounds() {
        // Uniform predictions: IS = 1. One-hot distinct predictions: IS = number of classes.
        let (m, s) = inception_score(&[0.0; 20], 5, 4, 1).unwrap();
        assert!((m - 1.0).abs() < 1e-12 && s == 0.0);
        let mut l = vec![-100.0; 16];
        for i in 0..4 {
            l[i * 4 + i] = 100.0;
        }
        let (m, _) = inception_score(&l, 4, 4, 1).unwrap();
        assert!((m - 4.0).abs() < 1e-9, "{m}");
        assert!(inception_score(&l, 4, 4, 5).is_err());
        assert!(inception_score(&l, 4, 3, 1).is_err());
        // Class selection: a 1008-wide row whose mass sits in the last 8 classes.
        let mut wide = vec![0.0; 2 * 1008];
        wide[1007] = 50.0;
        wide[1008] = 50.0;
        let (all, _) = inception_score_1008(&wide, 2, IsClasses::All1008, 1).unwrap();
        let (first, _) = inception_score_1008(&wide, 2, IsClasses::First1000, 1).unwrap();
        assert!(all > 1.9 && first < all, "{all} {first}");
    }

    #[test]
    fn bad_inputs_are_errors() {
        assert!(FeatureStats::from_features(&[1.0, 2.0], 1, 2).is_err());
        assert!(FeatureStats::from_features(&[1.0, 2.0, 3.0], 2, 2).is_err());
        assert!(FeatureStats::from_features(&[1.0, f64::NAN, 3.0, 4.0], 2, 2).is_err());
        let a = FeatureStats::from_features(&feats(4, 2, 3), 4, 2).unwrap();
        let b = FeatureStats::from_features(&feats(4, 3, 3), 4, 3).unwrap();
        assert!(frechet_distance(&a, &b).is_err());
    }
}
