//! Option groups shared by several subcommands (model, data, metrics, run, tokenizer) and the
//! tokenizer settings they resolve to.

use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Result};
use clap::Args;

use gddcm::data::{Dataset, Split};
use gddcm::eval::{EvalOptions, Metric};
use gddcm::marginal::Mixing;
use gddcm::profile::{InitKind, ScoreKind, Settings, XRefKind};
use gddcm::tokenizer::Config;
use gddcm::zoo::LoadedModel;

#[derive(Args, Clone)]
pub struct ModelArgs {
    /// Model name (see `gddcm models`); default: the bundled model that tokenizes best.
    #[arg(short, long)]
    pub model: Option<String>,
    /// Weights folder or file (overrides the search path).
    #[arg(long)]
    pub weights: Option<PathBuf>,
}

#[derive(Args, Clone)]
pub struct DataArgs {
    /// `fmnist` (Debian's dataset-fashion-mnist) or a folder of images.
    #[arg(long, default_value = "fmnist")]
    pub data: String,
    /// test, or val (the first images of the training split, kept apart from the test set).
    #[arg(long, value_enum, default_value = "test")]
    pub split: Split,
    /// At most this many images.
    #[arg(long, default_value_t = 100)]
    pub limit: usize,
}

impl DataArgs {
    /// The images for `model`; what the conversion to its channels dropped is said once.
    pub fn load(&self, model: &str, channels: usize) -> Result<Dataset> {
        if self.data == "fmnist" {
            gddcm::data::fashion_mnist(Path::new(gddcm::data::FASHION_MNIST_DIR), self.split, self.limit)
        } else {
            let (data, dropped) = gddcm::data::image_folder_noting(Path::new(&self.data), channels, self.limit)?;
            let dropped: Vec<(String, &str)> = dropped.into_iter().map(|(p, d)| (p.display().to_string(), d)).collect();
            super::encode::warn_dropped(model, channels, &dropped);
            Ok(data)
        }
    }
}

#[derive(Args, Clone)]
pub struct MetricArgs {
    /// Metrics to compute.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [Metric::Pixel, Metric::Lpips, Metric::Fid, Metric::Classifier])]
    pub metrics: Vec<Metric>,
    /// Folder with the metric weight files (pt_inception-2015-12-05-6726825d.pth, alexnet-owt-7be5be79.pth, lpips alex.pth).
    #[arg(long)]
    pub metric_weights: Option<PathBuf>,
}

impl MetricArgs {
    pub fn options(&self, batch: usize, keep: Option<PathBuf>, resume: bool) -> EvalOptions {
        EvalOptions {
            metrics: self.metrics.clone(),
            batch,
            weights_dir: self.metric_weights.clone(),
            keep,
            resume,
            ..Default::default()
        }
    }
}

#[derive(Args, Clone)]
pub struct FitArgs {
    /// Make images of another size than the model's fit it (Lanczos3 scaling): crop, pad or
    /// resize. The original size is kept in the token file and decode restores it. Images the
    /// model takes as they are stay as they are.
    #[arg(long, value_enum)]
    pub fit: Option<FitArg>,
}

