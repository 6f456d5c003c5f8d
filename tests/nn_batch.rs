//! Batch > 1 regressions. candle 0.11.1's CPU batched matmul is wrong when the left operand
//! is a transposed view and the right one is broadcast over the batch (upstream issue 3744,
//! docs/cpu-notes.md) — exactly what a `Linear` on `[B, HW, C]` from a transposed `[B, C, HW]`
//! does inside attention blocks. Every batched result must equal the per-sample results.

mod support;

use candle_core::{Device, Tensor};
use gddcm::family::Network;
use gddcm::nn::layers::{GroupNorm, SelfAttention};
use gddcm::nn::{TensorStore, UNet2DConfig, UNet2DModel, VarPath};

fn max_abs(a: &Tensor, b: &Tensor) -> f32 {
    (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
}

fn per_sample(f: impl Fn(&Tensor, &Tensor) -> Tensor, x: &Tensor, t: &Tensor) -> Tensor {
    let b = x.dim(0).unwrap();
    let parts: Vec<Tensor> = (0..b).map(|i| f(&x.narrow(0, i, 1).unwrap(), &t.narrow(0, i, 1).unwrap())).collect();
    Tensor::cat(&parts, 0).unwrap()
}

#[test]
fn attention_batched_equals_per_sample() {
    let dev = Device::Cpu;
    let c = 16;
    let r = |s: &[usize]| Tensor::randn(0f32, 0.3, s, &dev).unwrap();
    let store = TensorStore::new(
        "random",
        vec![("n.weight".to_string(), (r(&[c]) + 1.0).unwrap()), ("n.bias".to_string(), r(&[c]))],
    )
    .unwrap();
    let norm = GroupNorm::load(&VarPath::new(&store).pp("n"), c, 4, 1e-5).unwrap();
    for heads in [1, 4] {
        let att = SelfAttention::new(
            Some(norm.clone()),
            &r(&[c, c]),
            &r(&[c, c]),
            &r(&[c, c]),
            &r(&[c]),
            &r(&[c]),
            &r(&[c]),
            &r(&[c, c]),
            &r(&[c]),
            heads,
            1.0,
        )
        .unwrap();
        let x = r(&[3, c, 5, 4]);
        let t = Tensor::zeros(3, candle_core::DType::F32, &dev).unwrap();
        let whole = att.forward(&x).unwrap();
        let each = per_sample(|x, _| att.forward(x).unwrap(), &x, &t);
        let e = max_abs(&whole, &each);
        assert!(e < 1e-5, "heads {heads}: batched vs per-sample {e}");
    }
}

#[test]
fn unet2d_batched_equals_per_sample() {
    let name = "unet2d_variant_small";
    let meta = support::json(&format!("{name}.json"));
    let cfg: UNet2DConfig = serde_json::from_value(meta["constructor_config"].clone()).unwrap();
    let all = TensorStore::new(name, support::tensors(name)).unwrap();
    let net = UNet2DModel::from_store(&cfg, &all.sub("w.")).unwrap();
    let x = Tensor::randn(0f32, 1.0, (3, 1, 64, 64), &Device::Cpu).unwrap();
    let t = Tensor::new(&[3f32, 400.5, 871.0], &Device::Cpu).unwrap();
    let whole = net.forward(&x, &t).unwrap();
    let each = per_sample(|x, t| net.forward(x, t).unwrap(), &x, &t);
    let e = max_abs(&whole, &each);
    assert!(e < 1e-5, "batched vs per-sample {e}");
}
