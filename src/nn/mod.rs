//! Network architectures and weight loading, by responsibility:
//!
//! - [`arch`]: the architectures, one file each: diffusers `UNet2DModel` (google/ddpm-*
//!   checkpoints and the bundled models) from its `config.json`, and EDM's `SongUNet`, which also
//!   runs RectifiedFlow and consistency-model checkpoints (NETWORKS.md §2–§4).
//! - [`load`]: weight files (safetensors, PyTorch pickles, flax trees), strict key/shape checking
//!   and key maps for checkpoints whose names or layouts differ from the architecture's.
//! - [`layers`]: the shared layers the architectures are built from.
//! - [`kernels`]: the fused CPU kernels and ISA dispatch under the layers, and the CUDA/cuDNN ones.
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

pub mod arch;
pub mod kernels;
pub mod layers;
pub mod load;

pub use arch::songunet::{RfWeights, SongUNet, SongUNetConfig};
pub use arch::unet2d::{UNet2DConfig, UNet2DModel};
pub use load::keymaps::{cm_keymap, rf_keymap, rf_param_order};
pub use load::weights::{KeyMap, LoadError, LoadResult, Rule, TensorStore, VarPath, WeightSource};
