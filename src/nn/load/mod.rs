//! Weight files and how their tensors reach the architectures: strict key/shape checking
//! ([`weights`]), the checkpoint formats ([`checkpoints`]: PyTorch tensor lists, flax trees;
//! [`legacy_pth`]: pre-zip PyTorch pickles) and the key maps of checkpoints whose names or
//! layouts differ from the architecture's ([`keymaps`]).

pub mod checkpoints;
pub mod keymaps;
pub mod legacy_pth;
pub mod weights;
