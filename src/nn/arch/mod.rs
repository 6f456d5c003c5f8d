//! The network architectures, one file each: diffusers `UNet2DModel` ([`unet2d`]) and EDM's
//! `SongUNet` ([`songunet`]), which also runs the RectifiedFlow and consistency-model
//! checkpoints through key maps ([`super::load::keymaps`]).

pub mod songunet;
pub mod unet2d;