#[derive(Args, Clone)]
pub struct RunArgs {
    /// Images per network batch.
    #[arg(long, default_value_t = 16)]
    pub batch: usize,
    /// Compute device.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

#[derive(Args, Clone)]
pub struct TokenizerArgs {
    /// Profile file (JSON settings); flags below override it. Default: the model's shipped
    /// profile (`profile.json` beside its weights), else the defaults.
    #[arg(long)]
    pub profile: Option<PathBuf>,
    /// Codebook size K.
    #[arg(short = 'k', long)]
    pub k: Option<u32>,
    /// Number of tokens N.
    #[arg(short = 'n', long)]
    pub n: Option<u32>,
    /// p, in [0, 1): 0 for Algorithm 2, in (0,1) for Algorithm 1 (0.5 on DDPM = DDCM). A p of
    /// the other algorithm than the shipped profile's starts from the defaults for that p (e.g.
    /// p > 0: T_r = the largest time, I1); with a --profile FILE of the other algorithm it is an
    /// error.
    #[arg(short = 'p', long, allow_negative_numbers = true)]
    pub p: Option<f64>,
    /// Codebook seed.
    #[arg(long)]
    pub seed: Option<u64>,
    /// T_s (p = 0) or T_r (p > 0), in the family's time units (> 0, at most its largest time).
    #[arg(long, allow_negative_numbers = true)]
    pub t_start: Option<f64>,
    /// T_t of Algorithm 1 (≥ 0).
    #[arg(long, allow_negative_numbers = true)]
    pub t_end: Option<f64>,
    /// Intervals P of Algorithm 2.
    #[arg(long)]
    pub intervals: Option<u32>,
    /// Smallest jump (fraction of T_s in (0, 1]; DDPM: integer steps ≥ 1).
    #[arg(long, allow_negative_numbers = true)]
    pub dt_min: Option<f64>,
    /// Largest jump (fraction of T_s in (0, 1]).
    #[arg(long, allow_negative_numbers = true)]
    pub dt_max: Option<f64>,
    /// σ_max of the repeat weights (> 0).
    #[arg(long, allow_negative_numbers = true)]
    pub sigma_max: Option<f64>,
    /// ρ of the repeat weights (> 0).
    #[arg(long, allow_negative_numbers = true)]
    pub rho: Option<f64>,
    /// Initial point strategy.
    #[arg(long)]
    pub init: Option<InitKind>,
    /// I3 candidates K0.
    #[arg(long)]
    pub k0: Option<u32>,
    /// Atoms per step: single (one codeword, eq. 14), topm:M (Turbo-DDCM: the M best codewords
    /// with signs, ⌈log2 C(K,M)⌉ + M bits per step) or pursuit:M:C (matching pursuit, weights of
    /// C bits, M·⌈log2 K⌉ + (M−1)·C bits per step).
    #[arg(long)]
    pub atoms: Option<gddcm::atoms::AtomRule>,
    /// Use σ-mix instead of the paper's Σ-mix (eq. 21).
    #[arg(long)]
    pub sigma_mix: bool,
    /// Reference image of the I2/I3 initial points: zeros, or mean (the model's training-set mean,
    /// x_ref.safetensors beside its weights; the file names it by its hash).
    #[arg(long, value_enum)]
    pub x_ref: Option<XRefKind>,
    /// Which elements the codeword choice (eq. 14) scores: input (all of the network's input)
    /// or image (not the background padding around a smaller image; recorded in the file).
    #[arg(long, value_enum)]
    pub score_region: Option<ScoreKind>,
    /// A shipped operating point of the model, by id or name (`gddcm models` lists them); no
    /// other tokenizer flag may be given with it.
    #[arg(long, conflicts_with_all = TOKENIZER_FLAGS)]
    pub point: Option<String>,
    /// Rate control: the largest shipped operating point whose file fits this many bits per
    /// pixel (an error names the smallest point when none does).
    #[arg(long, conflicts_with_all = TOKENIZER_FLAGS, conflicts_with = "point")]
    pub bpp: Option<f64>,
    /// The DDCM baseline of Ohayon et al., exactly: DDPM, p = 0.5, N = 300, grid 999 → 0, noise
    /// start. Only -k and --seed may be given with it; no profile applies.
    #[arg(long, conflicts_with_all = TOKENIZER_FLAGS, conflicts_with_all = ["point", "bpp"])]
    pub ddcm: bool,
    #[command(flatten)]
    pub run: RunArgs,
}

impl TokenizerArgs {
    /// Whether no tokenizer setting is given (no profile, flag or preset).
    fn is_bare(&self) -> bool {
        let numbers = [self.t_start, self.t_end, self.dt_min, self.dt_max, self.sigma_max, self.rho, self.p];
        let counts = [self.k, self.n, self.intervals, self.k0];
        self.profile.is_none()
            && numbers.iter().all(Option::is_none)
            && counts.iter().all(Option::is_none)
            && self.seed.is_none()
            && self.init.is_none()
            && self.atoms.is_none()
            && self.x_ref.is_none()
            && self.score_region.is_none()
            && !self.sigma_mix
            && !self.ddcm
            && self.point.is_none()
            && self.bpp.is_none()
    }

