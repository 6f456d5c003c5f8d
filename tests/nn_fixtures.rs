//! The networks of `gddcm::nn` against the reference fixtures in `tests/fixtures`
//! (its README.md and NETWORKS.md). A missing fixture fails the test.

mod support;

use candle_core::{DType, Tensor};
use gddcm::family::{Network, Precond};
use gddcm::nn::{SongUNet, SongUNetConfig, TensorStore, UNet2DConfig, UNet2DModel};

use support::json;

/// Fixture `name` (committed tensors plus its seeded weights).
fn store(name: &str) -> TensorStore {
    TensorStore::new(name, support::tensors(name)).unwrap()
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
    let all = store(name);
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

fn sigmas(all: &TensorStore) -> Vec<f64> {
    all.raw("in.sigma").unwrap().to_vec1::<f32>().unwrap().into_iter().map(|s| s as f64).collect()
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
    let all = store(name);
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
    check(&format!("{name} out.D_aug"), &da, all.raw("out.D_aug").unwrap(), tol(&meta, "D_aug"));
}

#[test]
fn edm_songunet_ddpmpp_small() {
    edm_fixture("edm_songunet_ddpmpp_small", ("out.D_vp", Precond::VP));
}

#[test]
fn edm_songunet_ncsnpp_small() {
    edm_fixture("edm_songunet_ncsnpp_small", ("out.D_ve", Precond::Ve));
}

#[test]
fn rf_ncsnpp_ddpmpp_small() {
    let name = "rf_ncsnpp_ddpmpp_small";
    let meta = json(&format!("{name}.json"));
    let cfg = SongUNetConfig::from_rf_json(&meta["config_small"], name).unwrap();
    let all = store(name);
    let w = all.sub("w.");
    let net = SongUNet::from_rf_store(&cfg, &w).unwrap();
    let x = all.raw("in.x").unwrap();
    assert!(x.dim(0).unwrap() > 1);
    // out.v = net(x, t·999)
    let t = all.raw("in.t").unwrap();
    let labels = (t * 999.0).unwrap();
    let v = net.forward(x, &labels).unwrap();
    check(&format!("{name} out.v"), &v, all.raw("out.v").unwrap(), tol(&meta, "v"));
}

fn nhwc_to_nchw(t: &Tensor) -> Tensor {
    t.permute((0, 3, 1, 2)).unwrap().contiguous().unwrap()
}

#[test]
fn cm_ncsnpp_small() {
    let name = "cm_ncsnpp_small";
    let meta = json(&format!("{name}.json"));
    let cfg = SongUNetConfig::from_cm_json(&meta["config_small"], name).unwrap();
    let all = store(name);
    let w = all.sub("w.");
    let net = SongUNet::from_cm_store(&cfg, &w).unwrap();
    let x = nhwc_to_nchw(all.raw("in.x").unwrap());
    assert!(x.dim(0).unwrap() > 1);
    let s = sigmas(&all);
    let want = |k: &str| nhwc_to_nchw(all.raw(k).unwrap());
    // Raw F(c_in·x, ¼ ln σ).
    let c_in: Vec<f32> = s.iter().map(|s| (1.0 / (s * s + 0.25).sqrt()) as f32).collect();
    let c_noise: Vec<f32> = s.iter().map(|s| (0.25 * s.ln()) as f32).collect();
    let c_in = Tensor::from_vec(c_in, (s.len(), 1, 1, 1), x.device()).unwrap();
    let c_noise = Tensor::from_vec(c_noise, s.len(), x.device()).unwrap();
    let f = net.forward(&x.broadcast_mul(&c_in).unwrap(), &c_noise).unwrap();
    check(&format!("{name} out.F"), &f, &want("out.F"), tol(&meta, "F"));
    let cons = Precond::CM_CIFAR10.apply(&net, &x, &s).unwrap();
    check(&format!("{name} out.consistency"), &cons, &want("out.consistency"), tol(&meta, "consistency"));
    // get_denoiser_fn is EDM's D with σd = 0.5 and the same c_in, c_noise = ¼ ln σ.
    let den = Precond::EDM.apply(&net, &x, &s).unwrap();
    check(&format!("{name} out.denoiser"), &den, &want("out.denoiser"), tol(&meta, "denoiser"));
}

/// Our key map (built from the config) against the verified `*.songunet_keymap.json`.
fn check_keymap(file: &str, ours: &gddcm::nn::KeyMap) {
    use gddcm::nn::Rule;
    let j = json(file);
    let theirs: std::collections::BTreeMap<String, String> = j["map"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e[0].as_str().unwrap().to_string(), e[1].as_str().unwrap().to_string()))
        .collect();
    let our_keys: std::collections::BTreeSet<&str> = ours.entries.iter().map(|(k, _)| k.as_str()).collect();
    let their_keys: std::collections::BTreeSet<&str> = theirs.keys().map(|s| s.as_str()).collect();
    assert_eq!(our_keys, their_keys, "{file}: SongUNet key sets differ");
    assert_eq!(ours.entries.len(), theirs.len(), "{file}: duplicate entries");
    for (k, rule) in &ours.entries {
        let text = &theirs[k];
        for src in rule.sources() {
            // The json names sources inside free text: require an exact token match.
            let found = text.split([' ', ',', '(', ')']).any(|tok| tok == src);
            assert!(found, "{file}: `{k}`: our source `{src}` not in `{text}`");
        }
        let ok = match rule {
            Rule::Same(_) => !text.contains('(') && !text.contains('['),
            Rule::Transpose(_) => text.ends_with("(transpose)"),
            Rule::HwioToOihw(_) => text.contains("HWIO->OIHW"),
            Rule::NinToConv(_) => text.contains("transpose -> [out,in,1,1]"),
            Rule::InterleaveQkvWeight(_) => text.starts_with("rows [3c+j]"),
            Rule::InterleaveQkvBias(_) => text.starts_with("[3c+j]"),
            Rule::Fixed => text == "(fixed FIR buffer)",
        };
        assert!(ok, "{file}: `{k}`: rule {rule:?} vs `{text}`");
    }
}

