//! What a decoder checks before it runs a token file's procedure: that the model the file names
//! can run it, and that the work it asks for is bounded.
//!
//! The format layer ([`crate::format`]) only checks that each field is inside the range the
//! format allows; a file can still be well-formed and ask for something no model can do
//! (`T_s = 1e300`), something the named model does not do (another family, parameterisation,
//! schedule, value range, channel count or size), or an amount of work that takes hours
//! (`N = 2^20`, 65 536 schedule intervals or sampler steps). [`check`] refuses all of these
//! against a [`ModelDescription`]: what a model is, known without loading its weights (its zoo
//! entry, family, marginal and image shape). It runs before any network call.
//!
//! The work bound is the number of network evaluations per image ([`nfe`]), at most
//! [`DEFAULT_MAX_NFE`] unless the caller passes another limit (`gddcm decode --max-nfe`).
//!
//! This module depends on nothing but [`crate::format`], so the fuzz target compiles it by
//! `#[path]` without candle (see `fuzz/README.md`).

use serde::Serialize;

use crate::format::{
    Algorithm, ComputeDtype, Family, InitStrategy, MarginalSchedule, Parameterization, SamplerKind, TokenFile, XRef,
};
use crate::schedule::{integer_grid, rho_grid};

/// The default bound on network evaluations per image a decoder accepts from a file: above
/// every setting this project uses (N ≤ 1000 tokens plus a final sampler of at most a few dozen
/// steps), far below what a hostile file may ask for (`N = 2^20`). Override it with
/// `gddcm decode --max-nfe`.
pub const DEFAULT_MAX_NFE: u64 = 4096;

/// The time axis of a model's marginal (SPEC 1): a procedure may only visit times in
/// `(clean, max]`, and jump down to `clean` at most.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct TimeDomain {
    /// The clean end of the axis (−1 for DDPM, 0 otherwise).
    pub clean: f64,
    /// The largest time the network accepts.
    pub max: f64,
    /// Whether times are integers (DDPM).
    pub discrete: bool,
    /// The last grid point of the final sampler before the clean time (SPEC 2.7; EDM 0.002).
    pub sampler_t_end: f64,
}

impl TimeDomain {
    /// The domain of a family on its marginal, as [`crate::zoo`] builds the models.
    pub fn of(schedule: MarginalSchedule, family: Family) -> Self {
        let sampler_t_end = if family == Family::Edm { 0.002 } else { 0.0 };
        match schedule {
            MarginalSchedule::DdpmLinear { t } => {
                TimeDomain { clean: -1.0, max: f64::from(t) - 1.0, discrete: true, sampler_t_end }
            }
            MarginalSchedule::EdmSigma => TimeDomain { clean: 0.0, max: 80.0, discrete: false, sampler_t_end },
            MarginalSchedule::EdmVp => TimeDomain { clean: 0.0, max: 1.0, discrete: false, sampler_t_end },
            MarginalSchedule::RfTau => TimeDomain { clean: 0.0, max: 0.999, discrete: false, sampler_t_end },
        }
    }
}

/// What a model is, as far as a token file is concerned, without its weights.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelDescription {
    /// The model's name (from the zoo, so trusted).
    pub name: String,
    pub family: Family,
    pub parameterization: Parameterization,
    pub schedule: MarginalSchedule,
    /// Image channels.
    pub channels: u8,
    /// The network's square input size; smaller images are padded by an even margin.
    pub size: u32,
    /// The pixel values of u8 0 and 255.
    pub lo: f32,
    pub hi: f32,
    /// Whether the model's procedure clips `x0h` (DDPM ε-prediction).
    pub clip_x0: bool,
    /// Where its times live.
    pub domain: TimeDomain,
    /// The SHA-256 of each reference image `x_ref` the model provides (SPEC 7; the bundled
    /// models ship their training-set mean): a file naming another is refused. Empty unless
    /// filled by [`ModelDescription::with_references`], since finding them needs the files.
    #[serde(skip)]
    pub x_refs: Vec<[u8; 32]>,
    /// Where the reference images were looked for, for the refusal.
    #[serde(skip)]
    pub x_ref_places: String,
}

