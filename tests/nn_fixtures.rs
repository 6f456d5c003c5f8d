//! The networks of `gddcm::nn` against the reference fixtures in `../shared/fixtures`
//! (fixtures/README.md, NETWORKS.md). A missing fixture fails the test.

use std::path::PathBuf;

use candle_core::{DType, Tensor};
use gddcm::family::{Network, Precond};
use gddcm::nn::{SongUNet, SongUNetConfig, TensorStore, UNet2DConfig, UNet2DModel};

fn fixture(name: &str) -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/fixtures")
        .join(name);
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
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
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
    let t = all
        .raw("in.timesteps")
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap();
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

fn sigmas(all: &TensorStore) -> Vec<f64> {
    all.raw("in.sigma")
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
        .into_iter()
        .map(|s| s as f64)
        .collect()
}

fn tol(meta: &serde_json::Value, k: &str) -> f64 {
    meta["suggested_tolerance_max_abs"][k].as_f64().unwrap()
}

/// A SongUNet with fixed augmentation labels, as a plain [`Network`].
struct WithAugment<'a>(&'a SongUNet, Tensor);

impl Network for WithAugment<'_> {
    fn forward(&self, x: &Tensor, c: &Tensor) -> candle_core::Result<Tensor> {
        self.0.forward_with(x, c, None, Some(&self.1))
    }
}

fn edm_fixture(name: &str, second: (&str, Precond)) {
    let meta = json(&format!("{name}.json"));
    let cfg = SongUNetConfig::from_edm_json(&meta["constructor_small"], name).unwrap();
    let all = store(&format!("{name}.safetensors"));
    let w = all.sub("w.");
    let net = SongUNet::new(&cfg, &w).unwrap();
    w.finish().unwrap();
    let x = all.raw("in.x").unwrap();
    assert!(x.dim(0).unwrap() > 1);
    let s = sigmas(&all);
    let d = Precond::EDM.apply(&net, x, &s).unwrap();
    check(&format!("{name} out.D"), &d, all.raw("out.D").unwrap(), tol(&meta, "D"));
    let (k, p) = second;
    let d2 = p.apply(&net, x, &s).unwrap();
    let key = k.strip_prefix("out.").unwrap();
    check(&format!("{name} {k}"), &d2, all.raw(k).unwrap(), tol(&meta, key));
    let aug = WithAugment(&net, all.raw("in.augment_labels").unwrap().clone());
    let da = Precond::EDM.apply(&aug, x, &s).unwrap();
    check(
        &format!("{name} out.D_aug"),
        &da,
        all.raw("out.D_aug").unwrap(),
        tol(&meta, "D_aug"),
    );
}

#[test]
fn edm_songunet_ddpmpp_small() {
    edm_fixture("edm_songunet_ddpmpp_small", ("out.D_vp", Precond::VP));
}

#[test]
fn edm_songunet_ncsnpp_small() {
    edm_fixture("edm_songunet_ncsnpp_small", ("out.D_ve", Precond::Ve));
}
