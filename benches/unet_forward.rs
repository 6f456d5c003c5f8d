//! Forward throughput of the full-size DDPM CIFAR-10 `UNet2DModel` (config and shapes from
//! `tests/fixtures/unet2d_ddpm_cifar10_32.keys.json`) on random weights, CPU f32, or with
//! `GDDCM_BENCH_NET=bundled` of the bundled Fashion-MNIST network (`models/edm`), or with
//! `GDDCM_BENCH_NET=edm-ddpmpp` of the full-size EDM SongUNet DDPM++ (CIFAR-10, 55.7M parameters,
//! from `tests/fixtures/edm_songunet_ddpmpp.full.keys.json`) on random weights; its PyTorch
//! side is `tools/songunet_torch.py bench`.
//!
//! `cargo bench --bench unet_forward` prints images/s at batch 1 and 8 (median and best of
//! `GDDCM_BENCH_ITERS` timed runs, default 5, after one warm-up) and the process CPU time per
//! forward (from /proc/self/stat; with one thread it is robust to other load on the machine).
//! Compare with `tools/bench_torch.py` (PyTorch + diffusers, same shapes), run right after with
//! the same thread count (`RAYON_NUM_THREADS` here, the script's argument there).
//! `GDDCM_BENCH_BATCHES=1,8` chooses the batch sizes; `GDDCM_BENCH_DEVICE=cuda` runs on the
//! GPU (build with `--features cuda`; each timed forward ends by reading a sum back to the host,
//! which waits for the GPU). `GDDCM_NN_DIRECT_CONV=0` times im2col + GEMM
//! instead of the direct convolution kernel; `GDDCM_BENCH_PLAIN=1` without `gddcm::runtime`'s process
//! settings. `GDDCM_NN_CANDLE_OPS=1` times candle's built-in conv2d, a composite GroupNorm and
//! candle's ops for attention instead of the kernels of `gddcm::nn`. Run it in the bench (release) profile: in the dev profile
//! the `gemm` crate runs with debug assertions and is ~3× slower.

use std::path::PathBuf;
use std::time::Instant;

use candle_core::{Device, Tensor};
use gddcm::family::Network;
use gddcm::nn::{SongUNet, SongUNetConfig, TensorStore, UNet2DConfig, UNet2DModel};

/// utime + stime of this process in seconds (Linux), if available.
fn cpu_seconds() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/stat").ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// A fixtures manifest (`tests/fixtures/NAME`).
fn manifest(name: &str) -> serde_json::Value {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name);
    serde_json::from_str(&std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))).unwrap()
}

/// Random weights of the given shapes on `dev` (GroupNorm scales 1, everything else N(0, 0.02²);
/// EDM's `resample_filter` buffers only have their shape checked).
fn random_store(shapes: &serde_json::Map<String, serde_json::Value>, dev: &Device) -> TensorStore {
    let mut tensors = Vec::new();
    for (k, s) in shapes {
        let shape: Vec<usize> = s.as_array().unwrap().iter().map(|d| d.as_u64().unwrap() as usize).collect();
        let t = if k.contains("norm") && k.ends_with("weight") {
            Tensor::ones(shape.as_slice(), candle_core::DType::F32, dev).unwrap()
        } else {
            Tensor::randn(0f32, 0.02, shape.as_slice(), dev).unwrap()
        };
        tensors.push((k.clone(), t));
    }
    TensorStore::new("random", tensors).unwrap().on_device(dev)
}

/// The full-size DDPM CIFAR-10 UNet on random weights, from the fixtures' key manifest.
fn full_size(dev: &Device) -> (Box<dyn Network>, usize, f32) {
    let m = manifest("unet2d_ddpm_cifar10_32.keys.json");
    let cfg: UNet2DConfig = serde_json::from_value(m["config_assumed"].clone()).unwrap();
    let store = random_store(m["state_dict_shapes_modern"].as_object().unwrap(), dev);
    (Box::new(UNet2DModel::from_store(&cfg, &store).unwrap()), 3, 500.0)
}

