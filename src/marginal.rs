//! The unified marginal `x_t = s(t)·x0 + Σ(t)·ε`, `Σ = s·σ` (eq. 8, SPEC 1).
//!
//! Time runs from clean to noisy in every family. Continuous families are clean at `t = 0`;
//! DDPM lives on the integers `0..T−1` with the virtual clean time `t = −1` (SPEC 1.1).

use serde::{Deserialize, Serialize};

/// How the noise of a gDDCM step is mixed (SPEC 2.2, erratum E8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Mixing {
    /// `A = Σ(t_ode)`, eq. 21 as the paper writes it ("Σ-mix"). \[D\]
    #[default]
    BigSigma,
    /// `A = s(t_new)·σ(t_ode)`: exactly "ODE step, then the true forward transition" ("σ-mix").
    SmallSigma,
}

/// Coefficients of one move `x_new = s_new·x0h + eps_coef·epsh + noise_std·c`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepCoeffs {
    pub s_new: f64,
    pub eps_coef: f64,
    pub noise_std: f64,
}

/// The linear-beta DDPM schedule (SPEC 1.1): `β_i = β_start + (β_end − β_start)·i/(T−1)` in f64.
#[derive(Debug, Clone, PartialEq)]
pub struct DdpmSchedule {
    pub num_steps: usize,
    pub beta_start: f64,
    pub beta_end: f64,
    alpha_bar: Vec<f64>,
}

impl DdpmSchedule {
    /// `ᾱ_t = Π_{i≤t}(1 − β_i)` for the linear schedule.
    pub fn linear(num_steps: usize, beta_start: f64, beta_end: f64) -> Self {
        let mut schedule = Self { num_steps, beta_start, beta_end, alpha_bar: Vec::with_capacity(num_steps) };
        let mut prod = 1.0f64;
        for i in 0..num_steps {
            prod *= 1.0 - schedule.beta(i);
            schedule.alpha_bar.push(prod);
        }
        schedule
    }

    /// `β_i`, the noise added by step `i ∈ [0, T−1]` (SPEC 1.1).
    pub fn beta(&self, i: usize) -> f64 {
        self.beta_start + (self.beta_end - self.beta_start) * i as f64 / (self.num_steps - 1) as f64
    }

    /// google/ddpm-cifar10-32: T = 1000, β from 1e-4 to 0.02.
    pub fn cifar10() -> Self {
        Self::linear(1000, 1e-4, 0.02)
    }

    /// `ᾱ_t` for an integer `t ∈ [−1, T−1]`; `ᾱ_{−1} = 1` (clean).
    pub fn alpha_bar(&self, t: f64) -> f64 {
        let ti = t.round() as i64;
        debug_assert!((t - ti as f64).abs() < 1e-9, "DDPM time must be an integer, got {t}");
        if ti < 0 {
            1.0
        } else {
            self.alpha_bar[(ti as usize).min(self.num_steps - 1)]
        }
    }
}

/// The time parameterisation of a diffusion family (SPEC 1, table).
#[derive(Debug, Clone, PartialEq)]
pub enum Marginal {
    /// Discrete DDPM: `s = √ᾱ_t`, `Σ = √(1−ᾱ_t)`, integer t, clean at −1.
    Ddpm(DdpmSchedule),
    /// EDM and consistency models: `t = σ`, `s = 1`.
    Edm,
    /// EDM's VP schedule: `σ(t) = √(exp(½β_d t² + β_min t) − 1)`, `s = (1+σ²)^(−½)`.
    Vp { beta_min: f64, beta_d: f64 },
    /// Variance exploding SMLD schedule: `s = 1`, `σ(t) = σ_min (σ_max/σ_min)^t` (used in checks).
    Ve { sigma_min: f64, sigma_max: f64 },
    /// Rectified flow with `τ = 1 − t_rf`: `s = 1 − τ`, `Σ = τ` (SPEC 1.4).
    RectifiedFlow,
}

impl Marginal {
    /// EDM's VP constants β_min = 0.1, β_d = 19.9.
    pub const VP: Marginal = Marginal::Vp { beta_min: 0.1, beta_d: 19.9 };

    /// Signal scale `s(t)`.
    pub fn s(&self, t: f64) -> f64 {
        match self {
            Marginal::Ddpm(d) => d.alpha_bar(t).sqrt(),
            Marginal::Edm | Marginal::Ve { .. } => 1.0,
            Marginal::Vp { .. } => 1.0 / (1.0 + self.sigma(t).powi(2)).sqrt(),
            Marginal::RectifiedFlow => 1.0 - t,
        }
    }

    /// Noise-to-signal ratio `σ(t) = Σ(t)/s(t)`.
    pub fn sigma(&self, t: f64) -> f64 {
        match self {
            Marginal::Ddpm(d) => {
                let a = d.alpha_bar(t);
                ((1.0 - a) / a).sqrt()
            }
            Marginal::Edm => t,
            Marginal::Vp { beta_min, beta_d } => (0.5 * beta_d * t * t + beta_min * t).exp_m1().max(0.0).sqrt(),
            Marginal::Ve { sigma_min, sigma_max } => {
                if t <= 0.0 {
                    0.0
                } else {
                    sigma_min * (sigma_max / sigma_min).powf(t)
                }
            }
            Marginal::RectifiedFlow => t / (1.0 - t),
        }
    }

