//! Diffusion families: turning a network output into `(x0_hat, eps_hat)` (SPEC 1).
//!
//! The tokenizer sees only the [`Denoiser`] trait. Each family is a small adapter that calls a
//! raw [`Network`] with the family's own conditioning and converts its output with eq. 15.

pub mod precond;

pub use precond::{CmNoiseLabel, Precond, PrecondCoeffs};

use candle_core::{Result, Tensor};

/// A raw noise-conditioned network `F(x, c_noise)`: a diffusers `UNet2DModel`
/// (timestep input) or an EDM `SongUNet` (noise-label input), before any preconditioning.
pub trait Network: Send + Sync {
    /// Runs the network on a batch `x` of shape `[B, C, H, W]` (f32) with one conditioning
    /// value per batch element in `noise_labels` (shape `[B]`, f32): the timestep for a
    /// DDPM UNet, `c_noise` for an EDM/CM network, `999·t_rf` for rectified flow.
    fn forward(&self, x: &Tensor, noise_labels: &Tensor) -> Result<Tensor>;
}
