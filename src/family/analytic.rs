//! Exact denoisers for Gaussian-mixture data, written as networks in each family's own
//! parameterisation, so that the tokenizer and the family adapters can be tested with no
//! trained weights.
//!
//! Data: `x0 ~ Σ_m π_m N(μ_m, c_m² I)`. Under `x_t = s x0 + Σ ε`, component `m` gives
//! `x_t ~ N(s μ_m, (s² c_m² + Σ²) I)` and `E[x0 | x_t, m] = μ_m + (s c_m²/v_m)(x_t − s μ_m)`; the
//! posterior mean weights these by the responsibilities. For a single Gaussian the
//! probability-flow ODE is closed-form too (`x/s − μ ∝ √(c² + σ²)`, SPEC 3), which gives an
//! exact consistency function.

use candle_core::{Result, Tensor};

use super::{Network, Precond};
use crate::codebook::Codebooks;
use crate::marginal::Marginal;

/// An isotropic Gaussian mixture in `R^d`.
#[derive(Debug, Clone, PartialEq)]
pub struct Gmm {
    pub means: Vec<Vec<f32>>,
    pub stds: Vec<f64>,
    pub weights: Vec<f64>,
}

impl Gmm {
    /// A mixture of `m` components in `d` dimensions with means drawn from a seeded generator
    /// (scaled to `mean_scale`), common std `std` and equal weights.
    pub fn random(m: usize, d: usize, mean_scale: f32, std: f64, seed: u64) -> Self {
        let cb = Codebooks::new(seed, d);
        let means = (0..m).map(|j| cb.entry(9, 0, j as u32).into_iter().map(|v| v * mean_scale).collect()).collect();
        Self { means, stds: vec![std; m], weights: vec![1.0 / m as f64; m] }
    }

    /// Dimension of the data.
    pub fn dim(&self) -> usize {
        self.means[0].len()
    }

    /// `n` samples (deterministic in `seed`), each `d` values.
    pub fn sample(&self, n: usize, seed: u64) -> Vec<Vec<f32>> {
        let d = self.dim();
        let cb = Codebooks::new(seed, d);
        (0..n)
            .map(|i| {
                // Component by a uniform from the generator's first word.
                let u = (crate::codebook::philox4x32_10([i as u32, 0, 0, 11], [seed as u32, 3])[0] as f64 + 0.5)
                    / 4_294_967_296.0;
                let mut acc = 0.0;
                let m = self.weights.iter().position(|w| {
                    acc += w;
                    u < acc
                });
                let m = m.unwrap_or(self.weights.len() - 1);
                let z = cb.entry(10, 0, i as u32);
                self.means[m].iter().zip(z).map(|(mu, z)| mu + self.stds[m] as f32 * z).collect()
            })
            .collect()
    }

    /// `E[x0 | x_t = x]` under `x_t = s x0 + Σ ε`.
    pub fn posterior_mean(&self, x: &[f32], s: f64, big_sigma: f64) -> Vec<f32> {
        let d = x.len() as f64;
        let logs: Vec<f64> = self
            .means
            .iter()
            .zip(&self.stds)
            .zip(&self.weights)
            .map(|((mu, c), w)| {
                let v = s * s * c * c + big_sigma * big_sigma;
                let dist2: f64 = x.iter().zip(mu).map(|(&xi, &m)| (xi as f64 - s * m as f64).powi(2)).sum();
                w.ln() - 0.5 * d * v.ln() - dist2 / (2.0 * v)
            })
            .collect();
        let max = logs.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let resp: Vec<f64> = logs.iter().map(|l| (l - max).exp()).collect();
        let total: f64 = resp.iter().sum();
        let mut out = vec![0.0f64; x.len()];
        for ((mu, c), r) in self.means.iter().zip(&self.stds).zip(&resp) {
            let v = s * s * c * c + big_sigma * big_sigma;
            let gain = s * c * c / v;
            for (o, (&xi, &m)) in out.iter_mut().zip(x.iter().zip(mu)) {
                *o += r / total * (m as f64 + gain * (xi as f64 - s * m as f64));
            }
        }
        out.into_iter().map(|v| v as f32).collect()
    }

    /// The exact probability-flow-ODE endpoint from `x` at noise-to-signal ratio `sigma`
    /// (single Gaussian only): `x0 = μ + c/√(c²+σ²)·(x/s − μ)`.
    pub fn ode_endpoint(&self, x: &[f32], s: f64, sigma: f64) -> Vec<f32> {
        assert_eq!(self.means.len(), 1, "the closed-form flow needs a single Gaussian");
        let c = self.stds[0];
        let g = c / (c * c + sigma * sigma).sqrt();
        x.iter().zip(&self.means[0]).map(|(&xi, &m)| (m as f64 + g * (xi as f64 / s - m as f64)) as f32).collect()
    }
}

