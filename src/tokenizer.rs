//! Algorithm 1 (0 < p < 1) and Algorithm 2 (p = 0), the initial points and the final samplers
//! (SPEC 2, 4, 7).
//!
//! Encoding and decoding run the very same loops; they differ only in how each token is
//! obtained (a private `Chooser`): the encoder takes `argmax_j <C_i[j], x_tgt − x0h>` (eq. 14), the
//! decoder reads it from the stream. Both then generate the chosen codewords and step.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use candle_core::{DType, Result, Tensor};
use indicatif::ProgressBar;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::atoms::AtomRule;
use crate::codebook::{Codebook, Codebooks, STREAM_CODEBOOK, STREAM_INIT};
use crate::family::{Denoiser, Family, Prediction};
use crate::marginal::{Marginal, Mixing, StepCoeffs};
use crate::reference::RefImage;
use crate::schedule::{integer_grid, rho_grid, total_repeats, Interval};

/// Which of the paper's two algorithms, with its time parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Algorithm {
    /// Algorithm 1 (SPEC 2.5): `n` steps down the grid `T_r = t_0 > … > t_n = T_t`, each a
    /// p-step (`Δ = h/p`). For DDPM the grid is the integer one and needs `T_r − T_t ≥ n`.
    Stochastic { p: f64, n: u32, t_start: f64, t_end: f64, rho: f64 },
    /// Algorithm 2 (SPEC 2.7): stay at `T_s`, jumping down by `Δ` and re-noising with the
    /// chosen codeword, `r` times per interval of the schedule; then sample normally.
    Resample { t_start: f64, schedule: Vec<Interval> },
}

impl Algorithm {
    /// The number of tokens `N`.
    pub fn tokens(&self) -> u64 {
        match self {
            Algorithm::Stochastic { n, .. } => *n as u64,
            Algorithm::Resample { schedule, .. } => total_repeats(schedule),
        }
    }

    /// The `p` of the step (0 for Algorithm 2).
    pub fn p(&self) -> f64 {
        match self {
            Algorithm::Stochastic { p, .. } => *p,
            Algorithm::Resample { .. } => 0.0,
        }
    }
}

/// The reference image `x_ref` of the I2/I3 initial points (SPEC 7).
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub enum Reference {
    /// All zeros: mid-gray. \[D\]
    #[default]
    Zeros,
    /// A fixed image both sides hold, in the model's value range and input layout: the model's
    /// training-set mean (`x_ref.safetensors`, [`crate::reference`]). Token files name it by
    /// the hash of its values.
    Image(RefImage),
}

/// Which elements of the residual `x_tgt − x0h` eq. 14 scores (SPEC 2.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum ScoreRegion {
    /// The whole network input, as the paper writes eq. 14. \[D\]
    #[default]
    Input,
    /// Only the image: the input less the background margin of a smaller image
    /// ([`Tokenizer::margin`]; the bundled Fashion-MNIST models pad 28×28 to 32×32). The margin
    /// is the same fixed value in every target, so its 240 elements only add `<C[j], −1 − x0h>`
    /// noise to the score of each codeword; the codewords themselves are unchanged.
    Image,
}

/// The initial point of the loop at `T` (SPEC 7). `z` comes from stream 1 of the codebook
/// generator, so the decoder reproduces it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum Init {
    /// I1: `x = λ z`, `λ = √(s(T)²·0.25 + Σ(T)²)` (marginal std with σ_data = 0.5).
    Noise,
    /// I2: `x = s(T) x_ref + Σ(T) z`.
    Reference(Reference),
    /// I3: the best of `candidates` noises by eq. 14 with `x0h := x_ref`; costs `log2 K0` bits.
    ClosestNoise { reference: Reference, candidates: u32 },
}

/// How the final deterministic sampler steps (SPEC 2.7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SamplerKind {
    /// First order: DDIM with η = 0 (= Euler for EDM and rectified flow, Theorem 1).
    Ddim,
    /// Heun's second order correction on every step that does not end at the clean time.
    Heun,
}

