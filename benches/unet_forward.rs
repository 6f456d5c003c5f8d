//! Forward throughput of the full-size DDPM CIFAR-10 `UNet2DModel` (config and shapes from
//! `../shared/fixtures/unet2d_ddpm_cifar10_32.keys.json`) on random weights, CPU f32.
//!
//! `cargo bench --bench unet_forward` prints images/s at batch 1 and 8 (median of
//! `GDDCM_BENCH_ITERS` timed runs, default 5, after one warm-up). Compare with
//! `tools/bench_torch.py` (PyTorch + diffusers, same shapes, 2 threads), run right after.

use std::path::PathBuf;
use std::time::Instant;

use candle_core::{Device, Tensor};
use gddcm::family::Network;
use gddcm::nn::{TensorStore, UNet2DConfig, UNet2DModel};

fn main() {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/unet2d_ddpm_cifar10_32.keys.json");
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))).unwrap();
    let cfg: UNet2DConfig = serde_json::from_value(m["config_assumed"].clone()).unwrap();
    let dev = Device::Cpu;
    let mut tensors = Vec::new();
    for (k, s) in m["state_dict_shapes_modern"].as_object().unwrap() {
        let shape: Vec<usize> = s.as_array().unwrap().iter().map(|d| d.as_u64().unwrap() as usize).collect();
        let t = if k.contains("norm") && k.ends_with("weight") {
            Tensor::ones(shape.as_slice(), candle_core::DType::F32, &dev).unwrap()
        } else {
            Tensor::randn(0f32, 0.02, shape.as_slice(), &dev).unwrap()
        };
        tensors.push((k.clone(), t));
    }
    let store = TensorStore::new("random", tensors).unwrap();
    let net = UNet2DModel::from_store(&cfg, &store).unwrap();
    let iters: usize = std::env::var("GDDCM_BENCH_ITERS").ok().and_then(|s| s.parse().ok()).unwrap_or(5);
    println!("candle UNet2DModel ddpm-cifar10-32 (35.7M params), threads={}", candle_core::utils::get_num_threads());
    for b in [1usize, 8] {
        let x = Tensor::randn(0f32, 1.0, (b, 3, 32, 32), &dev).unwrap();
        let t = Tensor::from_vec(vec![500f32; b], b, &dev).unwrap();
        net.forward(&x, &t).unwrap();
        let mut times = Vec::new();
        for _ in 0..iters {
            let t0 = Instant::now();
            let y = net.forward(&x, &t).unwrap();
            y.sum_all().unwrap().to_scalar::<f32>().unwrap();
            times.push(t0.elapsed().as_secs_f64());
        }
        times.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let med = times[times.len() / 2];
        println!(
            "batch {b}: median {:.1} ms/forward, {:.2} images/s (min {:.1} ms)",
            med * 1e3,
            b as f64 / med,
            times[0] * 1e3
        );
    }
}
