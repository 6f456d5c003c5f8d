//! Tokenizer settings as a user writes them (CLI flags, profile files), turned into a
//! [`Config`] for a given family.
//!
//! A profile is a JSON file holding a [`Settings`]; `gddcm search` writes them and `encode`,
//! `eval` and `table1` read them. Every field has the SPEC's default.

use std::path::Path;

use anyhow::{bail, ensure, Context, Result};
use serde::{Deserialize, Serialize};

use crate::atoms::AtomRule;
use crate::family::Family;
use crate::marginal::{Marginal, Mixing};
use crate::reference::RefImage;
use crate::schedule::{continuous_intervals, discrete_intervals};
use crate::tokenizer::{default_grid_rho, Algorithm, Config, Init, Reference, Sampler, ScoreRegion};

/// Which initial point (SPEC 7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum InitKind {
    /// I1: scaled random noise.
    I1,
    /// I2: reference image plus noise.
    I2,
    /// I3: the closest of K0 noises (costs log2 K0 bits).
    I3,
}

/// The reference image `x_ref` of I2/I3 (SPEC 7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum XRefKind {
    /// All zeros (mid-gray). [D]
    #[default]
    Zeros,
    /// The model's training-set mean (`x_ref.safetensors` beside its weights).
    Mean,
}

/// Which elements eq. 14 scores (SPEC 2.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ScoreKind {
    /// The whole network input, padding included (the paper's eq. 14). [D]
    #[default]
    Input,
    /// Only the image, not the background padding around it.
    Image,
}

/// Everything that selects a tokenization; `None` means "the family's default".
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Codebook size K.
    pub k: u32,
    /// Number of tokens N.
    pub n: u32,
    /// 0 selects Algorithm 2; 0 < p < 1 Algorithm 1.
    pub p: f64,
    /// Codebook seed.
    pub seed: u64,
    /// T_s (p = 0) or T_r (p > 0), in the family's time units.
    pub t_start: Option<f64>,
    /// T_t of Algorithm 1.
    pub t_end: Option<f64>,
    /// ρ of Algorithm 1's grid.
    pub grid_rho: Option<f64>,
    /// Algorithm 2: number of intervals P.
    pub intervals: u32,
    /// Algorithm 2: smallest jump, as a fraction of T_s (continuous, default 0.02) or in
    /// integer steps (DDPM, default 2).
    pub dt_min: Option<f64>,
    /// Algorithm 2: largest jump as a fraction of T_s (continuous, default 0.3; DDPM uses
    /// Δ_min + P).
    pub dt_max: Option<f64>,
    /// Algorithm 2: σ_max of the repeat weights (eqs. 10, 13).
    pub sigma_max: f64,
    /// Algorithm 2: ρ of the repeat weights.
    pub rho: f64,
    /// Initial point.
    pub init: InitKind,
    /// I3 candidates K0.
    pub k0: u32,
    /// Σ-mix (eq. 21) or σ-mix.
    pub mixing: Mixing,
    /// Steps of the final sampler (None: the family's default).
    pub sampler_steps: Option<u32>,
    /// Atoms per step: `"single"` \[D\], `"topm:M"` or `"pursuit:M:C"` (SPEC 2.4a); left out of
    /// the JSON when single.
    #[serde(skip_serializing_if = "AtomRule::is_single")]
    pub atoms: AtomRule,
    /// The reference image of I2/I3: `"zeros"` or `"mean"` (the model's training-set mean).
    /// Left out of a written profile when zeros, so profiles stay as they were.
    #[serde(skip_serializing_if = "is_default")]
    pub x_ref: XRefKind,
    /// Which elements eq. 14 scores: `"input"` (all) or `"image"` (not the padding).
    #[serde(skip_serializing_if = "is_default")]
    pub score_region: ScoreKind,
}

fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            k: 256,
            n: 300,
            p: 0.0,
            seed: 0x6464_636d, // "ddcm"
            t_start: None,
            t_end: None,
            grid_rho: None,
            intervals: 4,
            dt_min: None,
            dt_max: None,
            sigma_max: 10.0,
            rho: 7.0,
            init: InitKind::I1,
            k0: 256,
            mixing: Mixing::BigSigma,
            sampler_steps: None,
            atoms: AtomRule::Single,
            x_ref: XRefKind::Zeros,
            score_region: ScoreKind::Input,
        }
    }
}