/// The final sampler `SAMPLE(x, T_s)` of Algorithm 2: a grid from `T_s` to the clean time.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Sampler {
    pub kind: SamplerKind,
    /// Grid steps before the final jump to the clean time (0: one jump, a consistency model).
    /// For DDPM the integer grid has `min(steps, T_s)` steps.
    pub steps: u32,
    /// Grid spacing exponent (7 for EDM's, 1 for uniform).
    pub rho: f64,
    /// Last grid point before the clean time (EDM: 0.002); ignored by DDPM.
    pub t_end: f64,
}

impl Sampler {
    /// The times visited, from `t_start` to the marginal's clean time.
    pub fn grid(&self, marginal: &Marginal, t_start: f64) -> Vec<f64> {
        let clean = marginal.clean_time();
        let mut grid = if marginal.is_discrete() {
            let ts = t_start as i64;
            let n = (self.steps as i64).min(ts);
            if n > 0 {
                integer_grid(ts, 0, n as usize).into_iter().map(|t| t as f64).collect()
            } else {
                vec![t_start]
            }
        } else if self.steps == 0 || t_start <= self.t_end {
            vec![t_start]
        } else {
            rho_grid(t_start, self.t_end, self.steps as usize, self.rho)
        };
        if *grid.last().unwrap() > clean {
            grid.push(clean);
        }
        grid
    }
}

/// Everything that defines a tokenization, as the token file records it (SPEC 5, G3).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Config {
    /// Codebook size `K`.
    pub k: u32,
    /// Codebook seed.
    pub seed: u64,
    pub algorithm: Algorithm,
    pub mixing: Mixing,
    pub init: Init,
    pub sampler: Sampler,
    /// How each step's noise is built from its codebook (one codeword \[D\], or several:
    /// SPEC 2.4a, [`crate::atoms`]).
    #[serde(default, skip_serializing_if = "AtomRule::is_single")]
    pub atoms: AtomRule,
    /// Which elements eq. 14 scores (encoder only; the decoder reads the choices).
    pub score_region: ScoreRegion,
}

/// The tokens of a batch: per image, its `N` steps' symbols (one index per step, or
/// [`AtomRule::symbols_per_step`] symbols with several atoms) and the I3 initial index if any.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Tokens {
    pub indices: Vec<Vec<u32>>,
    pub init_index: Vec<Option<u32>>,
}

/// The result of encoding a batch.
#[derive(Debug, Clone)]
pub struct Encoded {
    pub tokens: Tokens,
    /// The encoder's own reconstruction: what a decoder on this machine produces.
    pub reconstruction: Tensor,
}

/// How the loop obtains each step's codewords: chosen (encoder) or read (decoder).
trait Chooser: Send {
    /// The symbols of step `i` (one list per image, [`AtomRule::symbols_per_step`] long: the
    /// index for one atom) into codebook `i` of `stream`, which has `k` entries; `x0h` is the
    /// current clean-image prediction (or `x_ref` for the initial point).
    fn choose(&mut self, stream: u32, i: u32, k: u32, atoms: AtomRule, x0h: &Tensor) -> Result<Vec<Vec<u32>>>;

    /// Called while the network evaluates the step whose codebook `i` (of `stream`, `k`
    /// entries) `choose` will take next: a chooser may get it ready meanwhile.
    fn prefetch(&mut self, _stream: u32, _i: u32, _k: u32) {}

    /// Codebook `i` of `stream` with `k` entries, if `prefetch` left it in memory.
    fn held(&self, _stream: u32, _i: u32, _k: u32) -> Option<&Codebook> {
        None
    }
}

/// The largest codebook the encoder holds in memory to generate it during the network
/// evaluation (values; 64 MiB). Larger ones (K = 4096 at 3 × 64 × 64) are generated and
/// scored block by block after it, never held whole.
const MAX_HELD_CODEBOOK: usize = 16 << 20;

