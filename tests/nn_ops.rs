//! The custom CPU kernels of `gddcm::nn::kernels::ops` against candle's reference ops.

use candle_core::{Device, Tensor};
use gddcm::nn::kernels::ops;

fn max_abs(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
}

/// A seeded xorshift64 draw in `0..n`, for reproducible random shapes.
fn xorshift(mut state: u64) -> impl FnMut(usize) -> usize {
    move |n| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % n as u64) as usize
    }
}

#[test]
fn conv2d_matches_candle() {
    let dev = Device::Cpu;
    for &(b, ci, co, h, w, k, p, s) in &[
        (1usize, 3usize, 8usize, 9usize, 7usize, 3usize, 1usize, 1usize),
        (3, 5, 4, 8, 8, 3, 1, 1),
        (4, 6, 6, 8, 8, 3, 0, 2),
        (2, 4, 7, 9, 9, 3, 1, 2),
        (5, 8, 3, 6, 6, 1, 0, 1),
        (2, 3, 4, 6, 5, 3, 2, 1),
        (1, 2, 3, 8, 8, 4, 1, 2),
        // Stride-1 "same" convolutions (whole-plane im2col), including tiny planes.
        (2, 3, 5, 4, 4, 3, 1, 1),
        (3, 2, 4, 1, 1, 3, 1, 1),
        (2, 2, 3, 2, 3, 3, 1, 1),
        (2, 3, 2, 7, 6, 5, 2, 1),
        (17, 4, 4, 16, 16, 3, 1, 1),
        (1, 1, 1, 1, 1, 5, 2, 1),
        (2, 2, 2, 2, 3, 5, 2, 1),
        (2, 2, 2, 3, 1, 5, 2, 1),
    ] {
        let x = Tensor::randn(0f32, 1.0, (b, ci, h, w), &dev).unwrap();
        let wt = Tensor::randn(0f32, 1.0, (co, ci, k, k), &dev).unwrap();
        let bias = Tensor::randn(0f32, 1.0, co, &dev).unwrap();
        let got = ops::conv2d(&x, &wt, &bias, p, s).unwrap();
        let want = x.conv2d(&wt, p, s, 1, 1).unwrap().broadcast_add(&bias.reshape((1, co, 1, 1)).unwrap()).unwrap();
        let e = max_abs(&got, &want);
        assert!(e < 1e-4, "{:?}: {e}", (b, ci, co, h, w, k, p, s));
    }
}

#[test]
fn group_norm_matches_composite() {
    let dev = Device::Cpu;
    let (b, c, g) = (3, 12, 4);
    let x = (Tensor::randn(0f32, 2.0, (b, c, 5, 6), &dev).unwrap() + 3.0).unwrap();
    let w: Vec<f32> = (0..c).map(|i| 1.0 + 0.1 * i as f32).collect();
    let bi: Vec<f32> = (0..c).map(|i| 0.05 * i as f32 - 0.2).collect();
    let gn = candle_nn::GroupNorm::new(
        Tensor::new(w.as_slice(), &dev).unwrap(),
        Tensor::new(bi.as_slice(), &dev).unwrap(),
        c,
        g,
        1e-6,
    )
    .unwrap();
    let want = candle_core::Module::forward(&gn, &x).unwrap();
    let got = ops::group_norm(&x, g, 1e-6, &w, &bi, false, None).unwrap();
    assert!(max_abs(&got, &want) < 1e-5);
    let got = ops::group_norm(&x, g, 1e-6, &w, &bi, true, None).unwrap();
    assert!(max_abs(&got, &want.silu().unwrap()) < 1e-5);
}

