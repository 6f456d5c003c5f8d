//! Codebook throughput (SPEC 5; issue 6). A plain `main` (harness = false) printing numbers:
//!
//! 1. values generated per second by `Codebooks::entry_into` (Philox4x32-10 + Box–Muller in
//!    f64, vectorised, bit-identical to `libm`), one thread, against the scalar definition in
//!    the same run (checked equal);
//! 2. `Codebooks::argmax` at K = 4096, d = 3072 (CIFAR-10 size), B = 1, 4, 16 and 64: seconds
//!    per token, values generated per second and multiply–adds per second of scoring, against
//!    the same argmax over scalar-generated entries (checked equal);
//! 3. the share of encode time spent on codebook work for a bundled-size network (the
//!    1×32×32 test UNet of the project's notes, random weights, EDM preconditioning), or for
//!    a real model folder given in `GDDCM_BENCH_WEIGHTS` (loaded as `fmnist-edm`).
//!
//! `cargo bench --bench codebook`; `BENCH_REPS` (default 2) repeats each timing, keeping the
//! fastest.

use std::sync::Arc;
use std::time::Instant;

use candle_core::{Device, Tensor};
use gddcm::codebook::{box_muller, dot, philox4x32_10, Codebooks, STREAM_CODEBOOK};
use gddcm::family::{Denoiser, Precond, PrecondDenoiser};
use gddcm::marginal::Marginal;
use gddcm::nn::{LoadResult, UNet2DConfig, UNet2DModel, WeightSource};
use gddcm::profile::Settings;
use gddcm::tokenizer::{Timings, Tokenizer};
use rayon::prelude::*;

const TINY_UNET: &str = r#"{"_class_name": "UNet2DModel", "act_fn": "silu", "add_attention": true,
 "attention_head_dim": 8, "block_out_channels": [16, 32, 32], "center_input_sample": false,
 "down_block_types": ["DownBlock2D", "DownBlock2D", "AttnDownBlock2D"], "downsample_padding": 1,
 "downsample_type": "conv", "flip_sin_to_cos": true, "freq_shift": 0, "in_channels": 1,
 "layers_per_block": 1, "mid_block_scale_factor": 1, "norm_eps": 1e-05, "norm_num_groups": 8,
 "out_channels": 1, "resnet_time_scale_shift": "default", "sample_size": 32,
 "time_embedding_type": "positional", "up_block_types": ["AttnUpBlock2D", "UpBlock2D", "UpBlock2D"],
 "upsample_type": "conv"}"#;

/// Random weights for any key: small seeded Gaussians (timing only; outputs are meaningless).
struct RandomWeights;

impl WeightSource for RandomWeights {
    fn origin(&self) -> &str {
        "random weights (bench)"
    }
    fn tensor(&self, key: &str, shape: &[usize]) -> LoadResult<Tensor> {
        let n: usize = shape.iter().product();
        let seed = key.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3));
        let v: Vec<f32> = Codebooks::new(seed, n).entry(7, 0, 0).iter().map(|x| x * 0.05).collect();
        Ok(Tensor::from_vec(v, shape, &Device::Cpu).expect("bench tensor"))
    }
    fn contains(&self, _key: &str) -> bool {
        true
    }
    fn fixed_buffer(&self, _key: &str, _shape: &[usize]) -> LoadResult<()> {
        Ok(())
    }
}

fn reps() -> usize {
    std::env::var("BENCH_REPS").ok().and_then(|v| v.parse().ok()).unwrap_or(2).max(1)
}

/// Fastest of `reps()` runs, in seconds, and the last result.
fn time<T>(mut f: impl FnMut() -> T) -> (f64, T) {
    let mut best = f64::INFINITY;
    let mut out = None;
    for _ in 0..reps() {
        let t = Instant::now();
        let r = f();
        best = best.min(t.elapsed().as_secs_f64());
        out = Some(r);
    }
    (best, out.unwrap())
}

/// The scalar definition (one Philox counter and two `libm` Box–Muller transforms at a time):
/// how entries were generated before `codebook/lanes.rs`, the "before" of the comparison.
fn scalar_entry_into(seed: u64, i: u32, j: u32, out: &mut [f32]) {
    let key = [seed as u32, (seed >> 32) as u32];
    for (q, chunk) in out.chunks_mut(4).enumerate() {
        let w = philox4x32_10([q as u32, j, i, STREAM_CODEBOOK], key);
        let (n0, n1) = box_muller(w[0], w[1]);
        let (n2, n3) = box_muller(w[2], w[3]);
        for (o, v) in chunk.iter_mut().zip([n0, n1, n2, n3]) {
            *o = v as f32;
        }
    }
}

/// Entry-at-a-time argmax over scalar-generated entries (the implementation before this
/// session's vectorised generation, grouping aside), for the side-by-side timing.
fn argmax_scalar(cb: &Codebooks, i: u32, k: u32, residuals: &[&[f32]]) -> Vec<u32> {
    (0..k.div_ceil(32))
        .into_par_iter()
        .map(|blk| {
            let mut buf = vec![0.0f32; cb.dim];
            let mut best = vec![(f32::NEG_INFINITY, 0u32); residuals.len()];
            for j in blk * 32..((blk + 1) * 32).min(k) {
                scalar_entry_into(cb.seed, i, j, &mut buf);
                for (b, r) in residuals.iter().enumerate() {
                    let s = dot(&buf, r);
                    if s > best[b].0 {
                        best[b] = (s, j);
                    }
                }
            }
            best
        })
        .reduce_with(|a, b| a.into_iter().zip(b).map(|(x, y)| if y.0 > x.0 { y } else { x }).collect())
        .unwrap()
        .into_iter()
        .map(|(_, j)| j)
        .collect()
}

