//! SPEC 3: Theorem 1 and the p-step's marginal preservation, checked numerically on Gaussian
//! data (as `spec/check_theorem1.py` and `spec/check_pstep.py` do), through the crate's own
//! `Marginal` and step coefficients.

use gddcm::marginal::{DdpmSchedule, Marginal, Mixing};

const VE: Marginal = Marginal::Ve { sigma_min: 0.01, sigma_max: 50.0 };

/// `f = ṡ/s` and `g² = 2 s² σ σ̇` of the forward SDE, in closed form (spec/schedules.py).
fn f_g2(m: &Marginal, t: f64) -> (f64, f64) {
    match m {
        Marginal::Vp { beta_min, beta_d } => (-0.5 * (beta_min + beta_d * t), beta_min + beta_d * t),
        Marginal::Ve { sigma_min, sigma_max } => (0.0, 2.0 * m.sigma(t).powi(2) * (sigma_max / sigma_min).ln()),
        Marginal::Edm => (0.0, 2.0 * t),
        Marginal::RectifiedFlow => (-1.0 / (1.0 - t), 2.0 * t / (1.0 - t)),
        Marginal::Ddpm(_) => unreachable!("continuous only"),
    }
}

/// Gaussian data `x0 ~ N(μ, diag c²)`: the exact posterior mean at `x` and the score.
struct Gauss {
    mu: Vec<f64>,
    c: Vec<f64>,
}

impl Gauss {
    fn new() -> Self {
        Self { mu: vec![0.3, -0.2, 0.0, 0.5, -0.7, 0.1], c: vec![0.5, 0.2, 1.0, 0.8, 0.3, 0.6] }
    }
    fn x0h(&self, m: &Marginal, t: f64, x: &[f64]) -> Vec<f64> {
        let (s, sig) = (m.s(t), m.big_sigma(t));
        (0..6)
            .map(|i| {
                self.mu[i] + s * self.c[i].powi(2) / (s * s * self.c[i].powi(2) + sig * sig) * (x[i] - s * self.mu[i])
            })
            .collect()
    }
    fn score(&self, m: &Marginal, t: f64, x: &[f64]) -> Vec<f64> {
        let (s, sig) = (m.s(t), m.big_sigma(t));
        (0..6).map(|i| -(x[i] - s * self.mu[i]) / (s * s * self.c[i].powi(2) + sig * sig)).collect()
    }
    /// A fixed point of p_t: mean plus one marginal std times a fixed direction.
    fn point(&self, m: &Marginal, t: f64) -> Vec<f64> {
        let (s, sig) = (m.s(t), m.big_sigma(t));
        let z = [0.7, -1.2, 0.4, 1.5, -0.3, 0.9];
        (0..6).map(|i| s * self.mu[i] + (s * s * self.c[i].powi(2) + sig * sig).sqrt() * z[i]).collect()
    }
}

/// `max |x17 − x_Euler| / Δ²` for eq. 17 vs one Euler step of the PF-ODE.
fn theorem1_ratio(m: &Marginal, t: f64, dt: f64) -> f64 {
    let g = Gauss::new();
    let x = g.point(m, t);
    let x0h = g.x0h(m, t, &x);
    let (s, sig) = (m.s(t), m.big_sigma(t));
    let epsh: Vec<f64> = (0..6).map(|i| (x[i] - s * x0h[i]) / sig).collect();
    let k = m.ode_step(t - dt); // eq. 17 = the deterministic step's coefficients
    let score = g.score(m, t, &x);
    let (f, g2) = f_g2(m, t);
    (0..6)
        .map(|i| {
            let x17 = k.s_new * x0h[i] + k.eps_coef * epsh[i];
            let xe = x[i] - dt * (f * x[i] - 0.5 * g2 * score[i]);
            (x17 - xe).abs()
        })
        .fold(0.0, f64::max)
        / (dt * dt)
}

#[test]
fn theorem1_vp_and_ve_differ_by_order_dt_squared() {
    // As in spec/theorem1_output.txt, the ratio settles to a constant (its value depends on
    // the data point: 1.55 / 56.5 there) as Δ halves: the difference is O(Δ²), not O(Δ).
    for (m, t) in [(Marginal::VP, 0.5), (Marginal::VP, 0.05), (VE, 0.5)] {
        let ratios: Vec<f64> = (0..9).map(|k| theorem1_ratio(&m, t, 0.2 * t / 2f64.powi(k))).collect();
        let last = *ratios.last().unwrap();
        assert!(last > 1e-3 && last < 1e3, "{m:?}: ratio {ratios:?}");
        let steps: Vec<f64> = ratios.windows(2).map(|w| (w[1] - w[0]).abs()).collect();
        // Richardson: successive changes shrink geometrically (~½ per halving).
        assert!(steps.windows(2).skip(2).all(|w| w[1] < 0.7 * w[0] + 1e-9), "{m:?}: not settling: {ratios:?}");
        assert!(steps[7] < 0.01 * last, "{m:?}: not settled: {ratios:?}");
    }
}