/// Many small random shapes (every padding up to k/2 + 1, strides 1 and 2, planes down to
/// 1×1), each against candle's convolution.
#[test]
fn conv2d_matches_candle_on_random_small_shapes() {
    let dev = Device::Cpu;
    let mut next = xorshift(0x2545_f491_4f6c_dd1d);
    let mut tried = 0;
    while tried < 150 {
        let (b, ci, co) = (1 + next(3), 1 + next(4), 1 + next(4));
        let (h, w, k) = (1 + next(9), 1 + next(9), [1, 3, 5][next(3)]);
        let (p, s) = (next(k / 2 + 2), 1 + next(2));
        if h + 2 * p < k || w + 2 * p < k {
            continue;
        }
        tried += 1;
        let x = Tensor::randn(0f32, 1.0, (b, ci, h, w), &dev).unwrap();
        let wt = Tensor::randn(0f32, 1.0, (co, ci, k, k), &dev).unwrap();
        let bias = Tensor::randn(0f32, 1.0, co, &dev).unwrap();
        let got = ops::conv2d(&x, &wt, &bias, p, s).unwrap();
        let want = x.conv2d(&wt, p, s, 1, 1).unwrap().broadcast_add(&bias.reshape((1, co, 1, 1)).unwrap()).unwrap();
        assert_eq!(got.dims(), want.dims());
        let e = max_abs(&got, &want);
        assert!(e < 1e-4, "{:?}: {e}", (b, ci, co, h, w, k, p, s));
    }
}

/// Shapes the direct AVX-512 kernel takes (stride 1, channels in blocks of 16, kernel wider
/// than 1×1): every tile shape of its tiling (rows of 1–16 pixels, bands of 1, 2 and 4 rows),
/// batch 1 (output blocks in parallel) and larger (images in parallel), against candle. On a
/// CPU without AVX-512 the same shapes go through im2col + GEMM.
#[test]
fn conv2d_matches_candle_on_direct_kernel_shapes() {
    let dev = Device::Cpu;
    let mut next = xorshift(0x9e37_79b9_7f4a_7c15);
    // Fixed shapes first: the bundled and full-size maps, and planes lower than the tile height
    // that narrow maps ask for (3 and 2 rows of at most 4 pixels, like LPIPS-AlexNet's last maps).
    let mut shapes = vec![
        (2usize, 32usize, 16usize, 28usize, 28usize, 3usize, 1usize),
        (1, 16, 48, 32, 32, 3, 1),
        (3, 80, 32, 8, 8, 3, 1),
        (1, 16, 16, 3, 3, 3, 1),
        (2, 32, 16, 2, 4, 3, 1),
        (1, 16, 32, 3, 7, 5, 2),
    ];
    while shapes.len() < 60 {
        let (b, ci, co) = (1 + next(3), 16 * (1 + next(3)), 16 * (1 + next(3)));
        let (h, w, k) = (1 + next(20), 1 + next(20), [3, 5][next(2)]);
        let p = next(k / 2 + 2);
        if h + 2 * p >= k && w + 2 * p >= k {
            shapes.push((b, ci, co, h, w, k, p));
        }
    }
    for (b, ci, co, h, w, k, p) in shapes {
        let x = Tensor::randn(0f32, 1.0, (b, ci, h, w), &dev).unwrap();
        let wt = Tensor::randn(0f32, 1.0, (co, ci, k, k), &dev).unwrap();
        let bias = Tensor::randn(0f32, 1.0, co, &dev).unwrap();
        let want = x.conv2d(&wt, p, 1, 1, 1).unwrap().broadcast_add(&bias.reshape((1, co, 1, 1)).unwrap()).unwrap();
        let got = ops::conv2d(&x, &wt, &bias, p, 1).unwrap();
        let tol = 2e-6 * (ci * k * k) as f32;
        let e = max_abs(&got, &want);
        assert!(e < tol, "{:?}: {e}", (b, ci, co, h, w, k, p));
        // A layer keeps its repacked weights: the second call uses them.
        let layer = gddcm::nn::layers::Conv2d::new(wt.clone(), Some(bias.clone()), p, 1).unwrap();
        for _ in 0..2 {
            let e = max_abs(&layer.forward(&x).unwrap(), &want);
            assert!(e < tol, "layer {:?}: {e}", (b, ci, co, h, w, k, p));
        }
    }
}

