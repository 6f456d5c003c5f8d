//! Parameter search (SPEC 8): random configurations from the paper's search space, then
//! refinement one coordinate at a time, with `K` and `N` fixed.
//!
//! The search itself knows nothing about images: it proposes [`Settings`] and asks an
//! objective (lower is better) to score them. `gddcm search` scores with LPIPS on a
//! validation set from the training split, or with an offline stand-in when the LPIPS
//! weights are absent; the tests score with exact analytic denoisers.
//!
//! Sampling is deterministic: a small counter-based PRNG on Philox4x32-10 (the codebook
//! generator of SPEC 5) seeded by [`SearchOptions::seed`], so the same seed proposes the same
//! configurations on every machine.

use std::path::Path;

use anyhow::{bail, ensure, Context, Result};
use candle_core::Device;
use serde::Serialize;

use crate::codec;
use crate::data::{Dataset, Image};
use crate::eval::{measure, EvalOptions, EvalReport, Metric};
use crate::metrics::image::ImageU8;
use crate::metrics::lpips::{Lpips, LpipsNet};
use crate::zoo::LoadedModel;

use crate::codebook::philox4x32_10;
use crate::family::Family;
use crate::marginal::{Marginal, Mixing};
use crate::profile::{InitKind, Settings};
use crate::tokenizer::{Algorithm, Config};

/// The values of `p` tried by the search for Algorithm 1 (SPEC 8).
pub const P_VALUES: [f64; 5] = [0.1, 0.25, 0.5, 0.75, 0.9];

/// A deterministic pseudo-random generator: Philox4x32-10 in counter mode (SPEC 5's
/// generator on its own key), for sampling configurations (SPEC 8).
#[derive(Debug, Clone)]
pub struct SearchRng {
    key: [u32; 2],
    counter: u64,
    buf: [u32; 4],
    used: usize,
}

impl SearchRng {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Self { key: [seed as u32, (seed >> 32) as u32], counter: 0, buf: [0; 4], used: 4 }
    }

    /// The next 32 random bits.
    pub fn next_u32(&mut self) -> u32 {
        if self.used == 4 {
            // Stream word 0x5EA4C400 ("search") keeps these apart from any codebook counter.
            self.buf = philox4x32_10([self.counter as u32, (self.counter >> 32) as u32, 0, 0x5EA4_C400], self.key);
            self.counter += 1;
            self.used = 0;
        }
        self.used += 1;
        self.buf[self.used - 1]
    }

    /// Uniform in `(0, 1)`.
    pub fn uniform(&mut self) -> f64 {
        (self.next_u32() as f64 + 0.5) / 4_294_967_296.0
    }

    /// Uniform in `[lo, hi]`.
    pub fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.uniform()
    }

    /// Log-uniform in `[lo, hi]` (`0 < lo ≤ hi`).
    pub fn log_range(&mut self, lo: f64, hi: f64) -> f64 {
        (lo.ln() + (hi.ln() - lo.ln()) * self.uniform()).exp()
    }

    /// Uniform integer in `[lo, hi]` (inclusive; `lo ≤ hi`).
    pub fn int(&mut self, lo: i64, hi: i64) -> i64 {
        lo + (self.uniform() * (hi - lo + 1) as f64).floor().min((hi - lo) as f64) as i64
    }

    /// One element of a non-empty slice.
    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.int(0, items.len() as i64 - 1) as usize]
    }
}

/// `n` points evenly spaced in log between `lo` and `hi` (the "log grid" of SPEC 8's `T_s`).
pub fn log_grid(lo: f64, hi: f64, n: usize) -> Vec<f64> {
    if n <= 1 {
        return vec![lo];
    }
    (0..n).map(|i| (lo.ln() + (hi.ln() - lo.ln()) * i as f64 / (n - 1) as f64).exp()).collect()
}

/// The search space of one family and algorithm (SPEC 8's table; the ranges are the SPEC's
/// recommendations, the paper gives none).
#[derive(Debug, Clone)]
pub struct SearchSpace {
    /// The model's family (selects the ranges of SPEC 8's table).
    pub family: Family,
    /// Its marginal (SPEC 1): validates configurations and gives the largest time.
    pub marginal: Marginal,
    /// `false`: Algorithm 2 (p = 0); `true`: Algorithm 1 with p from [`SearchSpace::p_values`].
    pub stochastic: bool,
    /// The values of p tried when `stochastic` ([`P_VALUES`], or one fixed value).
    pub p_values: Vec<f64>,
}

