//! Diffusion families: turning a network output into `(x0_hat, eps_hat)` (SPEC 1).
//!
//! The tokenizer sees only the [`Denoiser`] trait. Each family is a small adapter that calls a
//! raw [`Network`] with the family's own conditioning and converts its output with eq. 15.

pub mod precond;

pub use precond::{CmNoiseLabel, Precond, PrecondCoeffs};

use candle_core::{Result, Tensor};
use serde::{Deserialize, Serialize};

/// A raw noise-conditioned network `F(x, c_noise)`: a diffusers `UNet2DModel`
/// (timestep input) or an EDM `SongUNet` (noise-label input), before any preconditioning.
pub trait Network: Send + Sync {
    /// Runs the network on a batch `x` of shape `[B, C, H, W]` (f32) with one conditioning
    /// value per batch element in `noise_labels` (shape `[B]`, f32): the timestep for a
    /// DDPM UNet, `c_noise` for an EDM/CM network, `999·t_rf` for rectified flow.
    fn forward(&self, x: &Tensor, noise_labels: &Tensor) -> Result<Tensor>;
}

pub mod analytic;

use crate::marginal::Marginal;

/// A model's clean-image and noise predictions at one state (SPEC 0).
#[derive(Debug, Clone)]
pub struct Prediction {
    /// `x0_hat`: the predicted clean image.
    pub x0: Tensor,
    /// `eps_hat`: the predicted noise, so that `x = s·x0_hat + Σ·eps_hat`.
    pub eps: Tensor,
}

/// What the tokenizer needs of a diffusion model: its marginal and `predict(x, t)`.
pub trait Denoiser: Send + Sync {
    /// The family's time parameterisation.
    fn marginal(&self) -> &Marginal;
    /// `(x0_hat, eps_hat)` for a batch `x` (`[B, C, H, W]`) at time `t` (one NFE).
    fn predict(&self, x: &Tensor, t: f64) -> Result<Prediction>;
}

/// What a network regresses, in the form `o = h(t)·x0 + w(t)·ε` of eq. 15.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// ε-prediction (`h = 0, w = 1`): DDPM.
    Epsilon,
    /// x0-prediction (`h = 1, w = 0`).
    Sample,
    /// Rectified-flow velocity `v = x0 − ε` in τ time (`h = 1, w = −1`, SPEC 1.4).
    Velocity,
}

impl Target {
    fn h_w(self) -> (f64, f64) {
        match self {
            Target::Epsilon => (0.0, 1.0),
            Target::Sample => (1.0, 0.0),
            Target::Velocity => (1.0, -1.0),
        }
    }
}

/// How the family's time `t` becomes the network's conditioning value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum TimeLabel {
    /// The (integer) timestep itself: DDPM UNets.
    Identity,
    /// `scale·(1 − τ)`: rectified flow calls `v(x, 999·t_rf)` with `t_rf = 1 − τ`.
    RectifiedFlow { scale: f64 },
}

impl TimeLabel {
    fn label(self, t: f64) -> f64 {
        match self {
            TimeLabel::Identity => t,
            TimeLabel::RectifiedFlow { scale } => scale * (1.0 - t),
        }
    }
}

/// A network that regresses `o = h·x0 + w·ε` directly in the family's coordinates (DDPM's ε,
/// rectified flow's velocity), converted with eq. 15:
/// `x0h = (w x − Σ o)/(s w − Σ h)`, `epsh = (s o − h x)/(s w − Σ h)`.
pub struct RegressionDenoiser {
    pub net: Box<dyn Network>,
    pub marginal: Marginal,
    pub target: Target,
    pub time_label: TimeLabel,
    /// \[D\] clip `x0h` to [−1, 1] and recompute `epsh` (diffusers' `clip_sample`, SPEC 1.1).
    pub clip_x0: bool,
}

impl RegressionDenoiser {
    /// A DDPM ε-prediction model with the \[D\] clipping.
    pub fn ddpm(net: Box<dyn Network>, marginal: Marginal, clip_x0: bool) -> Self {
        Self { net, marginal, target: Target::Epsilon, time_label: TimeLabel::Identity, clip_x0 }
    }

    /// A rectified-flow velocity model called as `v(x, 999·t_rf)` (SPEC 1.4).
    pub fn rectified_flow(net: Box<dyn Network>) -> Self {
        Self {
            net,
            marginal: Marginal::RectifiedFlow,
            target: Target::Velocity,
            time_label: TimeLabel::RectifiedFlow { scale: 999.0 },
            clip_x0: false,
        }
    }
}

fn batch_labels(x: &Tensor, label: f64) -> Result<Tensor> {
    Tensor::full(label as f32, x.dim(0)?, x.device())
}

impl Denoiser for RegressionDenoiser {
    fn marginal(&self) -> &Marginal {
        &self.marginal
    }

    fn predict(&self, x: &Tensor, t: f64) -> Result<Prediction> {
        let (s, sig) = (self.marginal.s(t), self.marginal.big_sigma(t));
        let (h, w) = self.target.h_w();
        let o = self.net.forward(x, &batch_labels(x, self.time_label.label(t))?)?;
        let den = s * w - sig * h; // eq. 15
        let mut x0 = ((x * (w / den))? - (&o * (sig / den))?)?;
        let mut eps = ((&o * (s / den))? - (x * (h / den))?)?;
        if self.clip_x0 {
            x0 = x0.clamp(-1f32, 1f32)?;
            eps = ((x - (&x0 * s)?)? / sig)?;
        }
        Ok(Prediction { x0, eps })
    }
}

/// A preconditioned denoiser `D(x; σ)` (EDM with EDM/VP/VE preconditioning, or a consistency
/// function): `x0h = D(x/s; σ(t))`, `epsh = (x − s·x0h)/Σ` (SPEC 1.2, 1.3).
pub struct PrecondDenoiser {
    pub net: Box<dyn Network>,
    pub precond: Precond,
    pub marginal: Marginal,
}

impl Denoiser for PrecondDenoiser {
    fn marginal(&self) -> &Marginal {
        &self.marginal
    }

    fn predict(&self, x: &Tensor, t: f64) -> Result<Prediction> {
        let (s, sig, sigma) = (self.marginal.s(t), self.marginal.big_sigma(t), self.marginal.sigma(t));
        let b = x.dim(0)?;
        let x_unit = if s == 1.0 { x.clone() } else { (x / s)? };
        let x0 = self.precond.apply(self.net.as_ref(), &x_unit, &vec![sigma; b])?;
        let eps = ((x - (&x0 * s)?)? / sig)?;
        Ok(Prediction { x0, eps })
    }
}

/// The four diffusion families of the paper.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    /// Discrete DDPM (ε-prediction, integer time).
    Ddpm,
    /// EDM score models (σ time).
    Edm,
    /// Consistency models (σ time, the output is a sample).
    Cm,
    /// Rectified flow (τ = 1 − t_rf time).
    Rf,
}

impl std::fmt::Display for Family {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Family::Ddpm => "ddpm",
            Family::Edm => "edm",
            Family::Cm => "cm",
            Family::Rf => "rf",
        })
    }
}