/// The full-size EDM SongUNet DDPM++ (CIFAR-10) on random weights; the noise label is EDM's
/// c_noise = ln(σ)/4 for σ ≈ 0.3.
fn edm_ddpmpp(dev: &Device) -> (Box<dyn Network>, usize, f32) {
    let m = manifest("edm_songunet_ddpmpp.full.keys.json");
    let cfg = SongUNetConfig::from_edm_json(&m["constructor"], "edm_songunet_ddpmpp.full.keys.json").unwrap();
    let store = random_store(m["keys"].as_object().unwrap(), dev);
    (Box::new(SongUNet::from_edm_store(&cfg, &store).unwrap()), 3, -0.3)
}

/// The bundled Fashion-MNIST EDM network (`models/edm`, trained weights).
fn bundled(dev: &Device) -> (Box<dyn Network>, usize, f32) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/edm");
    let cfg = UNet2DConfig::from_file(dir.join("config.json")).unwrap();
    let net = UNet2DModel::load_files(&cfg, dir.join("diffusion_pytorch_model.safetensors"), dev).unwrap();
    (Box::new(net), 1, 0.3)
}

fn main() {
    // As the CLI runs (gddcm::runtime), unless GDDCM_BENCH_PLAIN=1 asks for a bare process
    // (allocator defaults, forwards called from the main thread) for A/B timing.
    if std::env::var("GDDCM_BENCH_PLAIN").is_ok_and(|v| v == "1") {
        println!("plain process (GDDCM_BENCH_PLAIN=1)");
        run();
    } else {
        gddcm::runtime::prepare_process();
        gddcm::runtime::on_pool(run);
    }
}

fn run() {
    let dev = match std::env::var("GDDCM_BENCH_DEVICE").as_deref() {
        Ok("cuda") => {
            Device::new_cuda(0).expect("GDDCM_BENCH_DEVICE=cuda needs a build with --features cuda and a GPU")
        }
        Ok("cpu") | Err(_) => Device::Cpu,
        Ok(other) => panic!("GDDCM_BENCH_DEVICE={other}: expected cpu or cuda"),
    };
    let which = std::env::var("GDDCM_BENCH_NET").unwrap_or_else(|_| "ddpm-cifar10".into());
    let ((net, channels, t_label), name) = match which.as_str() {
        "bundled" => (bundled(&dev), "fmnist-edm bundled (0.98M params)"),
        "edm-ddpmpp" => (edm_ddpmpp(&dev), "EDM SongUNet DDPM++ cifar10-32 (55.7M params)"),
        _ => (full_size(&dev), "ddpm-cifar10-32 (35.7M params)"),
    };
    let iters: usize = std::env::var("GDDCM_BENCH_ITERS").ok().and_then(|s| s.parse().ok()).unwrap_or(5);
    println!(
        "candle {name}, device={dev:?}, threads={}, ops={}",
        rayon::current_num_threads(),
        if gddcm::nn::kernels::ops::use_candle_ops() { "candle built-in" } else { "gddcm::nn::kernels::ops" }
    );
    let batches: Vec<usize> = std::env::var("GDDCM_BENCH_BATCHES")
        .ok()
        .map(|s| s.split(',').filter_map(|b| b.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![1, 8]);
    for &b in &batches {
        let x = Tensor::randn(0f32, 1.0, (b, channels, 32, 32), &dev).unwrap();
        let t = Tensor::from_vec(vec![t_label; b], b, &dev).unwrap();
        net.forward(&x, &t).unwrap();
        let mut times = Vec::new();
        let cpu0 = cpu_seconds();
        for _ in 0..iters {
            let t0 = Instant::now();
            let y = net.forward(&x, &t).unwrap();
            y.sum_all().unwrap().to_scalar::<f32>().unwrap();
            times.push(t0.elapsed().as_secs_f64());
        }
        let cpu = match (cpu0, cpu_seconds()) {
            (Some(a), Some(c)) => (c - a) / iters as f64,
            _ => f64::NAN,
        };
        times.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let med = times[times.len() / 2];
        println!(
            "batch {b}: median {:.1} ms/forward, {:.2} images/s; best {:.1} ms, {:.2} images/s; cpu {:.0} ms/forward",
            med * 1e3,
            b as f64 / med,
            times[0] * 1e3,
            b as f64 / times[0],
            cpu * 1e3
        );
    }
}
