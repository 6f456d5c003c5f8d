//! File loaders end to end: diffusers directories, EDM exports, RF state dicts and pickles,
//! flax msgpack checkpoints. Fixture weights are re-written in each container format and the
//! loaded network must reproduce the fixture output.

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use gddcm::family::{Network, Precond};
use gddcm::nn::load::checkpoints::{flax_tree_to_store, read_flax_params_ema, read_pth_tensor_list};
use gddcm::nn::{RfWeights, SongUNet, TensorStore, UNet2DModel};

mod support;
use support::json;

fn max_abs(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    (a.to_dtype(DType::F32).unwrap() - b.to_dtype(DType::F32).unwrap())
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

/// The `w.*` tensors of a fixture, renamed by `f`, written as safetensors into `path`.
fn rewrite(fixture: &str, path: &std::path::Path, f: impl Fn(&str) -> String) -> TensorStore {
    rewrite_as(fixture, path, f, |t| t.clone())
}

/// [`rewrite`], each tensor passed through `conv` (e.g. a dtype change) before it is written.
fn rewrite_as(
    fixture: &str,
    path: &std::path::Path,
    f: impl Fn(&str) -> String,
    conv: impl Fn(&Tensor) -> Tensor,
) -> TensorStore {
    let all = TensorStore::new(fixture, support::tensors(fixture)).unwrap();
    let w = all.sub("w.");
    let map: HashMap<String, Tensor> = w.keys().map(|k| (f(k), conv(w.raw(k).unwrap()))).collect();
    candle_core::safetensors::save(&map, path).unwrap();
    all
}

/// A diffusers `UNet2DModel` folder of the fixture `name`, its weights passed through `conv`; the
/// fixture's output for its own input, from the loaded network, and the fixture's expected output.
fn unet2d_folder_output(name: &str, conv: impl Fn(&Tensor) -> Tensor) -> (Tensor, Tensor) {
    let dir = tempfile::tempdir().unwrap();
    let all = rewrite_as(name, &dir.path().join("diffusion_pytorch_model.safetensors"), |k| k.to_string(), conv);
    let meta = json(&format!("{name}.json"));
    let mut cfg = meta["constructor_config"].clone();
    cfg["_class_name"] = "UNet2DModel".into();
    cfg["_diffusers_version"] = "0.1.0".into();
    std::fs::write(dir.path().join("config.json"), cfg.to_string()).unwrap();
    let net = UNet2DModel::load(dir.path(), &Device::Cpu).unwrap();
    let t = all.raw("in.timesteps").unwrap().to_dtype(DType::F32).unwrap();
    let y = net.forward(all.raw("in.sample").unwrap(), &t).unwrap();
    (y, all.raw("out.sample").unwrap().clone())
}

#[test]
fn unet2d_diffusers_directory() {
    let (y, want) = unet2d_folder_output("unet2d_ddpm_cifar10_small", |t| t.clone());
    assert!(max_abs(&y, &want) < 2e-5);
}

/// The bundled models may ship f16 weights (issue 18): such a folder must compute exactly what
/// the f32 folder of the same rounded weights computes (the network runs in f32 either way).
#[test]
fn unet2d_f16_weights_compute_as_their_f32_rounding() {
    let name = "unet2d_variant_small";
    let half = |t: &Tensor| t.to_dtype(DType::F16).unwrap();
    let (y16, want) = unet2d_folder_output(name, half);
    let (y32, _) = unet2d_folder_output(name, |t| half(t).to_dtype(DType::F32).unwrap());
    assert_eq!(max_abs(&y16, &y32), 0.0);
    // And f16 rounding moves this output by little, but by something (the test sees the f16 file).
    let err = max_abs(&y16, &want);
    let scale = max_abs(&want, &want.zeros_like().unwrap());
    assert!(err > 0.0 && err < 1e-2 * scale, "f16 error {err} against output scale {scale}");
}

#[test]
fn unsupported_unet2d_config_is_an_error() {
    let cfg = r#"{"time_embedding_type": "fourier", "block_out_channels": [32, 64],
        "down_block_types": ["DownBlock2D", "DownBlock2D"], "up_block_types": ["UpBlock2D", "UpBlock2D"]}"#;
    let e = gddcm::nn::UNet2DConfig::from_json_str(cfg, "x/config.json").unwrap_err();
    assert!(e.to_string().contains("x/config.json") && e.to_string().contains("fourier"));
}