struct Encoder<'a> {
    codebooks: Codebooks,
    target: &'a [Vec<f32>],
    tokens: Tokens,
    /// The codebook `prefetch` generated last (the coming `choose`'s, and its codewords').
    held: Option<Codebook>,
    /// Per element of the input, whether eq. 14 scores it ([`ScoreRegion`]); `None`: all.
    mask: Option<Vec<bool>>,
}

impl Chooser for Encoder<'_> {
    fn choose(&mut self, stream: u32, i: u32, k: u32, atoms: AtomRule, x0h: &Tensor) -> Result<Vec<Vec<u32>>> {
        let x0h = x0h.flatten_from(1)?.to_vec2::<f32>()?;
        let mut residuals: Vec<Vec<f32>> =
            self.target.iter().zip(&x0h).map(|(t, p)| t.iter().zip(p).map(|(a, b)| a - b).collect()).collect();
        if let Some(mask) = &self.mask {
            // The residual times the region's mask: elements outside add nothing to any score.
            for r in &mut residuals {
                r.iter_mut().zip(mask).filter(|(_, &m)| !m).for_each(|(v, _)| *v = 0.0);
            }
        }
        let refs: Vec<&[f32]> = residuals.iter().map(|r| r.as_slice()).collect();
        let held = self.held(stream, i, k);
        let chosen: Vec<Vec<u32>> = match atoms {
            // eq. 14, on the fast running-argmax path.
            AtomRule::Single => match held {
                Some(cb) => cb.argmax(&refs),
                None => self.codebooks.argmax(stream, i, k, &refs),
            }
            .into_iter()
            .map(|j| vec![j])
            .collect(),
            // SPEC 2.4a: every entry's score, then the rule's choice (the pursuit rescoring
            // its own residuals).
            rule => {
                let cbs = self.codebooks;
                let score = |r: &[&[f32]]| match held {
                    Some(cb) => cb.scores(r),
                    None => cbs.scores(stream, i, k, r),
                };
                let entry = |j: u32| match held {
                    Some(cb) => cb.entry(j).to_vec(),
                    None => cbs.entry(stream, i, j),
                };
                // The pursuit's own residuals keep the score region too.
                let mask = self.mask.as_deref();
                let rescore = |x: &[f32]| match mask {
                    Some(m) => {
                        let x: Vec<f32> = x.iter().zip(m).map(|(&v, &keep)| if keep { v } else { 0.0 }).collect();
                        score(&[&x]).swap_remove(0)
                    }
                    None => score(&[x]).swap_remove(0),
                };
                let scores = score(&refs);
                residuals.iter().zip(&scores).map(|(r, s)| rule.choose(s, r, rescore, entry)).collect()
            }
        };
        for (b, sym) in chosen.iter().enumerate() {
            if stream == STREAM_INIT {
                self.tokens.init_index[b] = Some(sym[0]);
            } else {
                self.tokens.indices[b].extend_from_slice(sym);
            }
        }
        Ok(chosen)
    }

    fn prefetch(&mut self, stream: u32, i: u32, k: u32) {
        if k as usize * self.codebooks.dim <= MAX_HELD_CODEBOOK {
            self.held = Some(self.codebooks.generate(stream, i, k));
        }
    }

    fn held(&self, stream: u32, i: u32, k: u32) -> Option<&Codebook> {
        self.held.as_ref().filter(|cb| (cb.stream, cb.i, cb.k) == (stream, i, k))
    }
}

struct Decoder<'a> {
    tokens: &'a Tokens,
}