    /// Every number a flag gives, checked before anything runs: finite and in its range, the
    /// error naming the flag.
    pub fn check_flags(&self) -> Result<()> {
        if let Some(p) = self.p {
            ensure!(p != 1.0, "-p must be in [0, 1), found 1 (p = 1 is a pure ODE step and carries no information)");
            ensure!((0.0..1.0).contains(&p), "-p must be in [0, 1), found {p}");
        }
        let positive = [
            ("--t-start", self.t_start),
            ("--dt-min", self.dt_min),
            ("--dt-max", self.dt_max),
            ("--sigma-max", self.sigma_max),
            ("--rho", self.rho),
        ];
        for (flag, v) in positive {
            if let Some(v) = v {
                ensure!(v.is_finite() && v > 0.0, "{flag} must be a finite number > 0, found {v}");
            }
        }
        if let Some(v) = self.t_end {
            ensure!(v.is_finite() && v >= 0.0, "--t-end must be a finite number ≥ 0, found {v}");
        }
        Ok(())
    }

    /// The settings and where they came from: `--profile`, else the model's shipped profile,
    /// else the defaults; then the flags on top. A `-p` of the other algorithm than the profile
    /// never keeps the profile's fields: T_s, the schedule and the init of Algorithm 2 mean
    /// something else as Algorithm 1's T_r and init (SPEC 2.5, 2.7, 7; issue 16).
    pub fn settings(&self, model: &LoadedModel) -> Result<(Settings, String)> {
        let other_algorithm = |s: &Settings| self.p.is_some_and(|p| (p > 0.0) != (s.p > 0.0));
        let (mut s, mut source) = match &self.profile {
            Some(path) => {
                let s = Settings::load(path)?;
                if let Some(p) = self.p.filter(|_| other_algorithm(&s)) {
                    bail!(
                        "profile {} is for p = {} ({}) but -p {p} selects {}; use a profile for that \
                         algorithm, or leave out --profile to start from the defaults for p = {p}",
                        path.display(),
                        s.p,
                        algorithm_name(s.p),
                        algorithm_name(p),
                    );
                }
                (s, format!("profile {}", path.display()))
            }
            None => match model.profile_with_origin()? {
                Some((s, origin)) if !other_algorithm(&s) => {
                    let source = format!("shipped profile of {}, p = {} ({origin})", model.entry.name, s.p);
                    (s, source)
                }
                shipped => {
                    let shipped = shipped.map(|(s, _)| s);
                    let p = self.p.unwrap_or_default();
                    let why = match shipped {
                        Some(s) => format!(" (the shipped profile of {} is for p = {})", model.entry.name, s.p),
                        None => String::new(),
                    };
                    (Settings { p, ..Settings::default() }, format!("defaults for p = {p}{why}"))
                }
            },
        };
        let mut flags = Vec::new();
        macro_rules! set {
            ($($f:ident),*) => { $( if let Some(v) = self.$f { s.$f = v; flags.push(stringify!($f)); } )* };
        }
        macro_rules! set_opt {
            ($($f:ident),*) => { $( if self.$f.is_some() { s.$f = self.$f; flags.push(stringify!($f)); } )* };
        }
        set!(k, n, p, seed, intervals, sigma_max, rho, init, k0, atoms, x_ref, score_region);
        set_opt!(t_start, t_end, dt_min, dt_max);
        if self.sigma_mix {
            s.mixing = Mixing::SmallSigma;
            flags.push("sigma_mix");
        }
        if !flags.is_empty() {
            let flags: Vec<String> = flags.iter().map(|f| format!("--{}", f.replace('_', "-"))).collect();
            source = format!("{source}; flags on top: {}", flags.join(" "));
        }
        Ok((s, source))
    }