#[test]
fn edm_export_with_model_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let name = "edm_songunet_ncsnpp_small";
    let wpath = dir.path().join("net.safetensors");
    let all = rewrite(name, &wpath, |k| format!("model.{k}"));
    let meta = json(&format!("{name}.json"));
    let mut cfg = meta["constructor_small"].clone();
    cfg["precond"] = serde_json::json!({"class": "EDMPrecond", "sigma_data": 0.5});
    let cpath = dir.path().join("net.json");
    std::fs::write(&cpath, cfg.to_string()).unwrap();
    let net = SongUNet::load_edm(&cpath, &wpath, &Device::Cpu).unwrap();
    let s: Vec<f64> = all.raw("in.sigma").unwrap().to_vec1::<f32>().unwrap().iter().map(|&v| v as f64).collect();
    let d = Precond::EDM.apply(&net, all.raw("in.x").unwrap(), &s).unwrap();
    assert!(max_abs(&d, all.raw("out.D").unwrap()) < 3e-5);
}

#[test]
fn rf_state_dict_with_module_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let name = "rf_ncsnpp_ddpmpp_small";
    let wpath = dir.path().join("model.safetensors");
    let all = rewrite(name, &wpath, |k| format!("module.{k}"));
    let cpath = dir.path().join("rf.json");
    std::fs::write(&cpath, json(&format!("{name}.json"))["config_small"].to_string()).unwrap();
    let net = SongUNet::load_rf(&cpath, &wpath, RfWeights::Ema, &Device::Cpu).unwrap();
    let v = net.forward(all.raw("in.x").unwrap(), all.raw("in.labels").unwrap()).unwrap();
    assert!(max_abs(&v, all.raw("out.v").unwrap()) < 4e-5);
}

#[test]
fn pytorch_pickles() {
    let data = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    let ckpt = data.join("rf_like_checkpoint.pth");
    let names = ["all_modules.0.weight", "all_modules.0.bias", "all_modules.1.W", "all_modules.1.b"];
    let ema = read_pth_tensor_list(&ckpt, &["ema", "shadow_params"]).unwrap();
    assert_eq!(ema.len(), names.len());
    let model = TensorStore::from_pth(&ckpt, Some("model")).unwrap().strip_prefix("module.");
    let plain = TensorStore::from_file(data.join("state_dict.bin")).unwrap();
    assert_eq!(plain.len(), names.len());
    for (t, n) in ema.iter().zip(names) {
        let m = model.raw(n).unwrap();
        let p = plain.raw(n).unwrap();
        assert_eq!(t.dims(), m.dims(), "{n}");
        assert_eq!(max_abs(t, m), 0.0, "{n}: ema vs model");
        assert_eq!(max_abs(t, p), 0.0, "{n}: ema vs plain state dict");
        assert_eq!(m.dtype(), DType::F32, "stores hold f32");
    }
    assert_eq!(ema[2].dtype(), DType::F16);
    assert_eq!(ema[3].dtype(), DType::F64);
    let bad = read_pth_tensor_list(&ckpt, &["ema", "nope"]).unwrap_err();
    assert!(bad.to_string().contains("nope"), "{bad}");
}

/// A numpy array as flax's msgpack ext type 1: payload = msgpack (shape, dtype, bytes).
fn ext_array(t: &Tensor) -> rmpv::Value {
    let shape: Vec<rmpv::Value> = t.dims().iter().map(|&d| (d as u64).into()).collect();
    let v = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    let tpl = rmpv::Value::Array(vec![rmpv::Value::Array(shape), "float32".into(), rmpv::Value::Binary(bytes)]);
    let mut payload = Vec::new();
    rmpv::encode::write_value(&mut payload, &tpl).unwrap();
    rmpv::Value::Ext(1, payload)
}