impl Chooser for Decoder<'_> {
    fn choose(&mut self, stream: u32, i: u32, k: u32, atoms: AtomRule, _x0h: &Tensor) -> Result<Vec<Vec<u32>>> {
        let per = atoms.symbols_per_step();
        let get = |b: usize| -> Result<Vec<u32>> {
            let sym: Option<Vec<u32>> = if stream == STREAM_INIT {
                self.tokens.init_index.get(b).copied().flatten().map(|j| vec![j])
            } else {
                let at = i as usize * per;
                self.tokens.indices.get(b).and_then(|t| t.get(at..at + per)).map(<[u32]>::to_vec)
            };
            match sym {
                Some(sym) if sym.len() == 1 && sym[0] >= k => {
                    candle_core::bail!("token {i} of image {b} is {}, not below K = {k}", sym[0])
                }
                Some(sym) => match atoms.check_step(k, &sym) {
                    Ok(()) => Ok(sym),
                    Err(why) => candle_core::bail!("token {i} of image {b}: {why}"),
                },
                None => candle_core::bail!("image {b} has no token {i} (stream {stream})"),
            }
        };
        (0..self.tokens.indices.len()).map(get).collect()
    }
}

/// Where a tokenizer's time goes (issue 6, `gddcm bench`): nanoseconds in network
/// evaluations and in codebook work (SPEC 5: residuals, generating and scoring the `K`
/// entries, generating the chosen ones), summed over calls. Shared and atomic, so one
/// `Timings` can collect several runs.
#[derive(Debug, Default)]
pub struct Timings {
    /// Time inside `Denoiser::predict` (the NFEs).
    pub network_ns: AtomicU64,
    /// Time choosing and generating codewords (and the I3 initial point's), and the part of
    /// the encoder's generation of a step's codebook that outlasted the network evaluation it
    /// ran beside (`Tokenizer::predict_and_prefetch`).
    pub codebook_ns: AtomicU64,
    /// Network evaluations.
    pub nfe: AtomicU64,
}

impl Timings {
    /// Seconds in the network.
    pub fn network_s(&self) -> f64 {
        self.network_ns.load(Ordering::Relaxed) as f64 * 1e-9
    }

    /// Seconds in codebook work.
    pub fn codebook_s(&self) -> f64 {
        self.codebook_ns.load(Ordering::Relaxed) as f64 * 1e-9
    }

    /// Clears the counters.
    pub fn reset(&self) {
        self.network_ns.store(0, Ordering::Relaxed);
        self.codebook_ns.store(0, Ordering::Relaxed);
        self.nfe.store(0, Ordering::Relaxed);
    }

    fn add(counter: &AtomicU64, since: Instant) {
        counter.fetch_add(since.elapsed().as_nanos() as u64, Ordering::Relaxed);
    }
}

/// A tokenizer: a denoiser, a configuration and the image shape `[C, H, W]`.
pub struct Tokenizer<'a> {
    pub denoiser: &'a dyn Denoiser,
    pub config: &'a Config,
    pub shape: (usize, usize, usize),
    /// Ticks once per network evaluation, if given.
    pub progress: Option<ProgressBar>,
    /// Collects where the time goes, if given (costs two clock reads per step).
    pub timings: Option<Arc<Timings>>,
    /// Background pixels on each side of the image in the input (a 28×28 image in a 32×32
    /// input: 2): what [`ScoreRegion::Image`] leaves out of eq. 14.
    pub margin: usize,
}

impl<'a> Tokenizer<'a> {
    pub fn new(denoiser: &'a dyn Denoiser, config: &'a Config, shape: (usize, usize, usize)) -> Self {
        Self { denoiser, config, shape, progress: None, timings: None, margin: 0 }
    }

    /// Runs `f`, adding its duration to the codebook counter if timings are on.
    fn codebook_work<T>(&self, f: impl FnOnce() -> Result<T>) -> Result<T> {
        let t0 = Instant::now();
        let r = f();
        if let Some(t) = &self.timings {
            Timings::add(&t.codebook_ns, t0);
        }
        r
    }

    fn dim(&self) -> usize {
        self.shape.0 * self.shape.1 * self.shape.2
    }

    fn codebooks(&self) -> Codebooks {
        Codebooks::new(self.config.seed, self.dim())
    }