    /// Noise scale `Σ(t) = s(t)·σ(t)`; non-decreasing in t.
    pub fn big_sigma(&self, t: f64) -> f64 {
        match self {
            Marginal::Ddpm(d) => (1.0 - d.alpha_bar(t)).sqrt(),
            Marginal::RectifiedFlow => t,
            _ => self.s(t) * self.sigma(t),
        }
    }

    /// The clean end of the time axis: `−1` for DDPM, `0` otherwise.
    pub fn clean_time(&self) -> f64 {
        match self {
            Marginal::Ddpm(_) => -1.0,
            _ => 0.0,
        }
    }

    /// Whether time is restricted to the integers (DDPM).
    pub fn is_discrete(&self) -> bool {
        matches!(self, Marginal::Ddpm(_))
    }

    /// The largest time the family's network accepts.
    pub fn max_time(&self) -> f64 {
        match self {
            Marginal::Ddpm(d) => (d.num_steps - 1) as f64,
            Marginal::Edm => 80.0,
            Marginal::Vp { .. } | Marginal::Ve { .. } => 1.0,
            Marginal::RectifiedFlow => 0.999,
        }
    }

    /// The coefficients of one gDDCM move from `t` to `t_new = t − h` whose ODE half reaches
    /// `t_ode = t − Δ` (SPEC 2.2; `p = h/Δ`, and `p = 0` means `h = 0`).
    ///
    /// Continuous families use eq. 21 (or σ-mix). DDPM with `p > 0` uses the corrected
    /// eq. 11 with `η(p) = √((1−p)/p)` (SPEC 2.3, errata E3/E4); DDPM with `p = 0` is the
    /// jump to `t − Δ` and back, which is eq. 21 on the integer grid.
    pub fn step(&self, t: f64, t_new: f64, t_ode: f64, p: f64, mixing: Mixing) -> StepCoeffs {
        let t_ode = t_ode.max(self.clean_time()); // [D] clamp, erratum E10
        let s_new = self.s(t_new);
        let sig_new = self.big_sigma(t_new);
        let eps_coef = if self.is_discrete() && p > 0.0 {
            // eq. 11, corrected: σ̄ = min(η·(b_t'/b_t)·√(1 − a_t²/a_t'²), b_t').
            let (a_t, b_t) = (self.s(t), self.big_sigma(t));
            let eta = ((1.0 - p) / p).sqrt();
            let ddim =
                if b_t > 0.0 { (sig_new / b_t) * (1.0 - (a_t * a_t) / (s_new * s_new)).max(0.0).sqrt() } else { 0.0 };
            let sigma_bar = (eta * ddim).min(sig_new);
            (sig_new * sig_new - sigma_bar * sigma_bar).max(0.0).sqrt()
        } else {
            match mixing {
                Mixing::BigSigma => self.big_sigma(t_ode),
                Mixing::SmallSigma => s_new * self.sigma(t_ode),
            }
            .min(sig_new)
        };
        let noise_std = (sig_new * sig_new - eps_coef * eps_coef).max(0.0).sqrt();
        StepCoeffs { s_new, eps_coef, noise_std }
    }

    /// The deterministic (DDIM η = 0, eq. 17) move to `t_new`: no noise.
    pub fn ode_step(&self, t_new: f64) -> StepCoeffs {
        StepCoeffs { s_new: self.s(t_new), eps_coef: self.big_sigma(t_new), noise_std: 0.0 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ddpm_sigma_range_matches_spec() {
        let m = Marginal::Ddpm(DdpmSchedule::cifar10());
        assert!((m.sigma(0.0) - 0.0100).abs() < 1e-4);
        assert!((m.sigma(999.0) - 157.4).abs() < 0.1, "{}", m.sigma(999.0));
        assert_eq!(m.s(-1.0), 1.0);
        assert_eq!(m.big_sigma(-1.0), 0.0);
    }

    #[test]
    fn sigma_times_s_is_big_sigma() {
        for m in [Marginal::VP, Marginal::Edm, Marginal::RectifiedFlow, Marginal::Ddpm(DdpmSchedule::cifar10())] {
            for &t in &[0.0, 0.3, 0.7] {
                let t = if m.is_discrete() { (t * 999.0f64).round() } else { t };
                assert!((m.s(t) * m.sigma(t) - m.big_sigma(t)).abs() < 1e-12);
            }
        }
    }

    #[test]
    fn ddpm_p_half_is_ddim_eta_one() {
        // At p = ½, η = 1: the noise is the DDPM posterior std for consecutive steps.
        let d = DdpmSchedule::cifar10();
        let m = Marginal::Ddpm(d.clone());
        let c = m.step(500.0, 499.0, 498.0, 0.5, Mixing::BigSigma);
        let beta = 1.0 - d.alpha_bar(500.0) / d.alpha_bar(499.0);
        let posterior = ((1.0 - d.alpha_bar(499.0)) / (1.0 - d.alpha_bar(500.0)) * beta).sqrt();
        assert!((c.noise_std - posterior).abs() < 1e-12);
    }
}
