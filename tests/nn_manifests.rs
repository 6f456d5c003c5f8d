//! Full-size architectures against the key manifests in `tests/fixtures/*.keys.json`:
//! every key consumed, none missing, shapes exact; and the errors for a wrong shape, a
//! missing key and an unused key. Zero weights (broadcast scalars), no real checkpoint needed.

use std::sync::Mutex;

use candle_core::{DType, Device, Tensor};
use gddcm::family::Network;
use gddcm::nn::{LoadError, SongUNet, SongUNetConfig, TensorStore, UNet2DConfig, UNet2DModel};

/// Full-size models take ~250 MB each: build one at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

mod support;
use support::json;

fn shapes(v: &serde_json::Value) -> Vec<(String, Vec<usize>)> {
    v.as_object()
        .unwrap()
        .iter()
        .map(|(k, s)| (k.clone(), s.as_array().unwrap().iter().map(|d| d.as_u64().unwrap() as usize).collect()))
        .collect()
}

fn zeros(origin: &str, sh: &[(String, Vec<usize>)]) -> TensorStore {
    TensorStore::zeros_from_shapes(origin, sh.iter().map(|(k, s)| (k.as_str(), s.as_slice()))).unwrap()
}

/// Runs `build` on the manifest, then on three corrupted copies, checking the errors.
fn check_manifest<T>(
    name: &str,
    sh: Vec<(String, Vec<usize>)>,
    build: impl Fn(&TensorStore) -> Result<T, LoadError>,
) -> T {
    let _g = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    // A wrong shape: the error names the file, the key, expected and found shapes.
    let (k0, s0) = sh.iter().find(|(k, _)| k.contains("conv") || k.contains("Conv")).cloned().unwrap();
    let mut bad = sh.clone();
    for (k, s) in bad.iter_mut() {
        if *k == k0 {
            s[0] += 1;
        }
    }
    match build(&zeros(name, &bad)) {
        Err(LoadError::Shape { file, key, expected, found }) => {
            assert_eq!(file, name);
            assert!(key.ends_with(&k0) || key == k0, "{key} vs {k0}");
            assert_eq!(expected, s0);
            assert_eq!(found[0], s0[0] + 1);
        }
        Err(e) => panic!("{name}: wrong shape gave {e}"),
        Ok(_) => panic!("{name}: wrong shape accepted"),
    }
    // A missing key.
    let missing: Vec<_> = sh.iter().filter(|(k, _)| *k != k0).cloned().collect();
    match build(&zeros(name, &missing)) {
        Err(LoadError::Missing { key, expected, .. }) => {
            assert!(key.ends_with(&k0) || key == k0);
            assert_eq!(expected, s0);
        }
        Err(e) => panic!("{name}: missing key gave {e}"),
        Ok(_) => panic!("{name}: missing key accepted"),
    }
    // An unused key.
    let mut extra = sh.clone();
    extra.push(("not_a_layer.weight".into(), vec![3]));
    match build(&zeros(name, &extra)) {
        Err(LoadError::Unused { keys, .. }) => assert_eq!(keys, vec!["not_a_layer.weight"]),
        Err(e) => panic!("{name}: unused key gave {e}"),
        Ok(_) => panic!("{name}: unused key accepted"),
    }
    let msg = build(&zeros(name, &extra)).err().unwrap().to_string();
    assert!(msg.contains(name) && msg.contains("not_a_layer.weight"), "{msg}");
    // The manifest itself.
    build(&zeros(name, &sh)).unwrap()
}

fn count(sh: &[(String, Vec<usize>)]) -> usize {
    sh.iter().map(|(_, s)| s.iter().product::<usize>()).sum()
}

fn smoke_forward(net: &dyn Network, ch: usize, res: usize) {
    let x = Tensor::randn(0f32, 1.0, (2, ch, res, res), &Device::Cpu).unwrap();
    let t = Tensor::new(&[0.5f32, 10.0], &Device::Cpu).unwrap();
    let y = net.forward(&x, &t).unwrap();
    assert_eq!(y.dims(), &[2, ch, res, res]);
    assert_eq!(y.dtype(), DType::F32);
}

#[test]
fn unet2d_ddpm_cifar10_32_both_namings() {
    let m = json("unet2d_ddpm_cifar10_32.keys.json");
    let cfg: UNet2DConfig = serde_json::from_value(m["config_assumed"].clone()).unwrap();
    for field in ["state_dict_shapes_modern", "state_dict_shapes_legacy"] {
        let sh = shapes(&m[field]);
        assert_eq!(sh.len() as u64, m["num_tensors"].as_u64().unwrap());
        assert_eq!(count(&sh) as u64, m["param_count"].as_u64().unwrap());
        let net = check_manifest(field, sh, |s| UNet2DModel::from_store(&cfg, s));
        if field.ends_with("legacy") {
            smoke_forward(&net, 3, 32);
        }
    }
}

#[test]
fn edm_songunet_full_manifests() {
    for name in ["edm_songunet_ddpmpp.full.keys.json", "edm_songunet_ncsnpp.full.keys.json"] {
        let m = json(name);
        let cfg = SongUNetConfig::from_edm_json(&m["constructor"], name).unwrap();
        let sh = shapes(&m["keys"]);
        assert_eq!(sh.len() as u64, m["num_state_dict_entries"].as_u64().unwrap());
        let bufs: usize = m["buffer_keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| {
                let k = k.as_str().unwrap();
                sh.iter().find(|(n, _)| n == k).unwrap().1.iter().product::<usize>()
            })
            .sum();
        assert_eq!((count(&sh) - bufs) as u64, m["num_parameters"].as_u64().unwrap());
        check_manifest(name, sh.clone(), |s| SongUNet::from_edm_store(&cfg, s));
        // The released pickles' `model.` prefix.
        let _g = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
        let pre: Vec<_> = sh.into_iter().map(|(k, s)| (format!("model.{k}"), s)).collect();
        let store = zeros(name, &pre).strip_prefix("model.");
        let net = SongUNet::from_edm_store(&cfg, &store).unwrap();
        if name.contains("ddpmpp") {
            smoke_forward(&net, 3, 32);
        }
    }
}

#[test]
fn rf_full_manifest() {
    let name = "rf_ncsnpp_ddpmpp.full.keys.json";
    let m = json(name);
    let cfg = SongUNetConfig::from_rf_json(&m["config"], name).unwrap();
    let sh = shapes(&m["keys"]);
    assert_eq!(sh.len() as u64, m["num_state_dict_entries"].as_u64().unwrap());
    // DataParallel's `module.` prefix, as in the released checkpoint's `model` entry.
    let net = check_manifest(name, sh, |s| {
        let pre: Vec<(String, Tensor)> = s.keys().map(|k| (format!("module.{k}"), s.raw(k).unwrap().clone())).collect();
        let st = TensorStore::new(name, pre).unwrap().strip_prefix("module.");
        SongUNet::from_rf_store(&cfg, &st)
    });
    smoke_forward(&net, 3, 32);
}

#[test]
fn cm_full_manifest() {
    let name = "cm_ncsnpp.full.keys.json";
    let m = json(name);
    let cfg = SongUNetConfig::from_cm_json(&m["config_model"], name).unwrap();
    let sh = shapes(&m["keys"]);
    assert_eq!(sh.len() as u64, m["num_entries"].as_u64().unwrap());
    assert_eq!(count(&sh) as u64, m["num_parameters"].as_u64().unwrap());
    check_manifest(name, sh, |s| SongUNet::from_cm_store(&cfg, s));
}