#[test]
fn theorem1_edm_and_rf_are_identical() {
    for (m, t) in [(Marginal::Edm, 2.0), (Marginal::RectifiedFlow, 0.5)] {
        for k in 0..6 {
            let dt = 0.1 * t / 2f64.powi(k);
            let diff = theorem1_ratio(&m, t, dt) * dt * dt;
            assert!(diff < 1e-11, "{m:?} Δ={dt}: |x17 − Euler| = {diff}");
        }
    }
}

/// Law of one p-step started from the exact marginal at `t`, 1-D Gaussian data
/// (μ = 0.1, c = 0.5): returns (mean, var) of the output and of the target marginal.
fn pstep_error(m: &Marginal, t: f64, dt: f64, p: f64, mixing: Mixing) -> f64 {
    let (mu, c) = (0.1f64, 0.5f64);
    let (s, sig, sg) = (m.s(t), m.sigma(t), m.big_sigma(t));
    let kap = c * c / (c * c + sig * sig);
    let (a1, a0) = (kap / s, mu * (1.0 - kap)); // x0h = a0 + a1 x
    let (e1, e0) = ((1.0 - s * a1) / sg, -s * a0 / sg); // epsh = e0 + e1 x
    let t_new = t - p * dt;
    let k = m.step(t, t_new, t - dt, p, mixing);
    let a = k.s_new * a1 + k.eps_coef * e1;
    let b = k.s_new * a0 + k.eps_coef * e0;
    let (m_in, v_in) = (s * mu, s * s * c * c + sg * sg);
    let (mean, var) = (a * m_in + b, a * a * v_in + k.noise_std.powi(2));
    let (mt, vt) = (m.s(t_new) * mu, m.s(t_new).powi(2) * c * c + m.big_sigma(t_new).powi(2));
    (var - vt).abs().max((mean - mt).abs())
}

#[test]
fn pstep_keeps_the_marginal_to_order_dt_squared() {
    for (m, t) in [(Marginal::VP, 0.5), (VE, 0.5), (Marginal::Edm, 2.0), (Marginal::RectifiedFlow, 0.5)] {
        for p in [0.0, 0.5, 0.8] {
            for mixing in [Mixing::BigSigma, Mixing::SmallSigma] {
                let errs: Vec<f64> = [0.04, 0.02, 0.01, 0.005]
                    .iter()
                    .map(|f| pstep_error(&m, t, f * t, p, mixing) / (f * t).powi(2))
                    .collect();
                // Bounded and settling: error/Δ² does not grow as Δ halves.
                assert!(errs.windows(2).all(|w| w[1] < w[0] * 1.2 + 1e-9), "{m:?} p={p} {mixing:?}: {errs:?}");
                assert!(errs[3] < 20.0, "{m:?} p={p} {mixing:?}: {errs:?}");
            }
        }
    }
    // spec/pstep_output.txt (A): VP t=0.5 p=0.5 Σ-mix → 0.17; RF p=0 Σ-mix → 0.2.
    assert!((pstep_error(&Marginal::VP, 0.5, 0.005, 0.5, Mixing::BigSigma) / 0.005f64.powi(2) - 0.17).abs() < 0.01);
    assert!(
        (pstep_error(&Marginal::RectifiedFlow, 0.5, 0.005, 0.0, Mixing::BigSigma) / 0.005f64.powi(2) - 0.2).abs()
            < 0.01
    );
}

#[test]
fn p_zero_stationary_variance_matches_spec() {
    // spec/pstep_output.txt (C): EDM t=0.5, Δ/t = 0.5, 0.1, 0.01 → 0.85714, 0.97436, 0.99749.
    let m = Marginal::Edm;
    let (mu, c, t) = (0.1f64, 0.5f64, 0.5f64);
    let _ = mu;
    for (frac, want) in [(0.5, 0.85714), (0.1, 0.97436), (0.01, 0.99749)] {
        let kap = c * c / (c * c + t * t);
        let k = m.step(t, t, t - frac * t, 0.0, Mixing::BigSigma);
        let a = k.s_new * kap + k.eps_coef * (1.0 - kap) / t;
        let stationary = k.noise_std.powi(2) / (1.0 - a * a) / (c * c + t * t);
        assert!((stationary - want).abs() < 1e-5, "Δ/t={frac}: {stationary} vs {want}");
    }
}

#[test]
fn ddpm_p_step_reading_of_eq11() {
    // spec/discrete_output.txt (1): with the true ε the jump 500 → 497 gives x0 coefficient
    // 0.283174 and total noise std 0.959068 (the square-root reading, erratum E3).
    let d = DdpmSchedule::cifar10();
    let m = Marginal::Ddpm(d);
    let k = m.step(500.0, 497.0, 494.0, 0.5, Mixing::BigSigma);
    assert!((k.s_new - 0.283174).abs() < 1e-6);
    assert!(((k.eps_coef.powi(2) + k.noise_std.powi(2)).sqrt() - 0.959068).abs() < 1e-6);
    // p → 1 adds no noise; p = 0.1 caps σ̄ at b_t' (erratum E4) in some jumps, never above.
    let k1 = m.step(500.0, 497.0, 497.0, 0.999999, Mixing::BigSigma);
    assert!(k1.noise_std < 1e-3);
    let k0 = m.step(3.0, 0.0, 0.0, 0.1, Mixing::BigSigma);
    assert!(k0.noise_std <= m.big_sigma(0.0) + 1e-15);
}