    /// Network evaluations per image: the tokens plus the final sampler's.
    pub fn nfe(&self) -> usize {
        let m = self.denoiser.marginal();
        match &self.config.algorithm {
            Algorithm::Stochastic { n, .. } => *n as usize + 1,
            Algorithm::Resample { t_start, schedule } => {
                let grid = self.config.sampler.grid(m, *t_start);
                let heun = self.config.sampler.kind == SamplerKind::Heun;
                let steps = grid.len() - 1;
                let heun_extra = if heun { grid[1..].iter().filter(|&&t| t > m.clean_time()).count() } else { 0 };
                total_repeats(schedule) as usize + steps + heun_extra
            }
        }
    }

    /// Tokenizes a batch `x_tgt` of shape `[B, C, H, W]` in the model's value range.
    pub fn encode(&self, x_tgt: &Tensor) -> Result<Encoded> {
        let b = x_tgt.dim(0)?;
        let target = x_tgt.flatten_from(1)?.to_dtype(DType::F32)?.to_vec2::<f32>()?;
        let mut enc = Encoder {
            codebooks: self.codebooks(),
            target: &target,
            tokens: Tokens { indices: vec![Vec::new(); b], init_index: vec![None; b] },
            held: None,
            mask: self.score_mask()?,
        };
        let reconstruction = self.run(&mut enc, b, x_tgt.device())?;
        Ok(Encoded { tokens: enc.tokens, reconstruction })
    }

    /// The elements eq. 14 scores under the configuration's [`ScoreRegion`], or `None` for all.
    fn score_mask(&self) -> Result<Option<Vec<bool>>> {
        let (c, h, w) = self.shape;
        let m = self.margin;
        if self.config.score_region == ScoreRegion::Input || m == 0 {
            return Ok(None);
        }
        if 2 * m >= h || 2 * m >= w {
            candle_core::bail!("a margin of {m} leaves no image inside the {h}×{w} input");
        }
        let inside = |y: usize, x: usize| (m..h - m).contains(&y) && (m..w - m).contains(&x);
        Ok(Some((0..c * h * w).map(|e| inside((e / w) % h, e % w)).collect()))
    }

    /// Rebuilds the images of a batch of token streams.
    pub fn decode(&self, tokens: &Tokens, device: &candle_core::Device) -> Result<Tensor> {
        let n = self.config.algorithm.tokens() as usize * self.config.atoms.symbols_per_step();
        if let Some((b, t)) = tokens.indices.iter().enumerate().find(|(_, t)| t.len() != n) {
            let what = if self.config.atoms == AtomRule::Single { "tokens" } else { "token symbols" };
            candle_core::bail!("image {b} has {} {what}, the configuration needs {n}", t.len());
        }
        self.run(&mut Decoder { tokens }, tokens.indices.len(), device)
    }

    fn run(&self, chooser: &mut dyn Chooser, batch: usize, device: &candle_core::Device) -> Result<Tensor> {
        match &self.config.algorithm {
            Algorithm::Stochastic { p, n, t_start, t_end, rho } => {
                let grid = self.alg1_grid(*n, *t_start, *t_end, *rho)?;
                self.algorithm1(chooser, *p, &grid, batch, device)
            }
            Algorithm::Resample { t_start, schedule } => self.algorithm2(chooser, *t_start, schedule, batch, device),
        }
    }

    fn alg1_grid(&self, n: u32, t_start: f64, t_end: f64, rho: f64) -> Result<Vec<f64>> {
        let m = self.denoiser.marginal();
        if n == 0 {
            candle_core::bail!("Algorithm 1 needs at least one token");
        }
        if m.is_discrete() {
            let (a, b) = (t_start as i64, t_end as i64);
            if a - b < n as i64 {
                candle_core::bail!("the DDPM grid {a} → {b} has fewer than N = {n} integer steps");
            }
            Ok(integer_grid(a, b, n as usize).into_iter().map(|t| t as f64).collect())
        } else {
            Ok(rho_grid(t_start, t_end, n as usize, rho))
        }
    }