    /// The configuration and where its settings came from, for the run's summary (the token
    /// file has no field for it).
    pub fn config(&self, model: &LoadedModel) -> Result<(Config, String)> {
        self.check_flags()?;
        if self.ddcm {
            if model.entry.family != gddcm::family::Family::Ddpm {
                bail!("--ddcm is the DDPM baseline; model '{}' is {}", model.entry.name, model.entry.family);
            }
            // SPEC 4 fixes everything but K and the codebook seed; clap refuses the other flags.
            let d = Settings::default();
            let k = self.k.unwrap_or(d.k);
            ensure!(k >= 2, "K must be at least 2, found {k}");
            return Ok((Config::ddcm(k, self.seed.unwrap_or(d.seed)), DDCM_SOURCE.into()));
        }
        if self.is_bare() {
            // No settings at all: the model's default operating point, if it names one.
            if let Some(r) = gddcm::rate::default_point(model)? {
                let cfg = model.config(&r.point.settings)?;
                return Ok((cfg, format!("default operating {} of {}", r.describe(), model.entry.name)));
            }
        }
        if let Some(point) = self.point.as_deref().filter(|_| self.k.is_none() && self.seed.is_none()) {
            let rungs = gddcm::rate::ladder(model)?;
            let Some(r) = rungs.iter().find(|r| r.point.name == point || r.point.id.to_string() == point) else {
                let known: Vec<String> = rungs.iter().map(|r| format!("{} '{}'", r.point.id, r.point.name)).collect();
                bail!(
                    "model '{}' has no operating point '{point}'; it ships: {}",
                    model.entry.name,
                    if known.is_empty() { "none".into() } else { known.join(", ") }
                );
            };
            let cfg = model.config(&r.point.settings)?;
            return Ok((cfg, format!("shipped operating {} of {}", r.describe(), model.entry.name)));
        }
        if let Some(bpp) = self.bpp.filter(|_| self.k.is_none() && self.seed.is_none()) {
            let rungs = gddcm::rate::rate_ladder(model)?;
            let r = gddcm::rate::for_bpp(&rungs, bpp, model.entry.name)?;
            let cfg = model.config(&r.point.settings)?;
            return Ok((cfg, format!("--bpp {bpp}: shipped operating {} of {}", r.describe(), model.entry.name)));
        }
        ensure!(
            self.point.is_none() && self.bpp.is_none(),
            "--point and --bpp choose a whole shipped operating point: -k and --seed cannot be given with them"
        );
        let (s, source) = self.settings(model)?;
        Ok((model.config(&s)?, source))
    }
}

pub const DDCM_SOURCE: &str = "DDCM baseline (SPEC 4)";

/// The flags that set a tokenization one by one, which a whole preset (`--ddcm`, `--point`,
/// `--bpp`, `--psnr`) replaces. (-k and --seed stay allowed with --ddcm; they are listed
/// separately where they conflict.)
pub const TOKENIZER_FLAGS: [&str; 14] = [
    "profile",
    "n",
    "p",
    "t_start",
    "t_end",
    "intervals",
    "dt_min",
    "dt_max",
    "sigma_max",
    "rho",
    "init",
    "k0",
    "sigma_mix",
    "atoms",
];

/// How `--fit` makes an image of another size fit the model.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum FitArg {
    /// Scale the shorter side to the model's size (Lanczos3) and cut out the centre; decodes
    /// to that centre square at the original scale.
    Crop,
    /// Scale the longer side to the model's size (Lanczos3) and fill the rest with the
    /// background (black); decodes back to the original size.
    Pad,
    /// Scale to the model's size, not keeping the aspect ratio (Lanczos3); decodes back to the
    /// original size.
    Resize,
}

impl FitArg {
    pub fn mode(self) -> gddcm::format::FitMode {
        match self {
            FitArg::Crop => gddcm::format::FitMode::Crop,
            FitArg::Pad => gddcm::format::FitMode::Pad,
            FitArg::Resize => gddcm::format::FitMode::Resize,
        }
    }
}

pub fn algorithm_name(p: f64) -> &'static str {
    if p > 0.0 {
        "Algorithm 1"
    } else {
        "Algorithm 2"
    }
}