/// How an [`AnalyticNetwork`] presents the exact denoiser.
#[derive(Debug, Clone, PartialEq)]
pub enum AnalyticParam {
    /// ε-prediction called with the family's time as label (DDPM).
    Epsilon(Marginal),
    /// Rectified-flow velocity called with `999·(1 − τ)`.
    Velocity,
    /// The raw `F` of a preconditioned network (EDM/VP/VE/consistency), called with
    /// `(c_in·x, c_noise)`. A consistency model gets the exact ODE endpoint when the mixture
    /// has one component, else the posterior mean.
    Preconditioned(Precond),
}

/// An exact denoiser exposed through the [`Network`] interface of a family.
#[derive(Debug, Clone)]
pub struct AnalyticNetwork {
    pub gmm: Gmm,
    pub param: AnalyticParam,
}

impl AnalyticNetwork {
    fn output(&self, x: &[f32], label: f64) -> Vec<f32> {
        match &self.param {
            AnalyticParam::Epsilon(m) => {
                let (s, sig) = (m.s(label), m.big_sigma(label));
                let x0 = self.gmm.posterior_mean(x, s, sig);
                x.iter().zip(x0).map(|(&xi, x0)| ((xi as f64 - s * x0 as f64) / sig) as f32).collect()
            }
            AnalyticParam::Velocity => {
                // At τ = 0 the velocity is the limit (x0h − x)/τ of a clean state: keep τ > 0.
                let tau = (1.0 - label / 999.0).max(1e-6);
                let x0 = self.gmm.posterior_mean(x, 1.0 - tau, tau);
                x.iter().zip(x0).map(|(&xi, x0)| ((x0 as f64 - xi as f64) / tau) as f32).collect()
            }
            AnalyticParam::Preconditioned(p) => {
                let sigma = sigma_from_noise_label(p, label);
                let c = p.coeffs(sigma);
                let xs: Vec<f32> = x.iter().map(|&v| (v as f64 / c.c_in) as f32).collect();
                let d = match p {
                    Precond::Consistency { .. } if self.gmm.means.len() == 1 => self.gmm.ode_endpoint(&xs, 1.0, sigma),
                    _ => self.gmm.posterior_mean(&xs, 1.0, sigma),
                };
                xs.iter().zip(d).map(|(&xi, di)| ((di as f64 - c.c_skip * xi as f64) / c.c_out) as f32).collect()
            }
        }
    }
}

/// Inverts a preconditioner's `c_noise(σ)`.
fn sigma_from_noise_label(p: &Precond, c: f64) -> f64 {
    match *p {
        Precond::Edm { .. } => (4.0 * c).exp(),
        Precond::Ve => 2.0 * c.exp(),
        Precond::Vp { beta_min, beta_d } => {
            let t = c / 999.0;
            (0.5 * beta_d * t * t + beta_min * t).exp_m1().sqrt()
        }
        Precond::Consistency { noise_label, .. } => match noise_label {
            super::CmNoiseLabel::QuarterLog => (4.0 * c).exp(),
            super::CmNoiseLabel::Log250 => (c / 250.0).exp(),
        },
    }
}

impl Network for AnalyticNetwork {
    fn forward(&self, x: &Tensor, noise_labels: &Tensor) -> Result<Tensor> {
        let shape = x.shape().clone();
        let b = x.dim(0)?;
        let flat = x.flatten_from(1)?.to_dtype(candle_core::DType::F32)?.to_vec2::<f32>()?;
        let labels = noise_labels.to_dtype(candle_core::DType::F64)?.to_vec1::<f64>()?;
        let out: Vec<f32> = flat.iter().zip(&labels).flat_map(|(row, &l)| self.output(row, l)).collect();
        debug_assert_eq!(out.len(), b * flat[0].len());
        Tensor::from_vec(out, shape, x.device())
    }
}

/// The exact denoiser of `gmm` wrapped as a trained model of `family` would be: an
/// ε-prediction network on the CIFAR-10 DDPM schedule (with the \[D\] clipping), an EDM-
/// preconditioned network, a consistency function (σ_min 0.002) or a rectified-flow velocity
/// network, each behind its family's own adapter.
pub fn exact_denoiser(family: super::Family, gmm: &Gmm) -> Box<dyn super::Denoiser> {
    use super::{Family, PrecondDenoiser, RegressionDenoiser};
    let net = |param| Box::new(AnalyticNetwork { gmm: gmm.clone(), param });
    let preconditioned = |precond| {
        Box::new(PrecondDenoiser { net: net(AnalyticParam::Preconditioned(precond)), precond, marginal: Marginal::Edm })
    };
    match family {
        Family::Ddpm => {
            let m = Marginal::Ddpm(crate::marginal::DdpmSchedule::cifar10());
            Box::new(RegressionDenoiser::ddpm(net(AnalyticParam::Epsilon(m.clone())), m, true))
        }
        Family::Edm => preconditioned(Precond::EDM),
        Family::Cm => preconditioned(Precond::CM_CIFAR10),
        Family::Rf => Box::new(RegressionDenoiser::rectified_flow(net(AnalyticParam::Velocity))),
    }
}
