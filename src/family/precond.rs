//! Preconditioning of raw score networks (SPEC 1.2, 1.3).
//!
//! EDM writes every network as a denoiser `D(x; σ) = c_skip·x + c_out·F(c_in·x, c_noise)`
//! on the `s = 1` scale; consistency models use the same form with `σ_min` folded into
//! `c_skip`/`c_out` (Song et al. 2023). The raw network `F` is any [`Network`].

use candle_core::{DType, Result, Tensor};

use super::Network;

/// How a consistency model maps σ to the network's conditioning value.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum CmNoiseLabel {
    /// `¼·ln σ`, as in the CIFAR-10 JAX code (openai/consistency_models_cifar10).
    QuarterLog,
    /// `250·ln(σ + 1e-44)`, as in the PyTorch LSUN code (openai/consistency_models).
    Log250,
}

/// The preconditionings of EDM (Karras et al. 2022, Table 1) and of consistency models.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Precond {
    /// EDMPrecond: `c_skip = σd²/(σ²+σd²)`, `c_out = σσd/√(σ²+σd²)`, `c_in = 1/√(σ²+σd²)`, `c_noise = ¼ ln σ`.
    Edm { sigma_data: f64 },
    /// VPPrecond: `c_skip = 1`, `c_out = −σ`, `c_in = (1+σ²)^(−½)`, `c_noise = 999·σ⁻¹_VP(σ)`.
    Vp { beta_min: f64, beta_d: f64 },
    /// VEPrecond: `c_skip = 1`, `c_out = σ`, `c_in = 1`, `c_noise = ln(σ/2)`.
    Ve,
    /// Consistency function `f(x, σ)`: `c_skip = σd²/((σ−σmin)²+σd²)`,
    /// `c_out = σd(σ−σmin)/√(σ²+σd²)` (the root uses σ, not σ−σmin), `c_in = 1/√(σ²+σd²)`.
    Consistency { sigma_data: f64, sigma_min: f64, noise_label: CmNoiseLabel },
}

/// The four scalars of a preconditioner at one σ.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PrecondCoeffs {
    pub c_skip: f64,
    pub c_out: f64,
    pub c_in: f64,
    pub c_noise: f64,
}

impl Precond {
    /// EDM's defaults: σ_data = 0.5.
    pub const EDM: Precond = Precond::Edm { sigma_data: 0.5 };
    /// EDM's VP defaults: β_min = 0.1, β_d = 19.9.
    pub const VP: Precond = Precond::Vp { beta_min: 0.1, beta_d: 19.9 };
    /// The CIFAR-10 consistency models: σ_data = 0.5, σ_min = 0.002, `c_noise = ¼ ln σ`.
    pub const CM_CIFAR10: Precond =
        Precond::Consistency { sigma_data: 0.5, sigma_min: 0.002, noise_label: CmNoiseLabel::QuarterLog };

    /// The coefficients at noise level `sigma` (SPEC 1.2, 1.3).
    pub fn coeffs(&self, sigma: f64) -> PrecondCoeffs {
        match *self {
            Precond::Edm { sigma_data: sd } => {
                let n = sigma * sigma + sd * sd;
                PrecondCoeffs {
                    c_skip: sd * sd / n,
                    c_out: sigma * sd / n.sqrt(),
                    c_in: 1.0 / n.sqrt(),
                    c_noise: 0.25 * sigma.ln(),
                }
            }
            Precond::Vp { beta_min, beta_d } => {
                // σ⁻¹ of the VP schedule, EDM networks.py VPPrecond.sigma_inv.
                let t = ((beta_min * beta_min + 2.0 * beta_d * (1.0 + sigma * sigma).ln()).sqrt() - beta_min) / beta_d;
                PrecondCoeffs {
                    c_skip: 1.0,
                    c_out: -sigma,
                    c_in: 1.0 / (1.0 + sigma * sigma).sqrt(),
                    c_noise: 999.0 * t,
                }
            }
            Precond::Ve => PrecondCoeffs { c_skip: 1.0, c_out: sigma, c_in: 1.0, c_noise: (0.5 * sigma).ln() },
            Precond::Consistency { sigma_data: sd, sigma_min, noise_label } => {
                let ds = sigma - sigma_min;
                let root = (sigma * sigma + sd * sd).sqrt();
                PrecondCoeffs {
                    c_skip: sd * sd / (ds * ds + sd * sd),
                    c_out: sd * ds / root,
                    c_in: 1.0 / root,
                    c_noise: match noise_label {
                        CmNoiseLabel::QuarterLog => 0.25 * sigma.ln(),
                        CmNoiseLabel::Log250 => 250.0 * (sigma + 1e-44).ln(),
                    },
                }
            }
        }
    }

    /// `D(x; σ_b) = c_skip·x + c_out·F(c_in·x, c_noise)` with one σ per batch element.
    pub fn apply(&self, net: &dyn Network, x: &Tensor, sigmas: &[f64]) -> Result<Tensor> {
        let b = x.dim(0)?;
        if sigmas.len() != b {
            candle_core::bail!("precond: {} sigmas for a batch of {b}", sigmas.len());
        }
        let cs: Vec<PrecondCoeffs> = sigmas.iter().map(|&s| self.coeffs(s)).collect();
        let per_sample = |f: fn(&PrecondCoeffs) -> f64| -> Result<Tensor> {
            let v: Vec<f32> = cs.iter().map(|c| f(c) as f32).collect();
            Tensor::from_vec(v, (b, 1, 1, 1), x.device())
        };
        let c_skip = per_sample(|c| c.c_skip)?;
        let c_out = per_sample(|c| c.c_out)?;
        let c_in = per_sample(|c| c.c_in)?;
        let c_noise = Tensor::from_vec(cs.iter().map(|c| c.c_noise as f32).collect::<Vec<_>>(), b, x.device())?;
        let x = x.to_dtype(DType::F32)?;
        let f = net.forward(&x.broadcast_mul(&c_in)?, &c_noise)?;
        x.broadcast_mul(&c_skip)? + f.broadcast_mul(&c_out)?
    }
}