fn main() {
    let threads = rayon::current_num_threads();
    println!("codebook bench: {threads} rayon threads, best of {} runs", reps());

    // 1. Generation, one thread.
    let d = 3072;
    let cb = Codebooks::new(0x6464_636d, d);
    let entries = 256u32;
    let mut buf = vec![0.0f32; d];
    let (t, _) = time(|| {
        for j in 0..entries {
            cb.entry_into(STREAM_CODEBOOK, 0, j, &mut buf);
        }
        buf[0]
    });
    let gen_rate = entries as f64 * d as f64 / t;
    let mut scalar = vec![0.0f32; d];
    let (t0, _) = time(|| {
        for j in 0..entries {
            scalar_entry_into(cb.seed, 0, j, &mut scalar);
        }
        scalar[0]
    });
    assert!(buf.iter().zip(&scalar).all(|(a, b)| a.to_bits() == b.to_bits()), "vectorised != scalar");
    let scalar_rate = entries as f64 * d as f64 / t0;
    println!(
        "generation (1 thread): {:.2} M values/s ({:.1} ns/value); scalar libm path: {:.2} M values/s; speedup {:.2}x",
        gen_rate / 1e6,
        1e9 / gen_rate,
        scalar_rate / 1e6,
        gen_rate / scalar_rate
    );

    // 2. Scoring: argmax over K = 4096 entries of d = 3072, B = 1 and 64.
    let k = 4096u32;
    for b in [1usize, 4, 16, 64] {
        let res: Vec<Vec<f32>> = (0..b as u32).map(|j| cb.entry(5, 0, j)).collect();
        let refs: Vec<&[f32]> = res.iter().map(|r| r.as_slice()).collect();
        let (t, got) = time(|| cb.argmax(STREAM_CODEBOOK, 3, k, &refs));
        let (t_old, want) = time(|| argmax_scalar(&cb, 3, k, &refs));
        assert_eq!(got, want, "the argmax must choose exactly what the scalar path does");
        let vals = k as f64 * d as f64;
        println!(
            "argmax K={k} d={d} B={b:>2}: {:.3} s/token ({:.1} M values/s, {:.2} G mul-add/s); scalar generation: {:.3} s/token; speedup {:.2}x",
            t,
            vals / t / 1e6,
            vals * b as f64 / t / 1e9,
            t_old,
            t_old / t
        );
    }

    // 3. Share of encode time in codebook work, bundled-size network.
    let (den, what): (Box<dyn Denoiser>, String) = match std::env::var_os("GDDCM_BENCH_WEIGHTS") {
        Some(w) => {
            let m = gddcm::zoo::load("fmnist-edm", Some(std::path::Path::new(&w)), &candle_core::Device::Cpu)
                .expect("GDDCM_BENCH_WEIGHTS model");
            (m.denoiser, format!("{} (fmnist-edm)", w.to_string_lossy()))
        }
        None => {
            let cfg = UNet2DConfig::from_json_str(TINY_UNET, "bench").expect("bench config");
            let net = UNet2DModel::new(&cfg, &RandomWeights).expect("bench network");
            let den = PrecondDenoiser { net: Box::new(net), precond: Precond::EDM, marginal: Marginal::Edm };
            (Box::new(den), "test UNet 16-32-32, 1×32×32, random weights".into())
        }
    };
    let shape = (1, 32, 32);
    let n_tok = 20;
    for (kk, b) in [(256u32, 1usize), (4096, 1), (4096, 16)] {
        let s = Settings { k: kk, n: n_tok, ..Settings::default() };
        let cfg = s.to_config(gddcm::family::Family::Edm, den.marginal()).unwrap();
        let x = Tensor::from_vec(
            (0..b as u32).flat_map(cb_small).collect::<Vec<f32>>(),
            (b, shape.0, shape.1, shape.2),
            &Device::Cpu,
        )
        .unwrap();
        let timings = Arc::new(Timings::default());
        let mut tok = Tokenizer::new(den.as_ref(), &cfg, shape);
        tok.timings = Some(timings.clone());
        let t0 = Instant::now();
        tok.encode(&x).unwrap();
        let total = t0.elapsed().as_secs_f64();
        println!(
            "encode {what}, K={kk} N={n_tok} (+{} sampler NFE) B={b:>2}: {:.2} s; network {:.1}%, codebook {:.1}%, rest {:.1}%",
            tok.nfe() - n_tok as usize,
            total,
            100.0 * timings.network_s() / total,
            100.0 * timings.codebook_s() / total,
            100.0 * (total - timings.network_s() - timings.codebook_s()).max(0.0) / total
        );
    }
}

/// A 1×32×32 test image in [−1, 1].
fn cb_small(j: u32) -> Vec<f32> {
    Codebooks::new(11, 1024).entry(6, 0, j).iter().map(|v| (v * 0.5).clamp(-1.0, 1.0)).collect()
}
