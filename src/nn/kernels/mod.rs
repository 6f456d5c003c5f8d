//! The fast paths under the layers: fused CPU ops ([`ops`]), direct convolutions with AVX-512/AVX2
//! (`direct_conv`), the fused attention block (`attention`), runtime ISA dispatch (`simd`),
//! and, behind the `cuda` / `cudnn` features, CUDA GroupNorm and cuDNN convolutions.

pub(crate) mod attention;
#[cfg(feature = "cuda")]
mod cuda_kernels;
#[cfg(feature = "cudnn")]
mod cudnn_conv;
#[cfg(target_arch = "x86_64")]
mod direct_conv;
pub mod ops;
pub(crate) mod simd;
