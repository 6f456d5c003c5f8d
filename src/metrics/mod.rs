//! Image-quality metrics.
//!
//! - [`ssim`]: PSNR, SSIM (scikit-image and pytorch_msssim conventions) and MS-SSIM, on
//!   8-bit images ([`ImageU8`]), computed in `f64`.
//! - [`fid`]: Frechet distance between feature sets and the Inception Score.
//! - [`inception`]: the pytorch-fid Inception-v3 (pool3 features and 1008-way logits).
//! - [`lpips`]: LPIPS v0.1 with AlexNet or VGG16 trunks.
//! - [`standin`]: small offline stand-ins (a Fashion-MNIST classifier) for when the
//!   Inception weights are not available. Their numbers are *not* FID.
//! - [`samples`]: the quality of a model's own samples (classifier Frechet distance against
//!   real images, noise-like samples, predicted classes).
//! - [`weights`]: where the pretrained weight files are looked up, and what to tell users
//!   when one is missing.
//! - [`tensors`]: weight files (read by [`crate::nn::TensorStore`]) and the convolution and
//!   linear layers of the metric networks.
//! - [`image`]: the [`ImageU8`] input type.

pub mod fid;
pub mod image;
pub mod inception;
pub mod lpips;
pub mod samples;
pub mod ssim;
pub mod standin;
pub mod tensors;
pub mod weights;

pub use image::ImageU8;

/// Errors returned by the metrics.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// Inputs with the wrong shape, size or values.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// A pretrained weight file could not be found; the message says which file and where
    /// to get it. Callers may skip this metric and still compute the others.
    #[error("{0}")]
    MissingWeights(weights::MissingWeights),
    /// A weight file was found but does not hold what the model expects.
    #[error("bad weights in {path}: {msg}")]
    BadWeights {
        /// The file that was read.
        path: String,
        /// What was wrong.
        msg: String,
    },
    /// A numerical routine failed (for example a non-finite covariance).
    #[error("numerical error: {0}")]
    Numerical(String),
    /// An error from candle.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// An I/O error.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Result type of the metrics module.
pub type Result<T> = std::result::Result<T, MetricsError>;

/// Shorthand for an [`MetricsError::InvalidInput`] error.
pub(crate) fn invalid<T>(msg: impl Into<String>) -> Result<T> {
    Err(MetricsError::InvalidInput(msg.into()))
}