impl SearchSpace {
    /// The p = 0 space of a family (SPEC 8, first table).
    pub fn p_zero(family: Family, marginal: Marginal) -> Self {
        Self { family, marginal, stochastic: false, p_values: vec![] }
    }

    /// The 0 < p < 1 space of a family (SPEC 8), p from [`P_VALUES`].
    pub fn stochastic(family: Family, marginal: Marginal) -> Self {
        Self { family, marginal, stochastic: true, p_values: P_VALUES.to_vec() }
    }

    fn discrete(&self) -> bool {
        self.marginal.is_discrete()
    }

    /// The log grid of `T_s` (p = 0): EDM/CM σ 0.05–2, RF τ 0.1–0.95, DDPM t 10–400 (rounded).
    pub fn t_s_grid(&self) -> Vec<f64> {
        match self.family {
            Family::Ddpm => {
                let mut g: Vec<f64> = log_grid(10.0, 400.0, 24).into_iter().map(f64::round).collect();
                g.dedup();
                g
            }
            Family::Edm | Family::Cm => log_grid(0.05, 2.0, 24),
            Family::Rf => log_grid(0.1, 0.95, 24),
        }
    }

    /// The range of `T_r` (p > 0), drawn log-uniformly for the continuous families: EDM/CM
    /// σ 0.2–80, RF τ 1/6–0.999 (σ_RF = τ/(1−τ) from 0.2), DDPM t (N + T_t)–999.
    ///
    /// The low end reaches σ ≈ 0.2: on the bundled models Algorithm 1 started at σ = 1 gave
    /// 43 dB where σ = 80 gave 35 dB (issue 16), because the tokens are spent where the image
    /// is still ambiguous instead of on near-pure noise. DDPM cannot go that low with one token
    /// per integer step: T_r ≥ N + T_t.
    fn t_r_range(&self) -> (f64, f64) {
        let max = self.marginal.max_time();
        match self.family {
            Family::Ddpm => (0.0, max),
            Family::Edm | Family::Cm => (0.2, max),
            Family::Rf => (1.0 / 6.0, max),
        }
    }

    /// The smallest `Δ_min` (fraction of `T_s`) of the continuous families at p = 0: 1e-4, so
    /// the jump that sets Algorithm 2's per-token noise floor can shrink as N grows (at 0.005
    /// the bundled models barely moved from N = 300 to N = 1200, issue 16).
    const DT_MIN_LOW: f64 = 1e-4;

    /// The final sampler's step counts tried at p = 0: `Some(0)` returns `x0h` at `T_s` in one
    /// jump, `None` is the family's default sampler (SPEC 2.7).
    const SAMPLER_STEPS: [Option<u32>; 5] = [None, Some(0), Some(1), Some(3), Some(8)];

    /// Whether the final sampler's steps are searched: p = 0 only, and not for consistency
    /// models, which sample in one step.
    pub fn searches_sampler(&self) -> bool {
        !self.stochastic && self.family != Family::Cm
    }

    /// Whether the mixing mode is searched (SPEC 8: RF and DDPM). Not for EDM and CM, where
    /// `s ≡ 1` and the two coincide (SPEC 2.2), nor for DDPM with p > 0, whose step is eq. 11
    /// (SPEC 2.3) and does not mix.
    pub fn searches_mixing(&self) -> bool {
        match self.family {
            Family::Rf => true,
            Family::Ddpm => !self.stochastic,
            Family::Edm | Family::Cm => false,
        }
    }