    /// Algorithm 1 (SPEC 2.5).
    fn algorithm1(
        &self,
        ch: &mut dyn Chooser,
        p: f64,
        grid: &[f64],
        batch: usize,
        dev: &candle_core::Device,
    ) -> Result<Tensor> {
        let m = self.denoiser.marginal();
        let mut x = self.initial_point(ch, grid[0], batch, dev)?;
        for (i, w) in grid.windows(2).enumerate() {
            let (t, t_next) = (w[0], w[1]);
            let pred = self.predict_and_prefetch(&x, t, ch, i as u32)?;
            let c = self.codewords(ch, i as u32, &pred.x0)?;
            let h = t - t_next;
            x = apply(m.step(t, t_next, t - h / p, p, self.config.mixing), &pred.x0, &pred.eps, Some(&c))?;
        }
        // [D] return x0h of the last state (SPEC 2.5): one deterministic jump to the clean time.
        let t_last = *grid.last().unwrap();
        let pred = self.predict(&x, t_last)?;
        apply(m.ode_step(m.clean_time()), &pred.x0, &pred.eps, None)
    }

    /// Algorithm 2 (SPEC 2.7): select first, then step; then the final sampler.
    fn algorithm2(
        &self,
        ch: &mut dyn Chooser,
        t: f64,
        schedule: &[Interval],
        batch: usize,
        dev: &candle_core::Device,
    ) -> Result<Tensor> {
        let m = self.denoiser.marginal();
        let mut x = self.initial_point(ch, t, batch, dev)?;
        let mut i = 0u32;
        for interval in schedule {
            for _ in 0..interval.repeats {
                let pred = self.predict_and_prefetch(&x, t, ch, i)?;
                let c = self.codewords(ch, i, &pred.x0)?;
                x = apply(m.step(t, t, t - interval.delta, 0.0, self.config.mixing), &pred.x0, &pred.eps, Some(&c))?;
                i += 1;
            }
        }
        self.sample(x, t)
    }

    /// The final deterministic sampler from `t_start` to the clean time (SPEC 2.7).
    pub fn sample(&self, mut x: Tensor, t_start: f64) -> Result<Tensor> {
        let m = self.denoiser.marginal();
        let sampler = &self.config.sampler;
        for w in sampler.grid(m, t_start).windows(2) {
            let (t, t_next) = (w[0], w[1]);
            let pred = self.predict(&x, t)?;
            let euler = apply(m.ode_step(t_next), &pred.x0, &pred.eps, None)?;
            x = if sampler.kind == SamplerKind::Heun && t_next > m.clean_time() {
                // Heun: average the noise predictions at both ends, keeping x fixed at t.
                let second = self.predict(&euler, t_next)?;
                let eps = ((&pred.eps + &second.eps)? * 0.5)?;
                let x0 = ((&x - (&eps * m.big_sigma(t))?)? / m.s(t))?;
                apply(m.ode_step(t_next), &x0, &eps, None)?
            } else {
                euler
            };
        }
        Ok(x)
    }