/// Nests `a/b/c` keys into msgpack maps.
fn nest(items: &[(String, rmpv::Value)]) -> rmpv::Value {
    let mut groups: Vec<(String, Vec<(String, rmpv::Value)>)> = Vec::new();
    let mut leaves = Vec::new();
    for (k, v) in items {
        match k.split_once('/') {
            Some((head, rest)) => match groups.iter_mut().find(|g| g.0 == head) {
                Some(g) => g.1.push((rest.to_string(), v.clone())),
                None => groups.push((head.to_string(), vec![(rest.to_string(), v.clone())])),
            },
            None => leaves.push((rmpv::Value::from(k.as_str()), v.clone())),
        }
    }
    for (head, sub) in groups {
        leaves.push((head.as_str().into(), nest(&sub)));
    }
    rmpv::Value::Map(leaves)
}

#[test]
fn flax_msgpack_checkpoint() {
    let name = "cm_ncsnpp_small";
    let all = TensorStore::new(name, support::tensors(name)).unwrap();
    let w = all.sub("w.");
    let items: Vec<(String, rmpv::Value)> = w.keys().map(|k| (k.to_string(), ext_array(w.raw(k).unwrap()))).collect();
    let params = rmpv::Value::Map(vec![("params".into(), nest(&items))]);
    // A State-like root: other entries come first and must be skipped.
    let junk = rmpv::Value::Map(vec![
        ("mu".into(), nest(&items[..3])),
        ("count".into(), rmpv::Value::from(7)),
        ("f".into(), rmpv::Value::F64(0.5)),
        ("l".into(), rmpv::Value::Array(vec![rmpv::Value::Nil, true.into()])),
    ]);
    let root = rmpv::Value::Map(vec![
        ("step".into(), rmpv::Value::from(1000u64)),
        ("params".into(), params.clone()),
        ("opt_state".into(), junk),
        ("params_ema".into(), params.clone()),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let ck = dir.path().join("checkpoint_80");
    let mut buf = Vec::new();
    rmpv::encode::write_value(&mut buf, &root).unwrap();
    std::fs::write(&ck, &buf).unwrap();
    let cpath = dir.path().join("cm.json");
    std::fs::write(&cpath, json(&format!("{name}.json"))["config_small"].to_string()).unwrap();
    let net = SongUNet::load_cm(&cpath, &ck, &Device::Cpu).unwrap();

    let nchw = |t: &Tensor| t.permute((0, 3, 1, 2)).unwrap().contiguous().unwrap();
    let x = nchw(all.raw("in.x").unwrap());
    let s: Vec<f64> = all.raw("in.sigma").unwrap().to_vec1::<f32>().unwrap().iter().map(|&v| v as f64).collect();
    let y = Precond::CM_CIFAR10.apply(&net, &x, &s).unwrap();
    assert!(max_abs(&y, &nchw(all.raw("out.consistency").unwrap())) < 2e-5);

    // Nested under `state`, and the params tree without the `params` level.
    let root2 = rmpv::Value::Map(vec![("state".into(), rmpv::Value::Map(vec![("params_ema".into(), nest(&items))]))]);
    let mut buf = Vec::new();
    rmpv::encode::write_value(&mut buf, &root2).unwrap();
    std::fs::write(&ck, &buf).unwrap();
    assert_eq!(read_flax_params_ema(&ck).unwrap().len(), w.len());
    // Unsupported dtypes are errors naming the key.
    let tpl = rmpv::Value::Array(vec![
        rmpv::Value::Array(vec![1u64.into()]),
        "int32".into(),
        rmpv::Value::Binary(vec![0; 4]),
    ]);
    let mut payload = Vec::new();
    rmpv::encode::write_value(&mut payload, &tpl).unwrap();
    let t = rmpv::Value::Map(vec![(
        "Dense_0".into(),
        rmpv::Value::Map(vec![("kernel".into(), rmpv::Value::Ext(1, payload))]),
    )]);
    let e = flax_tree_to_store(&t, "ck").unwrap_err().to_string();
    assert!(e.contains("Dense_0/kernel") && e.contains("int32"), "{e}");
}