    /// A random configuration: `base` with every searched coordinate drawn from the space.
    pub fn sample(&self, base: &Settings, rng: &mut SearchRng) -> Settings {
        let mut s = base.clone();
        s.init = rng.pick(&[InitKind::I1, InitKind::I2, InitKind::I3]);
        if self.searches_mixing() {
            s.mixing = rng.pick(&[Mixing::BigSigma, Mixing::SmallSigma]);
        }
        if !self.stochastic {
            s.p = 0.0;
            let t_s = rng.pick(&self.t_s_grid());
            s.t_start = Some(t_s);
            if self.discrete() {
                let dt_min = rng.int(1, 10).min(t_s as i64);
                s.dt_min = Some(dt_min as f64);
                s.dt_max = None;
                let p_max = 40.min(t_s as i64 - dt_min + 1).max(1);
                s.intervals = rng.int(1, p_max) as u32;
            } else {
                s.dt_max = Some(rng.range(0.3, 0.99));
                s.dt_min = Some(rng.log_range(Self::DT_MIN_LOW, 0.2));
                s.intervals = rng.int(1, 8) as u32;
            }
            s.sigma_max = rng.log_range(1.0, 50.0);
            s.rho = rng.range(0.5, 10.0);
            if self.searches_sampler() {
                s.sampler_steps = rng.pick(&Self::SAMPLER_STEPS);
            }
        } else {
            s.p = rng.pick(&self.p_values);
            let (lo, hi) = self.t_r_range();
            if self.discrete() {
                let t_end = rng.int(0, 20);
                let lo = (s.n as i64 + t_end).min(hi as i64);
                s.t_end = Some(t_end as f64);
                s.t_start = Some(rng.int(lo, hi as i64) as f64);
                s.grid_rho = None;
            } else {
                s.t_start = Some(rng.log_range(lo, hi));
                s.t_end = Some(match self.family {
                    Family::Rf => rng.range(0.0, 0.05),
                    _ => rng.log_range(0.002, 0.05),
                });
                s.grid_rho = Some(match self.family {
                    Family::Rf => rng.range(0.5, 3.0),
                    _ => rng.range(1.0, 10.0),
                });
            }
        }
        s
    }

    /// `s` with every family default made explicit (so coordinates can be stepped from it).
    pub fn resolve(&self, s: &Settings) -> Result<Settings> {
        let cfg = valid_config(s, self.family, &self.marginal)?;
        let mut r = s.clone();
        match cfg.algorithm {
            Algorithm::Stochastic { t_start, t_end, rho, .. } => {
                r.t_start = Some(t_start);
                r.t_end = Some(t_end);
                if !self.discrete() {
                    r.grid_rho = Some(rho);
                }
            }
            Algorithm::Resample { t_start, .. } => {
                r.t_start = Some(t_start);
                // The defaults of `Settings::to_config` (profile.rs).
                if self.discrete() {
                    r.dt_min = Some(s.dt_min.unwrap_or(2.0));
                } else {
                    r.dt_min = Some(s.dt_min.unwrap_or(0.02));
                    r.dt_max = Some(s.dt_max.unwrap_or(0.3));
                }
            }
        }
        Ok(r)
    }

    /// The coordinates refined one at a time (SPEC 8, "refine one coordinate at a time").
    pub fn coordinates(&self) -> Vec<Coordinate> {
        let mut c = vec![Coordinate::TStart];
        if self.stochastic {
            if self.p_values.len() > 1 {
                c.push(Coordinate::P);
            }
            c.push(Coordinate::TEnd);
            if !self.discrete() {
                c.push(Coordinate::GridRho);
            }
        } else {
            c.extend([Coordinate::DtMin, Coordinate::Intervals, Coordinate::SigmaMax, Coordinate::Rho]);
            if !self.discrete() {
                c.push(Coordinate::DtMax);
            }
            if self.searches_sampler() {
                c.push(Coordinate::SamplerSteps);
            }
        }
        c.push(Coordinate::Init);
        if self.searches_mixing() {
            c.push(Coordinate::Mixing);
        }
        c
    }