impl Settings {
    /// Reads a profile file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read profile {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("profile {} is not a valid settings file", path.display()))
    }

    /// The family's default starting time: T_s for p = 0 (small, SPEC 8), T_r = max time for
    /// p > 0.
    fn default_t_start(&self, family: Family, marginal: &Marginal) -> f64 {
        if self.p > 0.0 {
            return marginal.max_time();
        }
        match family {
            Family::Ddpm => 100.0,
            Family::Edm | Family::Cm => 0.4,
            Family::Rf => 0.3,
        }
    }

    /// The [`Config`] these settings select for a family, for settings with the zero reference
    /// image (a mean `x_ref` needs the model's: [`Settings::to_config_with`]).
    pub fn to_config(&self, family: Family, marginal: &Marginal) -> Result<Config> {
        self.to_config_with(family, marginal, None)
    }

    /// The [`Config`] these settings select for a family whose model provides the training-set
    /// mean `mean` (SPEC 7), if any.
    pub fn to_config_with(&self, family: Family, marginal: &Marginal, mean: Option<&RefImage>) -> Result<Config> {
        ensure!(self.k >= 2, "K must be at least 2, found {}", self.k);
        ensure!(self.n >= 1, "N must be at least 1");
        if let Err(why) = self.atoms.check(self.k) {
            bail!("atoms {}: {why}", self.atoms);
        }
        ensure!(self.p != 1.0, "p must be in [0, 1), found 1 (p = 1 is a pure ODE step and carries no information)");
        ensure!((0.0..1.0).contains(&self.p), "p must be in [0, 1), found {}", self.p);
        for (name, v) in [("sigma_max", Some(self.sigma_max)), ("rho", Some(self.rho)), ("grid_rho", self.grid_rho)] {
            if let Some(v) = v {
                ensure!(v.is_finite() && v > 0.0, "{name} must be a finite number > 0, found {v}");
            }
        }
        for (name, v) in [("t_start", self.t_start), ("dt_min", self.dt_min), ("dt_max", self.dt_max)] {
            if let Some(v) = v {
                ensure!(v.is_finite() && v > 0.0, "{name} must be a finite number > 0, found {v}");
            }
        }
        if let Some(v) = self.t_end {
            ensure!(v.is_finite() && v >= 0.0, "t_end must be a finite number ≥ 0, found {v}");
        }
        let t_start = self.t_start.unwrap_or_else(|| self.default_t_start(family, marginal));
        ensure!(
            t_start > marginal.clean_time() && t_start <= marginal.max_time(),
            "the starting time {t_start} is outside the {family} model's range (0, {}]",
            marginal.max_time()
        );
        let algorithm = if self.p > 0.0 {
            let t_end = self.t_end.unwrap_or(match family {
                Family::Edm | Family::Cm => 0.002,
                _ => 0.0,
            });
            Algorithm::Stochastic {
                p: self.p,
                n: self.n,
                t_start,
                t_end,
                rho: self.grid_rho.unwrap_or(default_grid_rho(family)),
            }
        } else {
            ensure!(self.intervals >= 1, "at least one interval (P ≥ 1)");
            let schedule = if marginal.is_discrete() {
                let dt_min = self.dt_min.unwrap_or(2.0);
                ensure!(dt_min >= 1.0 && dt_min.fract() == 0.0, "DDPM needs an integer Δ_min ≥ 1, found {dt_min}");
                ensure!(
                    dt_min + self.intervals as f64 <= t_start + 1.0,
                    "DDPM jumps up to Δ_min + P = {} exceed T_s + 1 = {}",
                    dt_min + self.intervals as f64,
                    t_start + 1.0
                );
                discrete_intervals(self.n, self.intervals as usize, dt_min as u32, self.sigma_max, self.rho)
            } else {
                let (dt_min, dt_max) = (self.dt_min.unwrap_or(0.02), self.dt_max.unwrap_or(0.3));
                ensure!(
                    0.0 < dt_min && dt_min <= dt_max && dt_max <= 1.0,
                    "need 0 < dt_min ≤ dt_max ≤ 1 (fractions of T_s), found {dt_min} and {dt_max}"
                );
                continuous_intervals(
                    self.n,
                    self.intervals as usize,
                    dt_min * t_start,
                    dt_max * t_start,
                    self.sigma_max,
                    self.rho,
                )
            };
            Algorithm::Resample { t_start, schedule }
        };
        // Only I2 and I3 start from x_ref; I1 ignores the setting.
        let reference = || -> Result<Reference> {
            match self.x_ref {
                XRefKind::Zeros => Ok(Reference::Zeros),
                XRefKind::Mean => match mean {
                    Some(m) => Ok(Reference::Image(m.clone())),
                    None => bail!(
                        "x_ref \"mean\" needs the model's training-set mean ({} beside its weights), which this \
                         model does not provide",
                        crate::reference::X_REF_FILE
                    ),
                },
            }
        };
        let init = match self.init {
            InitKind::I1 => Init::Noise,
            InitKind::I2 => Init::Reference(reference()?),
            InitKind::I3 => {
                ensure!(self.k0 >= 2, "I3 needs K0 ≥ 2");
                Init::ClosestNoise { reference: reference()?, candidates: self.k0 }
            }
        };
        let mut sampler = Sampler::default_for(family);
        if let Some(steps) = self.sampler_steps {
            if family == Family::Cm && steps > 0 {
                bail!("a consistency model samples in one step (sampler_steps 0)");
            }
            sampler.steps = steps;
        }
        let score_region = match self.score_region {
            ScoreKind::Input => ScoreRegion::Input,
            ScoreKind::Image => ScoreRegion::Image,
        };
        Ok(Config {
            k: self.k,
            seed: self.seed,
            algorithm,
            mixing: self.mixing,
            init,
            sampler,
            score_region,
            atoms: self.atoms,
        })
    }
}