    fn predict(&self, x: &Tensor, t: f64) -> Result<Prediction> {
        let t0 = Instant::now();
        let pred = self.denoiser.predict(x, t)?;
        if let Some(tm) = &self.timings {
            // A GPU runs the network asynchronously: wait for it, or its time would be counted
            // where the codebook step first reads the prediction back.
            x.device().synchronize()?;
            Timings::add(&tm.network_ns, t0);
            tm.nfe.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(pb) = &self.progress {
            pb.inc(1);
        }
        Ok(pred)
    }

    /// [`Self::predict`], while the chooser gets codebook `i` ready on the other threads: a
    /// codebook is a function of the seed and `i` alone (SPEC 5), so generating it need not
    /// wait for the prediction it is scored against, and on the CPU it fills the cores the
    /// network leaves idle (on a GPU, the host's). With one thread it is left to `choose`.
    fn predict_and_prefetch(&self, x: &Tensor, t: f64, ch: &mut dyn Chooser, i: u32) -> Result<Prediction> {
        if rayon::current_num_threads() < 2 {
            return self.predict(x, t);
        }
        let k = self.config.k;
        let ((pred, network_end), prefetch_end) = rayon::join(
            || (self.predict(x, t), Instant::now()),
            || {
                ch.prefetch(STREAM_CODEBOOK, i, k);
                Instant::now()
            },
        );
        if let Some(tm) = &self.timings {
            // Only the generation's time beyond the network's costs anything: codebook time.
            let beyond = prefetch_end.saturating_duration_since(network_end);
            tm.codebook_ns.fetch_add(beyond.as_nanos() as u64, Ordering::Relaxed);
        }
        pred
    }

    /// Chooses (or reads) the symbols of token `i` and builds each image's noise from them:
    /// its codeword, or with several atoms their weighted sum (SPEC 2.4a).
    fn codewords(&self, ch: &mut dyn Chooser, i: u32, x0h: &Tensor) -> Result<Tensor> {
        self.codebook_work(|| {
            let (k, atoms) = (self.config.k, self.config.atoms);
            let symbols = ch.choose(STREAM_CODEBOOK, i, k, atoms, x0h)?;
            let held = ch.held(STREAM_CODEBOOK, i, k);
            if atoms != AtomRule::Single {
                let (cbs, d) = (self.codebooks(), self.dim());
                let entry = |j: u32| match held {
                    Some(cb) => cb.entry(j).to_vec(),
                    None => cbs.entry(STREAM_CODEBOOK, i, j),
                };
                let mut data = vec![0.0f32; symbols.len() * d];
                data.par_chunks_mut(d).zip(&symbols).for_each(|(out, sym)| atoms.noise_into(sym, entry, out));
                let (c, h, w) = self.shape;
                return Tensor::from_vec(data, (symbols.len(), c, h, w), x0h.device());
            }
            let idx: Vec<u32> = symbols.iter().map(|s| s[0]).collect();
            match held {
                // The chosen entries were generated with the whole codebook: copy, not again.
                Some(cb) => {
                    let data: Vec<f32> = idx.iter().flat_map(|&j| cb.entry(j).iter().copied()).collect();
                    let (c, h, w) = self.shape;
                    Tensor::from_vec(data, (idx.len(), c, h, w), x0h.device())
                }
                None => self.entries(STREAM_CODEBOOK, i, &idx, x0h.device()),
            }
        })
    }

    fn entries(&self, stream: u32, i: u32, idx: &[u32], dev: &candle_core::Device) -> Result<Tensor> {
        let cb = self.codebooks();
        let d = self.dim();
        let mut data = vec![0.0f32; idx.len() * d];
        // Each distinct entry is generated once (with K below the batch size, or the I1/I2
        // noise, images share entries), in parallel; the values are the same either way.
        let mut uniq = idx.to_vec();
        uniq.sort_unstable();
        uniq.dedup();
        if uniq.len() < idx.len() {
            let mut gen = vec![0.0f32; uniq.len() * d];
            gen.par_chunks_mut(d).zip(&uniq).for_each(|(chunk, &j)| cb.entry_into(stream, i, j, chunk));
            for (chunk, j) in data.chunks_mut(d).zip(idx) {
                let u = uniq.binary_search(j).expect("index among the distinct ones");
                chunk.copy_from_slice(&gen[u * d..(u + 1) * d]);
            }
        } else {
            data.par_chunks_mut(d).zip(idx).for_each(|(chunk, &j)| cb.entry_into(stream, i, j, chunk));
        }
        let (c, h, w) = self.shape;
        Tensor::from_vec(data, (idx.len(), c, h, w), dev)
    }

    /// The initial point at `t` (SPEC 7).
    fn initial_point(&self, ch: &mut dyn Chooser, t: f64, batch: usize, dev: &candle_core::Device) -> Result<Tensor> {
        let m = self.denoiser.marginal();
        let (s, sig) = (m.s(t), m.big_sigma(t));
        let (c, h, w) = self.shape;
        let x_ref = |r: &Reference| -> Result<Tensor> {
            match r {
                Reference::Zeros => Tensor::zeros((batch, c, h, w), DType::F32, dev),
                Reference::Image(img) => {
                    if img.shape != [c, h, w] {
                        candle_core::bail!(
                            "the reference image {} is {:?}; the model's input is [{c}, {h}, {w}]",
                            img.sha256_hex(),
                            img.shape
                        );
                    }
                    Tensor::from_slice(&img.values, (1, c, h, w), dev)?.repeat((batch, 1, 1, 1))
                }
            }
        };
        self.codebook_work(|| match &self.config.init {
            Init::Noise => {
                let z = self.entries(STREAM_INIT, 0, &vec![0; batch], dev)?;
                z * (s * s * 0.25 + sig * sig).sqrt()
            }
            Init::Reference(r) => {
                let z = self.entries(STREAM_INIT, 0, &vec![0; batch], dev)?;
                (x_ref(r)? * s)? + (z * sig)?
            }
            Init::ClosestNoise { reference, candidates } => {
                let x_ref = x_ref(reference)?;
                let idx: Vec<u32> =
                    ch.choose(STREAM_INIT, 0, *candidates, AtomRule::Single, &x_ref)?.iter().map(|s| s[0]).collect();
                let z = self.entries(STREAM_INIT, 0, &idx, dev)?;
                (x_ref * s)? + (z * sig)?
            }
        })
    }
}

/// `x_new = s_new·x0h + eps_coef·epsh + noise_std·c`.
fn apply(k: StepCoeffs, x0: &Tensor, eps: &Tensor, c: Option<&Tensor>) -> Result<Tensor> {
    let mut x = ((x0 * k.s_new)? + (eps * k.eps_coef)?)?;
    if let Some(c) = c {
        if k.noise_std > 0.0 {
            x = (x + (c * k.noise_std)?)?;
        }
    }
    Ok(x)
}

impl Sampler {
    /// The family's default final sampler (SPEC 2.7 table): DDIM-50 for DDPM, Heun on EDM's
    /// 18-point ρ = 7 grid, one step for consistency models, 10 Euler steps for rectified flow.
    pub fn default_for(family: Family) -> Self {
        match family {
            Family::Ddpm => Sampler { kind: SamplerKind::Ddim, steps: 50, rho: 1.0, t_end: 0.0 },
            Family::Edm => Sampler { kind: SamplerKind::Heun, steps: 17, rho: 7.0, t_end: 0.002 },
            Family::Cm => Sampler { kind: SamplerKind::Ddim, steps: 0, rho: 1.0, t_end: 0.0 },
            Family::Rf => Sampler { kind: SamplerKind::Ddim, steps: 10, rho: 1.0, t_end: 0.0 },
        }
    }
}

/// The spacing exponent of Algorithm 1's grid (SPEC 2.5): ρ = 7 for EDM and CM, uniform for
/// rectified flow (DDPM uses its integer grid).
pub fn default_grid_rho(family: Family) -> f64 {
    match family {
        Family::Edm | Family::Cm => 7.0,
        Family::Ddpm | Family::Rf => 1.0,
    }
}

impl Config {
    /// The DDCM baseline (SPEC 4): DDPM, p = ½, N = 300 tokens on the grid 999 → 0, start from
    /// seeded noise, output `x0h` at t = 0.
    pub fn ddcm(k: u32, seed: u64) -> Self {
        Config {
            k,
            seed,
            algorithm: Algorithm::Stochastic { p: 0.5, n: 300, t_start: 999.0, t_end: 0.0, rho: 1.0 },
            mixing: Mixing::BigSigma,
            init: Init::Noise,
            sampler: Sampler::default_for(Family::Ddpm),
            atoms: AtomRule::Single,
            score_region: ScoreRegion::Input,
        }
    }
}
