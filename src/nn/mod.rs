//! Network architectures and weight loading.
//!
//! - [`unet2d`]: diffusers `UNet2DModel` (google/ddpm-* checkpoints) from its `config.json`.
//! - [`weights`]: weight files (safetensors, PyTorch pickles), strict key/shape checking and
//!   key maps for checkpoints whose names or layouts differ from the architecture's.
//! - [`layers`], [`ops`]: shared layers and fused CPU kernels.
//!
//! - [`songunet`], [`keymaps`], [`checkpoints`]: EDM `SongUNet`, which also runs RectifiedFlow
//!   and consistency-model checkpoints through key maps (NETWORKS.md §2–§4).
//!
//! See `tests/fixtures/NETWORKS.md` for the forward passes these follow.
//!
//! # Loading a model from files
//!
//! | checkpoint | call | `noise_labels` of [`crate::family::Network::forward`] |
//! |---|---|---|
//! | diffusers dir (`config.json` + `diffusion_pytorch_model.{safetensors,bin}`) | [`UNet2DModel::load`]`(dir)` | timestep `t` (float) |
//! | EDM `.pkl` → `tools/export_edm.py` → `.json` + `.safetensors` | [`SongUNet::load_edm`]`(json, weights)` | `c_noise` of [`crate::family::Precond`] |
//! | RectifiedFlow `checkpoint_*.pth` + RF config as JSON | [`SongUNet::load_rf`]`(json, ckpt, RfWeights::Ema)` | `999·t` |
//! | consistency_models_cifar10 flax checkpoint + `config.model` JSON | [`SongUNet::load_cm`]`(json, ckpt)` | `¼ ln σ` |
//!
//! All loaders are strict: a missing tensor, an unused tensor or a wrong shape is a
//! [`LoadError`] naming the file and the key.

mod attention;
pub mod checkpoints;
#[cfg(feature = "cuda")]
mod cuda_kernels;
#[cfg(feature = "cudnn")]
mod cudnn_conv;
#[cfg(target_arch = "x86_64")]
mod direct_conv;
pub mod keymaps;
pub mod layers;
pub mod legacy_pth;
pub mod ops;
pub(crate) mod simd;
pub mod songunet;
pub mod unet2d;
pub mod weights;

pub use keymaps::{cm_keymap, rf_keymap, rf_param_order};
pub use songunet::{RfWeights, SongUNet, SongUNetConfig};
pub use unet2d::{UNet2DConfig, UNet2DModel};
pub use weights::{KeyMap, LoadError, LoadResult, Rule, TensorStore, VarPath, WeightSource};
