//! The engine end to end with exact analytic denoisers (no network weights): encode/decode
//! agreement for every family and both algorithms, and the paper's qualitative claims in
//! miniature.

use candle_core::{Device, Tensor};
use gddcm::atoms::AtomRule;
use gddcm::family::Family;
use gddcm::marginal::Mixing;
use gddcm::reference::RefImage;
use gddcm::schedule::{continuous_intervals, discrete_intervals};
use gddcm::tokenizer::{default_grid_rho, Algorithm, Config, Init, Reference, Sampler, ScoreRegion, Tokenizer};

mod common;
use common::{denoiser, gmm, targets, SHAPE};

/// A p = 0 configuration with `n` tokens at `t_s` (in the family's time units).
fn resample(family: Family, n: u32, k: u32, t_s: f64, init: Init) -> Config {
    let schedule = if family == Family::Ddpm {
        discrete_intervals(n, 3, 2, 5.0, 2.0)
    } else {
        continuous_intervals(n, 3, 0.02 * t_s, 0.1 * t_s, 5.0, 2.0)
    };
    Config {
        k,
        seed: 11,
        algorithm: Algorithm::Resample { t_start: t_s, schedule },
        mixing: Mixing::BigSigma,
        init,
        sampler: Sampler::default_for(family),
        atoms: AtomRule::Single,
        score_region: ScoreRegion::Input,
    }
}

fn stochastic(family: Family, p: f64, n: u32, k: u32) -> Config {
    let (t_start, t_end) = match family {
        Family::Ddpm => (999.0, 0.0),
        Family::Edm | Family::Cm => (80.0, 0.002),
        Family::Rf => (0.999, 0.0),
    };
    Config {
        k,
        seed: 11,
        algorithm: Algorithm::Stochastic { p, n, t_start, t_end, rho: default_grid_rho(family) },
        mixing: Mixing::BigSigma,
        init: Init::Noise,
        sampler: Sampler::default_for(family),
        atoms: AtomRule::Single,
        score_region: ScoreRegion::Input,
    }
}

fn small_t(family: Family) -> f64 {
    match family {
        Family::Ddpm => 60.0,
        Family::Edm | Family::Cm => 0.2,
        Family::Rf => 0.17,
    }
}

fn mse(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).unwrap().sqr().unwrap().mean_all().unwrap().to_scalar::<f32>().unwrap() as f64
}

#[test]
fn decode_reproduces_the_encoder_bit_for_bit() {
    let g = gmm();
    let x = targets(&g, 3);
    for family in [Family::Ddpm, Family::Edm, Family::Cm, Family::Rf] {
        let den = denoiser(family, &g);
        // A fixed reference image in the input's layout (SPEC 7: the dataset mean's place).
        let (c, h, w) = SHAPE;
        let values = (0..c * h * w).map(|e| ((e * 37) % 11) as f32 / 10.0 - 0.5).collect();
        let image = Reference::Image(RefImage::new(values, [c, h, w], "test").unwrap());
        let inits = [
            Init::Noise,
            Init::Reference(Reference::Zeros),
            Init::ClosestNoise { reference: Reference::Zeros, candidates: 64 },
            Init::Reference(image.clone()),
            Init::ClosestNoise { reference: image, candidates: 64 },
        ];
        let mut configs = vec![stochastic(family, 0.5, 300, 16), stochastic(family, 0.2, 300, 5)];
        configs.extend(inits.iter().map(|init| resample(family, 40, 16, small_t(family), init.clone())));
        // Eq. 14 on the image only (a margin of one element): the decoder needs nothing more.
        let mut masked = resample(family, 40, 16, small_t(family), inits[2].clone());
        masked.score_region = ScoreRegion::Image;
        configs.push(masked);
        for cfg in &configs {
            let mut tok = Tokenizer::new(den.as_ref(), cfg, SHAPE);
            tok.margin = 1;
            let enc = tok.encode(&x).unwrap();
            assert_eq!(
                enc.tokens.indices.iter().map(Vec::len).collect::<Vec<_>>(),
                vec![cfg.algorithm.tokens() as usize; 3]
            );
            assert!(enc.tokens.indices.iter().flatten().all(|&j| j < cfg.k));
            let dec = tok.decode(&enc.tokens, &Device::Cpu).unwrap();
            let (a, b) = (
                enc.reconstruction.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                dec.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            );
            assert!(
                a.iter().zip(&b).all(|(p, q)| p.to_bits() == q.to_bits()),
                "{family} {cfg:?}: decode differs from the encoder"
            );
            let err = mse(&enc.reconstruction, &x);
            assert!(err.is_finite() && err < 0.2, "{family} p={}: mse {err}", cfg.algorithm.p());
        }
    }
}

