//! Shared by the engine tests: Gaussian-mixture data on 1×16×16 "images" and its exact
//! denoisers in each family's parameterisation.

use candle_core::{Device, Tensor};
use gddcm::family::analytic::Gmm;
use gddcm::family::{Denoiser, Family};

/// The image shape `[C, H, W]` of the test data.
pub const SHAPE: (usize, usize, usize) = (1, 16, 16);

/// Four components close enough that their posteriors overlap at the test noise levels.
pub fn gmm() -> Gmm {
    Gmm::random(4, 256, 0.1, 0.3, 42)
}

/// The exact denoiser of `gmm` as a model of `family`.
pub fn denoiser(family: Family, gmm: &Gmm) -> Box<dyn Denoiser> {
    gddcm::family::analytic::exact_denoiser(family, gmm)
}

/// `n` samples of `gmm` as a `[n, C, H, W]` batch.
pub fn targets(gmm: &Gmm, n: usize) -> Tensor {
    let data: Vec<f32> = gmm.sample(n, 7).concat();
    Tensor::from_vec(data, (n, SHAPE.0, SHAPE.1, SHAPE.2), &Device::Cpu).unwrap()
}
