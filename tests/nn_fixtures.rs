//! The networks of `gddcm::nn` against the reference fixtures in `../shared/fixtures`
//! (fixtures/README.md, NETWORKS.md). A missing fixture fails the test.

use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use gddcm::family::{Network, Precond};
use gddcm::nn::{TensorStore, UNet2DConfig, UNet2DModel};

fn fixture(name: &str) -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures").join(name);
    assert!(
        p.exists(),
        "fixture {} is missing: the nn tests need ../shared/fixtures (see fixtures/README.md)",
        p.display()
    );
    p
}

fn json(name: &str) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(fixture(name)).unwrap()).unwrap()
}

fn store(name: &str) -> TensorStore {
    TensorStore::from_safetensors(fixture(name)).unwrap()
}

fn max_abs(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims(), "shape mismatch");
    (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
}

fn check(name: &str, got: &Tensor, want: &Tensor, tol: f64) {
    let e = max_abs(got, want);
    eprintln!("{name}: max |diff| = {e:.3e} (tol {tol:.1e})");
    assert!((e as f64) <= tol, "{name}: max |diff| {e:e} > tol {tol:e}");
}

fn unet2d_fixture(name: &str) {
    let meta = json(&format!("{name}.json"));
    let cfg: UNet2DConfig = serde_json::from_value(meta["constructor_config"].clone()).unwrap();
    let all = store(&format!("{name}.safetensors"));
    let x = all.raw("in.sample").unwrap().clone();
    let t = all.raw("in.timesteps").unwrap().to_dtype(DType::F32).unwrap();
    let want = all.raw("out.sample").unwrap().clone();
    assert!(x.dim(0).unwrap() > 1, "fixture batch must be > 1");
    let w = all.sub("w.");
    let net = UNet2DModel::from_store(&cfg, &w).unwrap();
    let got = net.forward(&x, &t).unwrap();
    check(&format!("{name} out.sample"), &got, &want, 2e-5);
}

#[test]
fn unet2d_ddpm_cifar10_small() {
    unet2d_fixture("unet2d_ddpm_cifar10_small");
}

#[test]
fn unet2d_variant_small() {
    unet2d_fixture("unet2d_variant_small");
}

#[allow(dead_code)]
fn unused(_: Precond, _: Device) {}