/// The attention block written plainly, one image and one head at a time, with 2-D matmuls
/// and candle's softmax: `(x + W_o·[v_h·softmax(q_hᵀk_h/√d)ᵀ]_h + b_o) / rescale`.
#[allow(clippy::too_many_arguments)]
fn attention_reference(
    x: &Tensor,
    hn: &Tensor,
    w: [&Tensor; 4],
    b: [&Tensor; 4],
    heads: usize,
    rescale: f64,
) -> Tensor {
    let (bs, c, h, wd) = x.dims4().unwrap();
    let d = c / heads;
    let lin = |i: usize, m: &Tensor| w[i].matmul(m).unwrap().broadcast_add(&b[i].reshape((c, 1)).unwrap()).unwrap();
    let images: Vec<Tensor> = (0..bs)
        .map(|i| {
            let hi = hn.get(i).unwrap().reshape((c, h * wd)).unwrap();
            let (q, k, v) = (lin(0, &hi), lin(1, &hi), lin(2, &hi));
            let per_head: Vec<Tensor> = (0..heads)
                .map(|j| {
                    let part = |m: &Tensor| m.narrow(0, j * d, d).unwrap();
                    let logits = (part(&q).t().unwrap().matmul(&part(&k)).unwrap() / (d as f64).sqrt()).unwrap();
                    let p = candle_nn::ops::softmax_last_dim(&logits).unwrap();
                    part(&v).matmul(&p.t().unwrap()).unwrap()
                })
                .collect();
            let o = lin(3, &Tensor::cat(&per_head, 0).unwrap());
            ((x.get(i).unwrap().reshape((c, h * wd)).unwrap() + o).unwrap() / rescale)
                .unwrap()
                .reshape((c, h, wd))
                .unwrap()
        })
        .collect();
    Tensor::stack(&images, 0).unwrap()
}

#[test]
fn self_attention_matches_a_plain_reference() {
    use gddcm::nn::layers::{GroupNorm, SelfAttention};
    use gddcm::nn::{TensorStore, VarPath};
    let dev = Device::Cpu;
    let c = 16;
    let r = |s: &[usize]| Tensor::randn(0f32, 0.4, s, &dev).unwrap();
    let store = TensorStore::new(
        "random",
        vec![("n.weight".to_string(), (r(&[c]) + 1.0).unwrap()), ("n.bias".to_string(), r(&[c]))],
    )
    .unwrap();
    let norm = GroupNorm::load(&VarPath::new(&store).pp("n"), c, 4, 1e-5).unwrap();
    for (heads, rescale) in [(1, 1.0), (2, std::f64::consts::SQRT_2), (4, 1.0)] {
        let w: Vec<Tensor> = (0..4).map(|_| r(&[c, c])).collect();
        let b: Vec<Tensor> = (0..4).map(|_| r(&[c])).collect();
        let att = SelfAttention::new(
            Some(norm.clone()),
            &w[0],
            &w[1],
            &w[2],
            &b[0],
            &b[1],
            &b[2],
            &w[3],
            &b[3],
            heads,
            rescale,
        )
        .unwrap();
        // Batch below and at the thread count: heads or images in parallel.
        for (threads, batch) in [(1, 1), (2, 1), (2, 4)] {
            let x = (r(&[batch, c, 5, 3]) * 2.0).unwrap();
            let want = attention_reference(
                &x,
                &norm.forward(&x).unwrap(),
                [&w[0], &w[1], &w[2], &w[3]],
                [&b[0], &b[1], &b[2], &b[3]],
                heads,
                rescale,
            );
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            let got = pool.install(|| att.forward(&x).unwrap());
            let e = max_abs(&got, &want);
            assert!(e < 2e-5, "heads {heads}, {threads} threads, batch {batch}: {e}");
        }
    }
}