impl ModelDescription {
    /// A model of `family` with `parameterization` on `schedule`, for `channels × size²` images
    /// in `[-1, 1]`.
    pub fn new(
        name: &str,
        family: Family,
        parameterization: Parameterization,
        schedule: MarginalSchedule,
        channels: u8,
        size: u32,
    ) -> Self {
        ModelDescription {
            name: name.to_owned(),
            family,
            parameterization,
            schedule,
            channels,
            size,
            lo: -1.0,
            hi: 1.0,
            clip_x0: parameterization == Parameterization::Eps,
            domain: TimeDomain::of(schedule, family),
            x_refs: Vec::new(),
            x_ref_places: "(not looked up)".to_string(),
        }
    }

    /// This description with the reference images the model provides (their hashes) and where
    /// they were looked for.
    pub fn with_references(mut self, x_refs: Vec<[u8; 32]>, places: impl Into<String>) -> Self {
        self.x_refs = x_refs;
        self.x_ref_places = places.into();
        self
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The descriptions of every model of [`crate::zoo::entries`], in its order, written out here so
/// that code without candle (the fuzz target) has them; a test in `zoo` checks they agree.
pub fn known_descriptions() -> Vec<ModelDescription> {
    use MarginalSchedule::{DdpmLinear, EdmSigma, RfTau};
    use Parameterization::{Consistency, EdmPrecond, Eps, VePrecond, Velocity, VpPrecond};
    let ddpm = DdpmLinear { t: 1000 };
    vec![
        ModelDescription::new("fmnist-edm", Family::Edm, EdmPrecond, EdmSigma, 1, 32),
        ModelDescription::new("fmnist-ddpm", Family::Ddpm, Eps, ddpm, 1, 32),
        ModelDescription::new("fmnist-cm", Family::Cm, Consistency, EdmSigma, 1, 32),
        ModelDescription::new("fmnist-rf", Family::Rf, Velocity, RfTau, 1, 32),
        ModelDescription::new("ddpm-cifar10", Family::Ddpm, Eps, ddpm, 3, 32),
        ModelDescription::new("edm-cifar10-vp", Family::Edm, VpPrecond, EdmSigma, 3, 32),
        ModelDescription::new("edm-cifar10-ve", Family::Edm, VePrecond, EdmSigma, 3, 32),
        ModelDescription::new("cm-cifar10-cd", Family::Cm, Consistency, EdmSigma, 3, 32),
        ModelDescription::new("rf-cifar10", Family::Rf, Velocity, RfTau, 3, 32),
        ModelDescription::new("ddpm-bedroom-256", Family::Ddpm, Eps, ddpm, 3, 256),
        ModelDescription::new("cm-bedroom-256-lpips", Family::Cm, Consistency, EdmSigma, 3, 256),
    ]
}

/// Why a decoder refuses a token file.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("cannot decode with model '{model}': {field}: {reason}")]
pub struct Refusal {
    /// The model the file was checked against.
    pub model: String,
    /// The header field (as `inspect --json` names it).
    pub field: &'static str,
    /// What is wrong with it.
    pub reason: String,
}

/// Network evaluations per image that the file's procedure takes on a model with `domain`:
/// one per token, one for Algorithm 1's final jump, and the final sampler's of Algorithm 2
/// (Heun: two per step that does not end at the clean time). Mirrors
/// [`crate::tokenizer::Tokenizer::nfe`] without a network. Expects times inside the domain.
pub fn nfe(file: &TokenFile, domain: &TimeDomain) -> u64 {
    let pr = &file.procedure;
    match &pr.algorithm {
        Algorithm::Alg1 { .. } => u64::from(pr.n) + 1,
        Algorithm::Alg2 { t_s, schedule } => {
            let tokens: u64 = schedule.iter().map(|e| u64::from(e.repeats)).sum();
            let grid = sampler_grid(file, domain, *t_s);
            let heun = if pr.sampler.kind == SamplerKind::Heun {
                grid[1..].iter().filter(|&&t| t > domain.clean).count() as u64
            } else {
                0
            };
            tokens + (grid.len() as u64 - 1) + heun
        }
    }
}

/// The times the final sampler visits from `t_s` (as `crate::tokenizer::Sampler::grid`; a
/// one-step sampler has no steps). At most `2^16 + 2` points: the format bounds the steps.
fn sampler_grid(file: &TokenFile, d: &TimeDomain, t_s: f64) -> Vec<f64> {
    let s = &file.procedure.sampler;
    let steps = if s.kind == SamplerKind::OneStep { 0 } else { s.steps };
    let mut grid = if d.discrete {
        let ts = t_s as i64;
        let n = i64::from(steps).min(ts);
        if n > 0 {
            integer_grid(ts, 0, n as usize).into_iter().map(|t| t as f64).collect()
        } else {
            vec![t_s]
        }
    } else if steps == 0 || t_s <= d.sampler_t_end {
        vec![t_s]
    } else {
        rho_grid(t_s, d.sampler_t_end, steps as usize, s.rho)
    };
    if grid.last().is_some_and(|&t| t > d.clean) {
        grid.push(d.clean);
    }
    grid
}

/// A number for a message: plain when moderate, else in exponent notation (`1e300`, not 301 digits).
fn num(x: f64) -> String {
    if x == 0.0 || !x.is_finite() || (1e-4..1e9).contains(&x.abs()) {
        format!("{x}")
    } else {
        format!("{x:e}")
    }
}

/// Whether a time grid is finite and never goes up.
fn grid_ok(grid: &[f64]) -> bool {
    grid.iter().all(|t| t.is_finite()) && grid.windows(2).all(|w| w[0] >= w[1])
}

/// Checks that `model` can run `file`'s procedure and that it takes at most `max_nfe` network
/// evaluations per image (no bound with `None`); returns the evaluations per image. Assumes the
/// file passed [`TokenFile::validate`] (every parsed file has). Does not check the weights hash:
/// that needs the weights.
pub fn check(model: &ModelDescription, file: &TokenFile, max_nfe: Option<u64>) -> Result<u64, Refusal> {
    let refuse = |field: &'static str, reason: String| Refusal { model: model.name.clone(), field, reason };
    let m = &file.model;
    if m.family != model.family {
        return Err(refuse(
            "model.family",
            format!("the file is for a {} model; this one is {}", m.family, model.family),
        ));
    }
    if m.parameterization != model.parameterization {
        return Err(refuse(
            "model.parameterization",
            format!("the file needs {}; this model has {}", m.parameterization, model.parameterization),
        ));
    }
    if m.schedule != model.schedule {
        return Err(refuse(
            "model.schedule",
            format!("the file needs the {} schedule; this model has {}", m.schedule, model.schedule),
        ));
    }
    let img = &file.image;
    if img.channels != model.channels {
        return Err(refuse(
            "image.channels",
            format!("the file holds a {}-channel image; this model has {}", img.channels, model.channels),
        ));
    }
    if img.height != img.width || img.height > model.size || !(model.size - img.height).is_multiple_of(2) {
        return Err(refuse(
            "image",
            format!(
                "the file holds a {}×{} image; this model makes {s}×{s} images (or square ones smaller by an even margin)",
                img.width,
                img.height,
                s = model.size
            ),
        ));
    }
    if img.lo != model.lo || img.hi != model.hi {
        return Err(refuse(
            "image.lo/hi",
            format!("the file's value range is [{}, {}]; this model's is [{}, {}]", img.lo, img.hi, model.lo, model.hi),
        ));
    }
    let pr = &file.procedure;
    if pr.clip_x0 != model.clip_x0 {
        return Err(refuse(
            "procedure.clip_x0",
            format!(
                "the file says {}; this model's procedure {} x0",
                pr.clip_x0,
                if model.clip_x0 { "clips" } else { "does not clip" }
            ),
        ));
    }
    if pr.dtype != ComputeDtype::F32 {
        return Err(refuse(
            "procedure.dtype",
            format!("the file was made with {:?} compute; this decoder runs f32 only", pr.dtype),
        ));
    }
    // The reference image of I2/I3 (SPEC 7) must be the very one the encoder used: the file
    // names it by the hash of its values, and a decoder without it cannot start.
    let x_ref = match pr.init {
        InitStrategy::I2 { x_ref } | InitStrategy::I3 { x_ref, .. } => Some(x_ref),
        InitStrategy::I1 => None,
    };
    match x_ref {
        Some(XRef::DatasetMean) => {
            return Err(refuse(
                "procedure.init.x_ref",
                "the file starts from an unnamed \"dataset mean\" reference image (x_ref tag 1), which does not \
                 say which values it means, so no decoder can reproduce it; files name their reference image by \
                 the SHA-256 of its values (tag 2)"
                    .into(),
            ));
        }
        Some(XRef::Image { sha256 }) if !model.x_refs.contains(&sha256) => {
            let found: Vec<String> = model.x_refs.iter().map(|h| hex(h)).collect();
            return Err(refuse(
                "procedure.init.x_ref",
                format!(
                    "the file starts from the reference image with values SHA-256 {}, which this model does not \
                     provide: looked in {}{}",
                    hex(&sha256),
                    model.x_ref_places,
                    if found.is_empty() {
                        " (no reference image there)".to_string()
                    } else {
                        format!(" (found only {})", found.join(", "))
                    }
                ),
            ));
        }
        _ => {}
    }
    // A score region (SPEC 2.4, extension 2) needs no check of its own: the image region is
    // the file's H × W centred in the model's input, which the image check above has found
    // square and inside the input by an even margin.
    let d = &model.domain;
    let in_domain = |t: f64| t.is_finite() && t > d.clean && t <= d.max;
    let domain = format!("({}, {}]", d.clean, d.max);
    match &pr.algorithm {
        Algorithm::Alg1 { t_r, t_t, .. } => {
            if !in_domain(*t_r) {
                return Err(refuse(
                    "procedure.algorithm.t_r",
                    format!("T_r = {} is outside the model's time range {domain}", num(*t_r)),
                ));
            }
            if !(t_t.is_finite() && *t_t >= d.clean && t_t < t_r) {
                return Err(refuse(
                    "procedure.algorithm.t_t",
                    format!("T_t = {} is outside [{}, T_r = {})", num(*t_t), d.clean, num(*t_r)),
                ));
            }
            if d.discrete && (*t_r as i64) - (*t_t as i64) < i64::from(pr.n) {
                return Err(refuse(
                    "procedure.n",
                    format!("the integer grid {} → {} has fewer than N = {} steps", num(*t_r), num(*t_t), pr.n),
                ));
            }
        }
        Algorithm::Alg2 { t_s, schedule } => {
            if !in_domain(*t_s) {
                return Err(refuse(
                    "procedure.algorithm.t_s",
                    format!("T_s = {} is outside the model's time range {domain}", num(*t_s)),
                ));
            }
            // A jump may reach the clean time, not beyond (up to rounding in the encoder's Δ).
            let lowest = d.clean - 1e-9 * t_s.abs().max(1.0);
            for e in schedule {
                if !(e.delta.is_finite() && e.delta > 0.0 && t_s - e.delta >= lowest) {
                    return Err(refuse(
                        "procedure.algorithm.schedule.delta",
                        format!(
                            "Δ = {} jumps from T_s = {} outside the model's time range {domain}",
                            num(e.delta),
                            num(*t_s)
                        ),
                    ));
                }
                if d.discrete && e.delta.fract() != 0.0 {
                    return Err(refuse(
                        "procedure.algorithm.schedule.delta",
                        format!("Δ = {} is not an integer step of the DDPM model", num(e.delta)),
                    ));
                }
            }
        }
    }
    match (pr.sampler.kind, model.family) {
        (SamplerKind::Euler, f) if f != Family::Rf => {
            return Err(refuse(
                "procedure.sampler.kind",
                format!("the Euler-in-τ sampler is for rectified flow, not {f}"),
            ));
        }
        (SamplerKind::Ddim, Family::Rf) => {
            return Err(refuse(
                "procedure.sampler.kind",
                "a rectified-flow file records its sampler as Euler, not DDIM".into(),
            ));
        }
        _ => {}
    }
    let nfe = nfe(file, d);
    if let Some(max) = max_nfe {
        if nfe > max {
            return Err(refuse(
                "procedure",
                format!(
                    "the file asks for {nfe} network evaluations per image (N = {} tokens, final sampler {:?} with {} steps), above the limit of {max} (raise it with --max-nfe)",
                    pr.n, pr.sampler.kind, pr.sampler.steps
                ),
            ));
        }
    }
    // The grids the decoder will walk must be finite and go down (a ρ of 1e-300 makes them NaN).
    if let Algorithm::Alg2 { t_s, .. } = &pr.algorithm {
        if !grid_ok(&sampler_grid(file, d, *t_s)) {
            return Err(refuse(
                "procedure.sampler.rho",
                format!("ρ = {} gives the final sampler a grid that is not finite and decreasing", num(pr.sampler.rho)),
            ));
        }
    }
    if let Algorithm::Alg1 { t_r, t_t, rho } = &pr.algorithm {
        if !d.discrete && !grid_ok(&rho_grid(*t_r, *t_t, pr.n as usize, *rho)) {
            return Err(refuse(
                "procedure.algorithm.rho",
                format!("ρ = {} gives Algorithm 1 a grid that is not finite and decreasing", num(*rho)),
            ));
        }
    }
    Ok(nfe)
}