#[test]
fn several_atoms_per_step_decode_bit_for_bit_in_every_family_and_both_algorithms() {
    // SPEC 2.4a: the decoder rebuilds each step's weighted sum of atoms from the symbols
    // alone, so its output equals the encoder's own reconstruction bit for bit.
    let g = gmm();
    let x = targets(&g, 3);
    let rules = [AtomRule::TopM { m: 3 }, AtomRule::Pursuit { m: 3, bits: 2 }];
    for family in [Family::Ddpm, Family::Edm, Family::Cm, Family::Rf] {
        let den = denoiser(family, &g);
        let base = [
            stochastic(family, 0.5, 40, 16),
            resample(
                family,
                20,
                16,
                small_t(family),
                Init::ClosestNoise { reference: Reference::Zeros, candidates: 8 },
            ),
        ];
        for (cfg, atoms) in base.iter().flat_map(|c| rules.iter().map(move |&a| (c, a))) {
            let cfg = Config { atoms, ..cfg.clone() };
            let tok = Tokenizer::new(den.as_ref(), &cfg, SHAPE);
            let enc = tok.encode(&x).unwrap();
            let per = atoms.symbols_per_step();
            for stream in &enc.tokens.indices {
                assert_eq!(stream.len(), cfg.algorithm.tokens() as usize * per);
                for step in stream.chunks(per) {
                    atoms.check_step(cfg.k, step).unwrap();
                }
            }
            let dec = tok.decode(&enc.tokens, &Device::Cpu).unwrap();
            let (a, b) = (
                enc.reconstruction.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                dec.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            );
            assert!(a.iter().zip(&b).all(|(p, q)| p.to_bits() == q.to_bits()), "{family} {atoms}: decode differs");
            let err = mse(&enc.reconstruction, &x);
            assert!(err.is_finite() && err < 0.2, "{family} {atoms} p={}: mse {err}", cfg.algorithm.p());
        }
    }
}

#[test]
fn several_atoms_reach_a_quality_with_fewer_steps() {
    // Issue 17 item 2, in miniature: at (about) equal bits, two atoms per step over half the
    // steps and four over a quarter reconstruct at least as well as one atom per step, with
    // half and a quarter of the network evaluations. K = 4096 (12 bits per index; top-2 is
    // ⌈log2 C(4096, 2)⌉ + 2 = 25 bits, top-4 48 bits a step), each rule at the better of two T_s.
    // (Measured when written: one atom 0.00987, top-2 0.00726, top-4 0.00907; with K = 16 the
    // sets are too few for this to hold, so the claim is about large codebooks.)
    let g = gmm();
    let x = targets(&g, 8);
    let den = denoiser(Family::Edm, &g);
    let best = |n: u32, atoms: AtomRule| {
        [0.2, 0.4]
            .iter()
            .map(|&t_s| {
                let cfg = Config { atoms, ..resample(Family::Edm, n, 4096, t_s, Init::Noise) };
                mse(&Tokenizer::new(den.as_ref(), &cfg, SHAPE).encode(&x).unwrap().reconstruction, &x)
            })
            .fold(f64::INFINITY, f64::min)
    };
    let one = best(96, AtomRule::Single);
    let two = best(48, AtomRule::TopM { m: 2 });
    let four = best(24, AtomRule::TopM { m: 4 });
    eprintln!("mse: 1 atom × 96 steps {one}, top-2 × 48 {two}, top-4 × 24 {four}");
    assert!(two < one && four < one, "1 atom × 96 {one}, top-2 × 48 {two}, top-4 × 24 {four}");
}

#[test]
fn reconstruction_improves_with_more_tokens_and_larger_codebooks() {
    let g = gmm();
    let x = targets(&g, 8);
    let den = denoiser(Family::Edm, &g);
    let err = |n: u32, k: u32| {
        let cfg = resample(Family::Edm, n, k, 0.4, Init::Noise);
        mse(&Tokenizer::new(den.as_ref(), &cfg, SHAPE).encode(&x).unwrap().reconstruction, &x)
    };
    let by_n: Vec<f64> = [5, 20, 80].iter().map(|&n| err(n, 16)).collect();
    let by_k: Vec<f64> = [2, 16, 256].iter().map(|&k| err(20, k)).collect();
    eprintln!("mse by N (K=16): {by_n:?}; by K (N=20): {by_k:?}");
    assert!(by_n.windows(2).all(|w| w[1] < w[0]), "N: {by_n:?}");
    assert!(by_k.windows(2).all(|w| w[1] < w[0]), "K: {by_k:?}");
}

