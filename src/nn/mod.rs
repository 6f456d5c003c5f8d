//! Network architectures and weight loading.
//!
//! - [`unet2d`]: diffusers `UNet2DModel` (google/ddpm-* checkpoints) from its `config.json`.
//! - [`weights`]: weight files (safetensors, PyTorch pickles), strict key/shape checking and
//!   key maps for checkpoints whose names or layouts differ from the architecture's.
//! - [`layers`], [`ops`]: shared layers and fused CPU kernels.
//!
//! See `fixtures/NETWORKS.md` for the forward passes these follow.

pub mod checkpoints;
pub mod keymaps;
pub mod layers;
pub mod ops;
pub mod songunet;
pub mod unet2d;
pub mod weights;

pub use keymaps::{cm_keymap, rf_keymap, rf_param_order};
pub use songunet::{RfWeights, SongUNet, SongUNetConfig};
pub use unet2d::{UNet2DConfig, UNet2DModel};
pub use weights::{KeyMap, LoadError, LoadResult, Rule, TensorStore, VarPath, WeightSource};