#[test]
fn rf_keymap_matches_fixture() {
    let meta = json("rf_ncsnpp_ddpmpp_small.json");
    let cfg = SongUNetConfig::from_rf_json(&meta["config_small"], "rf").unwrap();
    // The same config, as the key-map file states it in SongUNet terms.
    let km = json("rf_ncsnpp_ddpmpp_small.songunet_keymap.json");
    let mut sc = km["songunet_config"].clone();
    sc["img_resolution"] = 32.into();
    sc["img_channels"] = 3.into();
    assert_eq!(cfg, SongUNetConfig::from_edm_json(&sc, "keymap").unwrap());
    check_keymap("rf_ncsnpp_ddpmpp_small.songunet_keymap.json", &gddcm::nn::rf_keymap(&cfg).unwrap());
}

#[test]
fn cm_keymap_matches_fixture() {
    let meta = json("cm_ncsnpp_small.json");
    let cfg = SongUNetConfig::from_cm_json(&meta["config_small"], "cm").unwrap();
    let km = json("cm_ncsnpp_small.songunet_keymap.json");
    let mut sc = km["songunet_config"].clone();
    sc["img_resolution"] = 32.into();
    sc["img_channels"] = 3.into();
    assert_eq!(cfg, SongUNetConfig::from_edm_json(&sc, "keymap").unwrap());
    check_keymap("cm_ncsnpp_small.songunet_keymap.json", &gddcm::nn::cm_keymap(&cfg));
}

#[test]
fn rf_param_order_matches_fixture() {
    let j = json("rf_ncsnpp_ddpmpp.full.param_order.json");
    let keys = json("rf_ncsnpp_ddpmpp.full.keys.json");
    let cfg = SongUNetConfig::from_rf_json(&keys["config"], "rf full").unwrap();
    let ours = gddcm::nn::rf_param_order(&cfg).unwrap();
    let theirs: Vec<(String, Vec<usize>)> = j["order"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap().to_string(),
                e["shape"].as_array().unwrap().iter().map(|d| d.as_u64().unwrap() as usize).collect(),
            )
        })
        .collect();
    assert_eq!(ours.len(), j["count"].as_u64().unwrap() as usize);
    for (i, (a, b)) in ours.iter().zip(&theirs).enumerate() {
        assert_eq!(a, b, "parameter {i}");
    }
    let n: usize = ours.iter().map(|(_, s)| s.iter().product::<usize>()).sum();
    assert_eq!(n as u64, j["num_parameters"].as_u64().unwrap());
}