#[test]
fn p_zero_at_small_t_beats_p_half() {
    // The paper's claim (Table 1), in miniature: same N and K, p = 0 at a small T_s vs p = ½.
    let g = gmm();
    let x = targets(&g, 8);
    for family in [Family::Ddpm, Family::Edm, Family::Rf] {
        let den = denoiser(family, &g);
        let run = |cfg: &Config| mse(&Tokenizer::new(den.as_ref(), cfg, SHAPE).encode(&x).unwrap().reconstruction, &x);
        let p0 = run(&resample(family, 100, 16, small_t(family), Init::Noise));
        let half = run(&stochastic(family, 0.5, 100, 16));
        eprintln!("{family}: p=0 mse {p0:.5}, p=0.5 mse {half:.5}");
        assert!(p0 < half, "{family}: p=0 {p0} vs p=0.5 {half}");
    }
}

#[test]
fn ddcm_preset_counts() {
    let g = gmm();
    let den = denoiser(Family::Ddpm, &g);
    let cfg = Config::ddcm(16, 1);
    let tok = Tokenizer::new(den.as_ref(), &cfg, SHAPE);
    assert_eq!(tok.nfe(), 301);
    assert_eq!(cfg.algorithm.tokens(), 300);
    let edm = denoiser(Family::Edm, &g);
    let heun = resample(Family::Edm, 10, 4, 1.0, Init::Noise);
    // 10 tokens + EDM Heun on 18 points then 0: 17 Heun steps (34 NFE) + 1 Euler step.
    assert_eq!(Tokenizer::new(edm.as_ref(), &heun, SHAPE).nfe(), 10 + 35);
}

#[test]
fn decode_rejects_wrong_token_counts_and_out_of_range_tokens() {
    let g = gmm();
    let den = denoiser(Family::Rf, &g);
    let cfg = resample(Family::Rf, 10, 4, 0.3, Init::Noise);
    let tok = Tokenizer::new(den.as_ref(), &cfg, SHAPE);
    let mut t = gddcm::tokenizer::Tokens { indices: vec![vec![0; 9]], init_index: vec![None] };
    assert!(tok.decode(&t, &Device::Cpu).unwrap_err().to_string().contains("9 tokens"));
    t.indices[0] = vec![4; 10];
    assert!(tok.decode(&t, &Device::Cpu).unwrap_err().to_string().contains("not below K = 4"));
}

/// With two or more threads the encoder generates each step's codebook during the network
/// evaluation and scores the held entries; with one it generates and scores block by block
/// afterwards. Both must choose the same tokens.
#[test]
fn codebooks_generated_beside_the_network_choose_the_same_tokens() {
    let g = gmm();
    let x = targets(&g, 3);
    let pool = |threads| rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
    for family in [Family::Ddpm, Family::Edm] {
        let den = denoiser(family, &g);
        for cfg in [stochastic(family, 0.5, 60, 64), resample(family, 30, 64, small_t(family), Init::Noise)] {
            let tok = Tokenizer::new(den.as_ref(), &cfg, SHAPE);
            let one = pool(1).install(|| tok.encode(&x)).unwrap();
            let two = pool(2).install(|| tok.encode(&x)).unwrap();
            assert_eq!(one.tokens.indices, two.tokens.indices, "{family} p = {}", cfg.algorithm.p());
            assert_eq!(one.tokens.init_index, two.tokens.init_index);
        }
    }
}

/// Eq. 14 on the image only (SPEC 2.4, score region): what the target holds in the margin no
/// longer decides any token, while with the whole input it does.
#[test]
fn score_region_ignores_the_margin_of_the_target() {
    let g = gmm();
    let x = targets(&g, 2);
    let (c, h, w) = SHAPE;
    // The same targets with other values in a margin of 2 elements.
    let inside = |e: usize| (2..h - 2).contains(&((e / w) % h)) && (2..w - 2).contains(&(e % w));
    let flat = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let other: Vec<f32> =
        flat.iter().enumerate().map(|(e, &v)| if inside(e % (c * h * w)) { v } else { 0.9 - v }).collect();
    let y = Tensor::from_vec(other, x.shape(), &Device::Cpu).unwrap();
    let den = denoiser(Family::Edm, &g);
    for region in [ScoreRegion::Image, ScoreRegion::Input] {
        let mut cfg =
            resample(Family::Edm, 30, 16, 0.2, Init::ClosestNoise { reference: Reference::Zeros, candidates: 8 });
        cfg.score_region = region;
        let mut tok = Tokenizer::new(den.as_ref(), &cfg, SHAPE);
        tok.margin = 2;
        let (a, b) = (tok.encode(&x).unwrap().tokens, tok.encode(&y).unwrap().tokens);
        match region {
            ScoreRegion::Image => assert_eq!(a, b, "the margin changed a token"),
            ScoreRegion::Input => assert_ne!(a, b, "the margin never mattered: the test shows nothing"),
        }
    }
}