    /// Neighbours of `s` along one coordinate (a few values; invalid ones are left to the
    /// objective to reject). `s` must be resolved ([`SearchSpace::resolve`]).
    pub fn neighbours(&self, s: &Settings, c: Coordinate) -> Vec<Settings> {
        let with = |f: &dyn Fn(&mut Settings)| {
            let mut n = s.clone();
            f(&mut n);
            n
        };
        let scale = |v: f64, lo: f64, hi: f64| -> Vec<f64> {
            [0.5, 0.75, 1.33, 2.0].iter().map(|m| (v * m).clamp(lo, hi)).filter(|x| *x != v).collect()
        };
        let mut out: Vec<Settings> = match c {
            Coordinate::TStart => {
                let t = s.t_start.unwrap_or(1.0);
                let (lo, hi) = if self.stochastic {
                    let (lo, hi) = self.t_r_range();
                    (lo.max(s.t_end.unwrap_or(0.0) + if self.discrete() { s.n as f64 } else { 0.0 }), hi)
                } else {
                    let g = self.t_s_grid();
                    (g[0], g[g.len() - 1])
                };
                let vals = scale(t, lo, hi);
                vals.into_iter()
                    .map(|v| if self.discrete() { v.round() } else { v })
                    .map(|v| with(&|n| n.t_start = Some(v)))
                    .collect()
            }
            Coordinate::TEnd => {
                let t = s.t_end.unwrap_or(0.0);
                if self.discrete() {
                    [t - 5.0, t - 1.0, t + 1.0, t + 5.0]
                        .into_iter()
                        .filter(|v| *v >= 0.0)
                        .map(|v| with(&|n| n.t_end = Some(v)))
                        .collect()
                } else {
                    let (lo, hi) = if self.family == Family::Rf { (0.0, 0.05) } else { (0.002, 0.05) };
                    let t = if t <= 0.0 { 0.002 } else { t };
                    scale(t, lo, hi).into_iter().map(|v| with(&|n| n.t_end = Some(v))).collect()
                }
            }
            Coordinate::GridRho => {
                let r = s.grid_rho.unwrap_or(1.0);
                scale(r, 0.5, 10.0).into_iter().map(|v| with(&|n| n.grid_rho = Some(v))).collect()
            }
            Coordinate::P => self.p_values.iter().filter(|&&p| p != s.p).map(|&p| with(&|n| n.p = p)).collect(),
            Coordinate::DtMin => {
                let d = s.dt_min.unwrap_or(1.0);
                if self.discrete() {
                    [d - 2.0, d - 1.0, d + 1.0, d + 2.0]
                        .into_iter()
                        .filter(|v| (1.0..=10.0).contains(v))
                        .map(|v| with(&|n| n.dt_min = Some(v)))
                        .collect()
                } else {
                    let hi = s.dt_max.unwrap_or(0.3).min(0.2);
                    scale(d, Self::DT_MIN_LOW, hi).into_iter().map(|v| with(&|n| n.dt_min = Some(v))).collect()
                }
            }
            Coordinate::DtMax => {
                let d = s.dt_max.unwrap_or(0.3);
                [d - 0.2, d - 0.1, d + 0.1, d + 0.2]
                    .into_iter()
                    .filter(|v| (0.3..=0.99).contains(v))
                    .map(|v| with(&|n| n.dt_max = Some(v)))
                    .collect()
            }
            Coordinate::Intervals => {
                let p = s.intervals as i64;
                let max = if self.discrete() {
                    40.min(s.t_start.unwrap_or(1.0) as i64 - s.dt_min.unwrap_or(1.0) as i64 + 1)
                } else {
                    8
                };
                [p - 2, p - 1, p + 1, p + 2, 2 * p]
                    .into_iter()
                    .filter(|&v| v >= 1 && v <= max.max(1) && v != p)
                    .map(|v| with(&|n| n.intervals = v as u32))
                    .collect()
            }
            Coordinate::SigmaMax => {
                scale(s.sigma_max, 1.0, 50.0).into_iter().map(|v| with(&|n| n.sigma_max = v)).collect()
            }
            Coordinate::Rho => scale(s.rho, 0.5, 10.0).into_iter().map(|v| with(&|n| n.rho = v)).collect(),
            Coordinate::Init => [InitKind::I1, InitKind::I2, InitKind::I3]
                .into_iter()
                .filter(|&i| i != s.init)
                .map(|i| with(&|n| n.init = i))
                .collect(),
            Coordinate::SamplerSteps => Self::SAMPLER_STEPS
                .into_iter()
                .filter(|&v| v != s.sampler_steps)
                .map(|v| with(&|n| n.sampler_steps = v))
                .collect(),
            Coordinate::Mixing => [Mixing::BigSigma, Mixing::SmallSigma]
                .into_iter()
                .filter(|&m| m != s.mixing)
                .map(|m| with(&|n| n.mixing = m))
                .collect(),
        };
        out.dedup();
        out.retain(|n| n != s && valid_config(n, self.family, &self.marginal).is_ok());
        out
    }
}

/// One searched parameter (SPEC 8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Coordinate {
    /// `T_s` (p = 0) or `T_r` (p > 0).
    TStart,
    /// `T_t` of Algorithm 1.
    TEnd,
    /// ρ of Algorithm 1's grid.
    GridRho,
    /// p of Algorithm 1.
    P,
    /// `Δ_min` (fraction of `T_s`; DDPM integer steps).
    DtMin,
    /// `Δ_max` (fraction of `T_s`).
    DtMax,
    /// The number of intervals P.
    Intervals,
    /// σ_max of the repeat weights.
    SigmaMax,
    /// ρ of the repeat weights.
    Rho,
    /// The initial point strategy (SPEC 7).
    Init,
    /// Σ-mix or σ-mix (SPEC 2.2).
    Mixing,
    /// Steps of Algorithm 2's final sampler (0: `x0h` at `T_s`).
    SamplerSteps,
}

