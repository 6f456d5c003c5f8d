//! # gddcm — image tokenization with a pretrained diffusion model
//!
//! A reference implementation of gDDCM (generalized Denoising Diffusion Codebook Models,
//! arXiv 2511.13387), which extends DDCM (Ohayon et al., arXiv 2502.01189). An image is turned
//! into `N` indices into seeded Gaussian codebooks of `K` entries; a decoder that replays the
//! same diffusion steps with the same codebooks rebuilds the image.
//!
//! The crate is organised as in `docs/DESIGN.md`:
//! - [`marginal`]: `x_t = s(t) x0 + Σ(t) ε` for every family (SPEC 1).
//! - [`family`]: the [`family::Denoiser`] trait, the per-family adapters turning a network
//!   output into `(x0_hat, eps_hat)`, preconditioners and exact analytic denoisers.
//! - [`codebook`]: the Philox4x32-10 / Box–Muller codebooks and blockwise scoring (SPEC 5).
//! - [`schedule`]: Algorithm-1 grids and the interval schedules of eqs. 9/10/12/13 (SPEC 2.5–2.6).
//! - [`tokenizer`]: Algorithm 1, Algorithm 2, initial points and final samplers (SPEC 2, 4, 7).
//! - [`format`](mod@format): the `.gddcm` token file.
//! - [`nn`]: network architectures (diffusers UNet2DModel, EDM SongUNet) and weight loading.
//! - [`metrics`]: PSNR, SSIM, MS-SSIM, LPIPS, FID/IS and offline stand-ins.
//! - [`data`], [`zoo`]: image IO and datasets; named models and their files.
//! - [`reference`]: the dataset-mean reference image `x_ref` of the I2/I3 initial points (SPEC 7).
//! - [`search`]: the parameter search of SPEC 8 (`gddcm search`).
//! - [`rd`]: rate–distortion sweeps over K × N and their plots (`gddcm rd`); the model's
//!   ladder against the [`classic`] codecs, with [`bdrate`] (Bjøntegaard delta rates).

pub mod atomic;
pub mod atoms;
pub mod bdrate;
pub mod classic;
pub mod codebook;
pub mod codec;
pub mod data;
pub mod eval;
pub mod family;
pub mod format;
pub mod ladder;
pub mod marginal;
pub mod metrics;
pub mod nn;
pub mod profile;
pub mod rate;
pub mod rd;
pub mod reference;
pub mod runtime;
pub mod schedule;
pub mod search;
pub mod tokenizer;
pub mod validate;
pub mod zoo;