/// How long the search runs.
#[derive(Debug, Clone)]
pub struct SearchOptions {
    /// Random configurations (SPEC 8: about 200).
    pub trials: usize,
    /// Rounds of coordinate refinement after the random phase (each visits every coordinate).
    pub refine_rounds: usize,
    /// Seed of the configuration sampler.
    pub seed: u64,
}

impl Default for SearchOptions {
    fn default() -> Self {
        Self { trials: 200, refine_rounds: 1, seed: 0x5EA4_C400 }
    }
}

/// Which phase proposed a trial.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// The starting settings (the model's profile or the family defaults), scored first.
    Base,
    /// A random configuration.
    Random,
    /// A neighbour of the best so far along one coordinate.
    Refine,
}

/// One scored configuration.
#[derive(Debug, Clone, Serialize)]
pub struct Trial {
    /// Position in the search, from 0 (the base settings).
    pub index: usize,
    /// Which phase proposed it.
    pub phase: Phase,
    /// The coordinate varied (refinement only).
    pub coordinate: Option<Coordinate>,
    /// The configuration scored (K and N as given, SPEC 8).
    pub settings: Settings,
    /// The objective (lower is better); `None` if the configuration failed.
    pub score: Option<f64>,
    /// Why it failed (an invalid configuration, a non-finite score, …).
    pub error: Option<String>,
}

/// The outcome of a search.
#[derive(Debug, Clone, Serialize)]
pub struct SearchResult {
    /// The best configuration found (a profile, SPEC 8 "the winner becomes the decoder's profile").
    pub best: Settings,
    /// Its objective.
    pub best_score: f64,
    /// The score of the starting settings, if they were valid.
    pub base_score: Option<f64>,
    /// Every trial in order, failed ones included.
    pub trials: Vec<Trial>,
}

/// Random search over `space` then coordinate refinement (SPEC 8), minimising `objective`.
///
/// `base` fixes K, N and the seed (and every coordinate the space does not search); it is
/// scored first, so the result is never worse than it. Each configuration the objective
/// rejects (an `Err`, or a non-finite score) is logged as failed and skipped; `on_trial`
/// sees every trial as it completes (to log or checkpoint). Fails only if no configuration
/// could be scored at all.
pub fn random_then_coordinate<F, L>(
    base: &Settings,
    space: &SearchSpace,
    opts: &SearchOptions,
    objective: F,
    mut on_trial: L,
) -> Result<SearchResult>
where
    F: Fn(&Settings) -> Result<f64>,
    L: FnMut(&Trial, Option<f64>),
{
    ensure!(!space.stochastic || !space.p_values.is_empty(), "the p > 0 search needs at least one value of p");
    ensure!(
        space.p_values.iter().all(|p| *p > 0.0 && *p < 1.0),
        "p values must lie in (0, 1), found {:?}",
        space.p_values
    );
    let mut rng = SearchRng::new(opts.seed);
    let mut trials: Vec<Trial> = Vec::new();
    let mut best: Option<(Settings, f64)> = None;
    let mut eval = |s: Settings, phase: Phase, coordinate: Option<Coordinate>, best: &mut Option<(Settings, f64)>| {
        let (score, error) = match objective(&s) {
            Ok(v) if v.is_finite() => (Some(v), None),
            Ok(v) => (None, Some(format!("non-finite score {v}"))),
            Err(e) => (None, Some(format!("{e:#}"))),
        };
        if let Some(v) = score {
            if best.as_ref().is_none_or(|(_, b)| v < *b) {
                *best = Some((s.clone(), v));
            }
        }
        let t = Trial { index: trials.len(), phase, coordinate, settings: s, score, error };
        on_trial(&t, best.as_ref().map(|b| b.1));
        trials.push(t);
        score
    };
    let mut base = base.clone();
    if !space.stochastic {
        base.p = 0.0;
    } else if base.p <= 0.0 {
        base.p = space.p_values[0];
    }
    let base_score = eval(base.clone(), Phase::Base, None, &mut best);
    for _ in 0..opts.trials {
        let s = space.sample(&base, &mut rng);
        eval(s, Phase::Random, None, &mut best);
    }
    let Some((mut cur, mut cur_score)) = best.clone() else {
        bail!("no configuration could be scored; the first error: {}", trials[0].error.as_deref().unwrap_or("?"))
    };
    for _ in 0..opts.refine_rounds {
        let mut improved = false;
        for c in space.coordinates() {
            let resolved = match space.resolve(&cur) {
                Ok(r) => r,
                Err(_) => cur.clone(),
            };
            for n in space.neighbours(&resolved, c) {
                if let Some(v) = eval(n.clone(), Phase::Refine, Some(c), &mut best) {
                    if v < cur_score {
                        (cur, cur_score, improved) = (n, v, true);
                    }
                }
            }
        }
        if !improved {
            break;
        }
    }
    Ok(SearchResult { best: cur, best_score: cur_score, base_score, trials })
}

/// What `gddcm search` minimises (SPEC 8: LPIPS; offline stand-ins when its weights are
/// absent, reported under their own names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum ObjectiveMetric {
    /// Mean LPIPS (AlexNet, v0.1) of reconstructions vs originals (the paper's objective).
    Lpips,
    /// Stand-in: Frechet distance of the bundled Fashion-MNIST classifier's features.
    ClassifierFd,
    /// Stand-in for "the class is kept": the bundled classifier's mean negative log-likelihood of
    /// each validation image's true label on its reconstruction (labelled data only).
    ClassifierNll,
    /// Stand-in: 1 − mean SSIM.
    OneMinusSsim,
    /// Minus the mean PSNR (uint8, capped at 100 dB per image as `eval` reports it): the
    /// objective of a codec's rate–distortion ladder.
    NegPsnr,
}

impl ObjectiveMetric {
    /// The best objective available: LPIPS if its weights are found, else the classifier
    /// stand-in (1-channel images up to 32 px with the classifier present), else 1 − SSIM.
    /// Returns the choice and a note on what was missing.
    pub fn auto(weights_dir: Option<&Path>, classifier: Option<&Path>, channels: usize, size: usize) -> (Self, String) {
        match Lpips::from_weight_dirs(LpipsNet::Alex, weights_dir) {
            Ok(_) => (Self::Lpips, "LPIPS (AlexNet)".into()),
            Err(e) => {
                let clf = classifier.map(Path::to_path_buf).or_else(crate::eval::default_classifier);
                if channels == 1 && size <= 32 && clf.is_some() {
                    (Self::ClassifierFd, format!("stand-in: classifier Frechet distance (LPIPS unavailable: {e})"))
                } else {
                    (Self::OneMinusSsim, format!("stand-in: 1 − SSIM (LPIPS unavailable: {e}; no classifier stand-in)"))
                }
            }
        }
    }

    /// Refuses, before any work, an objective this validation set or model cannot score: the
    /// classifier objectives need Fashion-MNIST-shaped images and the bundled classifier, the
    /// class likelihood also a label for every image.
    pub fn check(self, data: &Dataset, channels: usize, size: usize) -> Result<()> {
        // Named as the user typed it (`--objective classifier-nll`), not as the Rust variant.
        let name = clap::ValueEnum::to_possible_value(&self).map(|v| v.get_name().to_string()).unwrap_or_default();
        if matches!(self, Self::ClassifierFd | Self::ClassifierNll) {
            ensure!(
                channels == 1 && size <= 32,
                "the objective {name} uses the bundled Fashion-MNIST classifier: it needs 1-channel images up to \
                 32 px, the model makes {channels}-channel {size} px images"
            );
            ensure!(
                crate::eval::default_classifier().is_some(),
                "the objective {name} needs models/classifier/model.safetensors (train it with tools/train/train.py classifier)"
            );
        }
        if self == Self::ClassifierNll {
            let unlabelled = data.labels.iter().filter(|l| l.is_none()).count();
            ensure!(
                unlabelled == 0,
                "the objective {name} needs a label for every validation image; {unlabelled} of {} have none \
                 (labelled data: --data fmnist)",
                data.labels.len()
            );
        }
        Ok(())
    }

    fn metric(self) -> Metric {
        match self {
            Self::Lpips => Metric::Lpips,
            Self::ClassifierFd | Self::ClassifierNll => Metric::Classifier,
            Self::OneMinusSsim | Self::NegPsnr => Metric::Pixel,
        }
    }
}

/// Scores one configuration on a validation set: encode every image (the encoder's own
/// reconstruction is what a decoder on this machine produces, SPEC 5 G4) and measure `metric`
/// against the originals. Lower is better.
pub fn score_images(
    model: &LoadedModel,
    cfg: &Config,
    data: &Dataset,
    metric: ObjectiveMetric,
    opts: &EvalOptions,
    device: &Device,
) -> Result<f64> {
    ensure!(!data.images.is_empty(), "the validation set is empty");
    let mut rec = Vec::with_capacity(data.images.len());
    for chunk in data.images.chunks(opts.batch.max(1)) {
        let refs: Vec<&Image> = chunk.iter().collect();
        rec.extend(codec::encode(model, cfg, &refs, device, None)?.reconstructions);
    }
    let u8s = |imgs: &[Image]| -> Result<Vec<ImageU8>> {
        imgs.iter().map(|i| Ok(ImageU8::from_chw(i.channels, i.height, i.width, i.data.clone())?)).collect()
    };
    let opts = EvalOptions { metrics: vec![metric.metric()], keep: None, ..opts.clone() };
    let mut rep = EvalReport::default();
    measure(&u8s(&data.images)?, &u8s(&rec)?, &data.labels, &opts, &mut rep)?;
    let v = match metric {
        ObjectiveMetric::Lpips => rep.lpips,
        ObjectiveMetric::ClassifierFd => rep.classifier_fd,
        ObjectiveMetric::ClassifierNll => rep.classifier_nll,
        ObjectiveMetric::OneMinusSsim => rep.ssim.map(|s| 1.0 - s),
        ObjectiveMetric::NegPsnr => rep.psnr.map(|p| -p),
    };
    v.with_context(|| format!("the objective {metric:?} could not be computed: {}", rep.skipped.join("; ")))
}

/// The configuration of `s` as far as the search space goes: the reference image only decides
/// the initial point's values, not whether the settings are valid, so a profile with the model's
/// mean `x_ref` is checked as if it had zeros (the model supplies the mean when it runs).
fn valid_config(s: &Settings, family: Family, marginal: &Marginal) -> Result<crate::tokenizer::Config> {
    Settings { x_ref: crate::profile::XRefKind::Zeros, ..s.clone() }.to_config(family, marginal)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::marginal::DdpmSchedule;

    fn spaces() -> Vec<SearchSpace> {
        let mut v = Vec::new();
        for (f, m) in [
            (Family::Ddpm, Marginal::Ddpm(DdpmSchedule::cifar10())),
            (Family::Edm, Marginal::Edm),
            (Family::Cm, Marginal::Edm),
            (Family::Rf, Marginal::RectifiedFlow),
        ] {
            v.push(SearchSpace::p_zero(f, m.clone()));
            v.push(SearchSpace::stochastic(f, m));
        }
        v
    }

    #[test]
    fn sampled_and_refined_settings_are_valid_configurations() {
        for space in spaces() {
            let mut rng = SearchRng::new(3);
            let base = Settings { n: 100, ..Settings::default() };
            for _ in 0..300 {
                let s = space.sample(&base, &mut rng);
                let cfg = s.to_config(space.family, &space.marginal);
                assert!(cfg.is_ok(), "{:?} {s:?}: {:?}", space.family, cfg.err());
                let r = space.resolve(&s).unwrap();
                for c in space.coordinates() {
                    for n in space.neighbours(&r, c) {
                        let cfg = n.to_config(space.family, &space.marginal);
                        assert!(cfg.is_ok(), "{:?} {c:?} {n:?}: {:?}", space.family, cfg.err());
                    }
                }
            }
        }
    }

    #[test]
    fn rng_is_deterministic_and_in_range() {
        let (mut a, mut b) = (SearchRng::new(9), SearchRng::new(9));
        for _ in 0..1000 {
            let (x, y) = (a.uniform(), b.uniform());
            assert_eq!(x.to_bits(), y.to_bits());
            assert!(x > 0.0 && x < 1.0);
            let i = a.int(3, 5);
            assert_eq!(i, b.int(3, 5));
            assert!((3..=5).contains(&i));
        }
        assert_ne!(SearchRng::new(1).next_u32(), SearchRng::new(2).next_u32());
    }
}
