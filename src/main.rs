//! The `gddcm` command: tokenize images with a diffusion model and decode them back.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::Ordering;

use anyhow::{bail, ensure, Context, Result};
use candle_core::Device;
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};

use gddcm::codec;
use gddcm::data::{write_atomic, Dataset, Image, Split};
use gddcm::eval::{evaluate, EvalOptions, EvalReport, Metric};
use gddcm::format::TokenFile;
use gddcm::marginal::Mixing;
use gddcm::metrics::image::ImageU8;
use gddcm::metrics::ssim::{psnr, ssim};
use gddcm::profile::{InitKind, Settings};
use gddcm::tokenizer::{Config, Tokenizer};
use gddcm::zoo::{self, LoadedModel};

#[derive(Parser)]
#[command(
    name = "gddcm",
    version,
    about = "Turn images into discrete tokens (and back) with a pretrained diffusion model (gDDCM, arXiv 2511.13387)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Tokenize images into .gddcm files.
    Encode {
        /// PNG/JPEG images.
        #[arg(required = true)]
        images: Vec<PathBuf>,
        /// Output folder for the token files.
        #[arg(short, long)]
        output: PathBuf,
        #[command(flatten)]
        model: ModelArgs,
        #[command(flatten)]
        tok: TokenizerArgs,
    },
    /// Rebuild images from .gddcm files.
    Decode {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Output folder for the PNG images.
        #[arg(short, long)]
        output: PathBuf,
        /// Weights folder or file for the model the files name.
        #[arg(long)]
        weights: Option<PathBuf>,
        /// Refuse files whose procedure takes more network evaluations (NFE) per image.
        #[arg(long, default_value_t = gddcm::validate::DEFAULT_MAX_NFE)]
        max_nfe: u64,
        #[command(flatten)]
        run: RunArgs,
    },
    /// Encode and decode images; print bits per pixel, PSNR and SSIM, and write
    /// original | reconstruction side by side.
    Roundtrip {
        #[arg(required = true)]
        images: Vec<PathBuf>,
        /// Output folder for the token files and side-by-side PNGs.
        #[arg(short, long, default_value = "roundtrip-out")]
        output: PathBuf,
        #[command(flatten)]
        model: ModelArgs,
        #[command(flatten)]
        tok: TokenizerArgs,
    },
    /// Show what a .gddcm file holds.
    Inspect {
        file: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// List the known models and whether their weights are present.
    Models {
        #[arg(long)]
        json: bool,
    },
    /// Tokenize a dataset, decode it from the token files and measure (bpp, PSNR, SSIM,
    /// LPIPS, FID, IS, classifier stand-ins, speed).
    Eval {
        #[command(flatten)]
        model: ModelArgs,
        #[command(flatten)]
        tok: TokenizerArgs,
        #[command(flatten)]
        data: DataArgs,
        #[command(flatten)]
        metrics: MetricArgs,
        /// Write the report as JSON here.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Keep the token files and reconstructions in this folder.
        #[arg(long)]
        keep: Option<PathBuf>,
        /// Reuse the images an interrupted run already finished in the --keep folder.
        #[arg(long, requires = "keep")]
        resume: bool,
    },
    /// The paper's Table 1: each model at p = 0 (its profile) and p = 0.5, same N and K.
    Table1 {
        /// Models (default: the four bundled ones, plus published ones whose weights are present).
        #[arg(long, value_delimiter = ',')]
        models: Vec<String>,
        #[command(flatten)]
        data: DataArgs,
        #[command(flatten)]
        metrics: MetricArgs,
        /// Codebook size K for every row.
        #[arg(short = 'k', long, default_value_t = 256)]
        k: u32,
        /// Tokens N for every row.
        #[arg(short = 'n', long, default_value_t = 300)]
        n: u32,
        /// Write the Markdown table here (also printed).
        #[arg(long)]
        markdown: Option<PathBuf>,
        /// Write all reports as JSON here.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Keep each row's token files and reconstructions in DIR/MODEL-pP.
        #[arg(long)]
        keep: Option<PathBuf>,
        /// Reuse the images an interrupted run already finished in the --keep folders, so a
        /// long table can be computed in several sittings (or rows in parallel processes).
        #[arg(long, requires = "keep")]
        resume: bool,
        /// Compute only these rows (e.g. `fmnist-edm:0,fmnist-ddpm:0.5`); default all.
        #[arg(long, value_delimiter = ',')]
        rows: Vec<String>,
        #[command(flatten)]
        run: RunArgs,
    },
    /// Draw images with a model's ordinary sampler, as a grid PNG.
    Sample {
        #[command(flatten)]
        model: ModelArgs,
        /// How many images.
        #[arg(short, default_value_t = 64)]
        n: usize,
        /// Output PNG.
        #[arg(short, long, default_value = "samples.png")]
        output: PathBuf,
        /// Noise seed.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Sampler steps (default: the family's).
        #[arg(long)]
        steps: Option<u32>,
        #[command(flatten)]
        run: RunArgs,
    },
    // ---- tools: search, rd, bench (issues 5 and 6) ----
    /// Search tokenizer parameters (SPEC 8) on a validation set from the training split; write
    /// the best as a profile and every trial as a JSON log.
    Search(SearchArgs),
    /// Rate–distortion sweep over K × N at p = 0 (the model's profile) and p > 0 (SPEC 6, 9):
    /// bpp against PSNR/SSIM/stand-ins, as JSON and a plot (PNG and SVG).
    Rd(RdArgs),
    /// End-to-end speed (issue 6): encode and decode images per second for each model at N
    /// tokens and each batch size, with the time split between network, codebook and the rest.
    Bench(BenchArgs),
}

#[derive(Args, Clone)]
struct ModelArgs {
    /// Model name (see `gddcm models`); default: the bundled model that tokenizes best.
    #[arg(short, long)]
    model: Option<String>,
    /// Weights folder or file (overrides the search path).
    #[arg(long)]
    weights: Option<PathBuf>,
}

#[derive(Args, Clone)]
struct DataArgs {
    /// `fmnist` (Debian's dataset-fashion-mnist) or a folder of images.
    #[arg(long, default_value = "fmnist")]
    data: String,
    /// test, or val (the first images of the training split; SPEC 8).
    #[arg(long, value_enum, default_value = "test")]
    split: Split,
    /// At most this many images.
    #[arg(long, default_value_t = 100)]
    limit: usize,
}

impl DataArgs {
    fn load(&self, channels: usize) -> Result<Dataset> {
        if self.data == "fmnist" {
            gddcm::data::fashion_mnist(Path::new(gddcm::data::FASHION_MNIST_DIR), self.split, self.limit)
        } else {
            gddcm::data::image_folder(Path::new(&self.data), channels, self.limit)
        }
    }
}

#[derive(Args, Clone)]
struct MetricArgs {
    /// Metrics to compute.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [Metric::Pixel, Metric::Lpips, Metric::Fid, Metric::Classifier])]
    metrics: Vec<Metric>,
    /// Folder with the metric weight files (pt_inception-2015-12-05-6726825d.pth, alexnet-owt-7be5be79.pth, lpips alex.pth).
    #[arg(long)]
    metric_weights: Option<PathBuf>,
}

impl MetricArgs {
    fn options(&self, batch: usize, keep: Option<PathBuf>, resume: bool) -> EvalOptions {
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

fn print_report(r: &EvalReport) {
    let f = |v: Option<f64>, p: usize| v.map(|x| format!("{x:.p$}")).unwrap_or_else(|| "—".into());
    println!("model {} ({}), {} images, K = {}, N = {}, p = {}", r.model, r.family, r.images, r.k, r.n, r.p);
    println!("  bpp {:.4} (file {:.4})", r.bpp, r.file_bpp);
    println!("  PSNR {}  SSIM {}  MS-SSIM {}  LPIPS {}", f(r.psnr, 2), f(r.ssim, 4), f(r.ms_ssim, 4), f(r.lpips, 4));
    println!(
        "  FID {}  IS {}",
        f(r.fid, 2),
        r.inception_score.map(|(m, s)| format!("{m:.2} ± {s:.2}")).unwrap_or_else(|| "—".into())
    );
    println!(
        "  stand-ins (bundled Fashion-MNIST classifier, not FID): Frechet distance {}, accuracy {} (originals {})",
        f(r.classifier_fd, 2),
        f(r.classifier_accuracy, 3),
        f(r.classifier_accuracy_originals, 3)
    );
    println!("  speed: encode {:.3} images/s, decode {:.3} images/s", r.encode_images_per_s, r.decode_images_per_s);
    for s in &r.skipped {
        println!("  skipped {s}");
    }
}

#[derive(Args, Clone)]
struct RunArgs {
    /// Images per network batch.
    #[arg(long, default_value_t = 16)]
    batch: usize,
    /// Compute device.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

#[derive(Args, Clone)]
struct TokenizerArgs {
    /// Profile file (JSON settings); flags below override it. Default: the model's shipped
    /// profile (`profile.json` beside its weights), else the defaults.
    #[arg(long)]
    profile: Option<PathBuf>,
    /// Codebook size K.
    #[arg(short = 'k', long)]
    k: Option<u32>,
    /// Number of tokens N.
    #[arg(short = 'n', long)]
    n: Option<u32>,
    /// p: 0 for Algorithm 2, in (0,1) for Algorithm 1 (0.5 on DDPM = DDCM). A p of the other
    /// algorithm than the shipped profile's starts from the defaults for that p (e.g. p > 0:
    /// T_r = the largest time, I1); with a --profile FILE of the other algorithm it is an error.
    #[arg(short = 'p', long)]
    p: Option<f64>,
    /// Codebook seed.
    #[arg(long)]
    seed: Option<u64>,
    /// T_s (p = 0) or T_r (p > 0), in the family's time units.
    #[arg(long)]
    t_start: Option<f64>,
    /// T_t of Algorithm 1.
    #[arg(long)]
    t_end: Option<f64>,
    /// Intervals P of Algorithm 2.
    #[arg(long)]
    intervals: Option<u32>,
    /// Smallest jump (fraction of T_s; DDPM: integer steps).
    #[arg(long)]
    dt_min: Option<f64>,
    /// Largest jump (fraction of T_s).
    #[arg(long)]
    dt_max: Option<f64>,
    /// σ_max of the repeat weights.
    #[arg(long)]
    sigma_max: Option<f64>,
    /// ρ of the repeat weights.
    #[arg(long)]
    rho: Option<f64>,
    /// Initial point strategy.
    #[arg(long)]
    init: Option<InitKind>,
    /// I3 candidates K0.
    #[arg(long)]
    k0: Option<u32>,
    /// Use σ-mix instead of the paper's Σ-mix (eq. 21).
    #[arg(long)]
    sigma_mix: bool,
    /// The DDCM baseline, exactly as SPEC 4 fixes it: DDPM, p = 0.5, N = 300, grid 999 → 0, I1.
    /// Only -k and --seed may be given with it; no profile applies.
    #[arg(long, conflicts_with_all = [
        "profile", "n", "p", "t_start", "t_end", "intervals", "dt_min", "dt_max", "sigma_max", "rho", "init", "k0",
        "sigma_mix",
    ])]
    ddcm: bool,
    #[command(flatten)]
    run: RunArgs,
}

impl TokenizerArgs {
    /// The settings and where they came from: `--profile`, else the model's shipped profile,
    /// else the defaults; then the flags on top. A `-p` of the other algorithm than the profile
    /// never keeps the profile's fields: T_s, the schedule and the init of Algorithm 2 mean
    /// something else as Algorithm 1's T_r and init (SPEC 2.5, 2.7, 7; issue 16).
    fn settings(&self, model: &LoadedModel) -> Result<(Settings, String)> {
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
        set!(k, n, p, seed, intervals, sigma_max, rho, init, k0);
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
    fn config(&self, model: &LoadedModel) -> Result<(Config, String)> {
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
        let (s, source) = self.settings(model)?;
        Ok((s.to_config(model.entry.family, model.denoiser.marginal())?, source))
    }
}

const DDCM_SOURCE: &str = "DDCM baseline (SPEC 4)";

fn algorithm_name(p: f64) -> &'static str {
    if p > 0.0 {
        "Algorithm 1"
    } else {
        "Algorithm 2"
    }
}

/// What `inspect` can tell of the settings that made a token file, which has no field for it:
/// whether its procedure is the DDCM baseline, the model's shipped profile or the defaults for
/// its p (each at the file's K, N and seed).
fn settings_source(tf: &TokenFile) -> String {
    let pr = &tf.procedure;
    let j0 = match pr.init {
        gddcm::format::InitStrategy::I3 { j0, .. } => Some(j0),
        _ => None,
    };
    let Ok(entry) = zoo::entry(&tf.model.name) else {
        return format!("unknown: model '{}' is not known here", tf.model.name);
    };
    let family = entry.family;
    let same = |cfg: &Config| {
        codec::procedure(cfg, family, pr.clip_x0, j0)
            .is_ok_and(|p| gddcm::format::Procedure { dtype: pr.dtype, ..p } == *pr)
    };
    if family == gddcm::family::Family::Ddpm && same(&Config::ddcm(pr.k, pr.seed)) {
        return DDCM_SOURCE.into();
    }
    let marginal = entry.marginal();
    let with_file = |s: Settings| Settings { k: pr.k, n: pr.n, seed: pr.seed, ..s };
    let matches = |s: Settings| with_file(s).to_config(family, &marginal).is_ok_and(|c| same(&c));
    let shipped = entry.shipped_profile(None).ok().flatten();
    if let Some((s, origin)) = &shipped {
        if matches(s.clone()) {
            return format!("shipped profile of {} ({origin}), at this K, N and seed", entry.name);
        }
    }
    if matches(Settings { p: pr.p, ..Settings::default() }) {
        return format!("defaults for p = {}, at this K, N and seed", pr.p);
    }
    format!(
        "other: not the DDCM baseline, {}the defaults for p = {} (a --profile file or flags)",
        if shipped.is_some() { "the shipped profile or " } else { "" },
        pr.p
    )
}

/// The compute device named by `--device`. The CUDA device is made once per process: each
/// `Device::new_cuda` is a distinct device to candle (own id, kernel cache, cuBLAS handle), so
/// a model loaded on one and its inputs made on another would not share resident tensors.
fn device(name: &str) -> Result<Device> {
    static CUDA: std::sync::OnceLock<Device> = std::sync::OnceLock::new();
    match name {
        "cpu" => Ok(Device::Cpu),
        "cuda" => {
            if let Some(d) = CUDA.get() {
                return Ok(d.clone());
            }
            let d = Device::new_cuda(0)
                .context("no CUDA device (build with --features cuda on a machine with an NVIDIA GPU)")?;
            Ok(CUDA.get_or_init(|| d).clone())
        }
        other => bail!("unknown device '{other}' (cpu or cuda)"),
    }
}

fn progress(run: &RunArgs, total: u64, what: &str) -> Option<ProgressBar> {
    if run.quiet {
        return None;
    }
    let pb = ProgressBar::new(total);
    pb.set_style(
        ProgressStyle::with_template("{msg} [{elapsed_precise}] {wide_bar} {pos}/{len} NFE (eta {eta})").unwrap(),
    );
    pb.set_message(what.to_string());
    Some(pb)
}

fn load_model(args: &ModelArgs, run: &RunArgs) -> Result<LoadedModel> {
    zoo::load(args.model.as_deref().unwrap_or(zoo::default_model()), args.weights.as_deref(), &device(&run.device)?)
}

fn stem(path: &Path) -> String {
    path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "image".into())
}

/// Groups indices of same-sized items into batches of at most `batch`, keeping order.
fn batches<T>(items: &[T], key: impl Fn(&T) -> (u32, u32), batch: usize) -> Vec<Vec<usize>> {
    let mut groups: Vec<((u32, u32), Vec<usize>)> = Vec::new();
    for (i, it) in items.iter().enumerate() {
        let k = key(it);
        match groups.iter_mut().find(|(gk, g)| *gk == k && g.len() < batch.max(1)) {
            Some((_, g)) => g.push(i),
            None => groups.push((k, vec![i])),
        }
    }
    groups.into_iter().map(|(_, g)| g).collect()
}

/// Encodes images to token files in `out`; returns the files, their paths and the inputs.
fn encode_images(
    model: &LoadedModel,
    cfg: &Config,
    paths: &[PathBuf],
    out: &Path,
    run: &RunArgs,
) -> Result<Vec<(PathBuf, TokenFile, Image)>> {
    let dev = device(&run.device)?;
    std::fs::create_dir_all(out).with_context(|| format!("cannot create output folder {}", out.display()))?;
    let images: Vec<Image> = paths.iter().map(|p| Image::load(p, model.entry.channels)).collect::<Result<_>>()?;
    let nfe = Tokenizer::new(model.denoiser.as_ref(), cfg, model.shape()).nfe() as u64;
    let groups = batches(&images, |i| (i.height as u32, i.width as u32), run.batch);
    let pb = progress(run, nfe * groups.len() as u64, "encode");
    let mut results: Vec<Option<(PathBuf, TokenFile, Image)>> = (0..images.len()).map(|_| None).collect();
    for g in groups {
        let batch: Vec<&Image> = g.iter().map(|&i| &images[i]).collect();
        let enc = codec::encode(model, cfg, &batch, &dev, pb.clone())
            .with_context(|| format!("encoding {}", paths[g[0]].display()))?;
        for (&i, file) in g.iter().zip(enc.files) {
            let path = out.join(format!("{}.gddcm", stem(&paths[i])));
            file.write_atomic(&path).with_context(|| format!("writing {}", path.display()))?;
            results[i] = Some((path, file, images[i].clone()));
        }
    }
    if let Some(pb) = pb {
        pb.finish_and_clear();
    }
    Ok(results.into_iter().flatten().collect())
}

/// Decodes token files (grouped into batches by procedure); all must name one model.
fn decode_files(
    files: &[TokenFile],
    weights: Option<&Path>,
    run: &RunArgs,
    loaded: Option<&LoadedModel>,
) -> Result<Vec<Image>> {
    let dev = device(&run.device)?;
    let owned;
    let model = match loaded {
        Some(m) => m,
        None => {
            owned = zoo::load(&files[0].model.name, weights, &dev).with_context(|| {
                format!(
                    "the files were made with model '{}' (weights sha256 {})",
                    files[0].model.name,
                    hex_prefix(&files[0].model.weights_sha256)
                )
            })?;
            &owned
        }
    };
    let key = |f: &TokenFile| (f.image.height, f.image.width);
    let mut groups: Vec<Vec<usize>> = Vec::new();
    for g in batches(files, key, run.batch) {
        // Within a size group, split further by procedure (e.g. different K or N).
        let mut sub: Vec<Vec<usize>> = Vec::new();
        for i in g {
            match sub.iter_mut().find(|s| {
                codec::config_from(&files[s[0]].procedure, model.entry.family).ok().map(|c| c.0)
                    == codec::config_from(&files[i].procedure, model.entry.family).ok().map(|c| c.0)
            }) {
                Some(s) => s.push(i),
                None => sub.push(vec![i]),
            }
        }
        groups.extend(sub);
    }
    let total: u64 = groups
        .iter()
        .map(|g| {
            codec::config_from(&files[g[0]].procedure, model.entry.family)
                .map(|(c, _)| Tokenizer::new(model.denoiser.as_ref(), &c, model.shape()).nfe() as u64)
                .unwrap_or(0)
        })
        .sum();
    let pb = progress(run, total, "decode");
    let mut out: Vec<Option<Image>> = vec![None; files.len()];
    for g in groups {
        let batch: Vec<&TokenFile> = g.iter().map(|&i| &files[i]).collect();
        for (&i, img) in g.iter().zip(codec::decode(model, &batch, &dev, pb.clone())?) {
            out[i] = Some(img);
        }
    }
    if let Some(pb) = pb {
        pb.finish_and_clear();
    }
    Ok(out.into_iter().flatten().collect())
}

fn hex_prefix(h: &[u8; 32]) -> String {
    h[..6].iter().map(|b| format!("{b:02x}")).collect()
}

fn to_metric(img: &Image) -> Result<ImageU8> {
    Ok(ImageU8::from_chw(img.channels, img.height, img.width, img.data.clone())?)
}

fn main() -> ExitCode {
    gddcm::runtime::prepare_process();
    let cli = Cli::parse();
    match gddcm::runtime::on_pool(|| run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Encode { images, output, model, tok } => {
            let model = load_model(&model, &tok.run)?;
            let (cfg, source) = tok.config(&model)?;
            let done = encode_images(&model, &cfg, &images, &output, &tok.run)?;
            for (path, file, _) in &done {
                println!(
                    "{}  {} tokens, {:.4} bpp ({} bytes)",
                    path.display(),
                    file.tokens.len(),
                    file.total_bpp(),
                    file.total_bits().div_ceil(8)
                );
            }
            println!("settings: {source}");
        }
        Command::Decode { files, output, weights, max_nfe, run } => {
            let tfs: Vec<TokenFile> = files
                .iter()
                .map(|p| TokenFile::read(p).with_context(|| format!("reading {}", p.display())))
                .collect::<Result<_>>()?;
            let first = &tfs[0].model;
            if let Some((p, _)) = files
                .iter()
                .zip(&tfs)
                .find(|(_, f)| f.model.name != first.name || f.model.weights_sha256 != first.weights_sha256)
            {
                bail!(
                    "{} was made with another model than {}; decode them separately",
                    p.display(),
                    files[0].display()
                );
            }
            codec::check_files(&files, &tfs, max_nfe)?;
            let images = decode_files(&tfs, weights.as_deref(), &run, None)?;
            for (p, img) in files.iter().zip(images) {
                let path = output.join(format!("{}.png", stem(p)));
                img.save_png(&path)?;
                println!("{}", path.display());
            }
        }
        Command::Roundtrip { images, output, model, tok } => {
            let model = load_model(&model, &tok.run)?;
            let (cfg, source) = tok.config(&model)?;
            let done = encode_images(&model, &cfg, &images, &output, &tok.run)?;
            // Decode from the files themselves, not the encoder's trajectory (SPEC 5, G4).
            let files: Vec<TokenFile> = done.iter().map(|(p, _, _)| TokenFile::read(p)).collect::<Result<_, _>>()?;
            let recon = decode_files(&files, None, &tok.run, Some(&model))?;
            println!("{:<32} {:>8} {:>9} {:>8} {:>8}", "image", "bpp", "file bpp", "PSNR", "SSIM");
            let (mut sp, mut ss, mut sb, mut sf) = (0.0, 0.0, 0.0, 0.0);
            for ((path, file, orig), rec) in done.iter().zip(&recon) {
                let (p, s) = (psnr(&to_metric(orig)?, &to_metric(rec)?)?, ssim(&to_metric(orig)?, &to_metric(rec)?)?);
                // Payload bpp counts the tokens (SPEC 6, as the paper); file bpp the whole file.
                let (bpp, fbpp) = (file.rate_bpp(), file.total_bpp());
                println!("{:<32} {:>8.4} {:>9.4} {:>8.2} {:>8.4}", stem(path), bpp, fbpp, p, s);
                Image::side_by_side(&[orig, rec], 2)?
                    .save_png(&output.join(format!("{}_roundtrip.png", stem(path))))?;
                (sp, ss, sb, sf) = (sp + p, ss + s, sb + bpp, sf + fbpp);
            }
            let n = done.len() as f64;
            println!("{:<32} {:>8.4} {:>9.4} {:>8.2} {:>8.4}", "mean", sb / n, sf / n, sp / n, ss / n);
            println!(
                "(model {}, K = {}, N = {}, p = {}; files and side-by-side PNGs in {})",
                model.entry.name,
                cfg.k,
                cfg.algorithm.tokens(),
                cfg.algorithm.p(),
                output.display()
            );
            println!("settings: {source}");
        }
        Command::Inspect { file, json } => {
            let tf = TokenFile::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let source = settings_source(&tf);
            if json {
                let mut v = serde_json::to_value(&tf)?;
                v["settings"] = source.into();
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                println!("{tf}");
                println!("settings: {source}");
            }
        }
        Command::Models { json } => {
            let rows: Vec<(zoo::ModelEntry, Option<zoo::Source>)> =
                zoo::entries().into_iter().map(|e| (e.find(None).ok(), e)).map(|(a, e)| (e, a)).collect();
            if json {
                let v: Vec<serde_json::Value> = rows
                    .iter()
                    .map(|(e, a)| {
                        let mut v = serde_json::to_value(e).unwrap_or_default();
                        v["available"] = serde_json::Value::Bool(a.is_some());
                        v["found"] = serde_json::to_value(a).unwrap_or_default();
                        v["searched"] = serde_json::to_value(e.candidate_dirs()).unwrap_or_default();
                        v
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                println!("{:<22} {:<5} {:<10} description", "model", "family", "weights");
                for (e, a) in &rows {
                    let default = if e.name == zoo::default_model() { " (default)" } else { "" };
                    println!(
                        "{:<22} {:<6} {:<10} {}{default}",
                        e.name,
                        e.family.to_string(),
                        match a {
                            Some(zoo::Source::Embedded) => "embedded",
                            Some(_) => "present",
                            None => "missing",
                        },
                        e.description
                    );
                    match a {
                        Some(zoo::Source::Folder(dir)) => println!("{:<29} found in {}", "", dir.display()),
                        Some(zoo::Source::Embedded) => {}
                        None => {
                            let dirs: Vec<String> =
                                e.candidate_dirs().iter().map(|d| d.display().to_string()).collect();
                            println!(
                                "{:<29} looked in {}",
                                "",
                                if dirs.is_empty() { "(nowhere)".into() } else { dirs.join(", ") }
                            );
                        }
                    }
                }
            }
        }
        Command::Eval { model, tok, data, metrics, json, keep, resume } => {
            let model = load_model(&model, &tok.run)?;
            let (cfg, source) = tok.config(&model)?;
            let ds = data.load(model.entry.channels)?;
            let batches = ds.images.len().div_ceil(tok.run.batch.max(1)) as u64;
            let nfe = 2 * Tokenizer::new(model.denoiser.as_ref(), &cfg, model.shape()).nfe() as u64 * batches;
            let pb = progress(&tok.run, nfe, "eval");
            let opts = metrics.options(tok.run.batch, keep, resume);
            let rep = evaluate(&model, &cfg, &ds, &opts, &device(&tok.run.device)?, pb.clone())?;
            if let Some(pb) = pb {
                pb.finish_and_clear();
            }
            print_report(&rep);
            println!("  settings: {source}");
            if let Some(path) = json {
                let mut v = serde_json::to_value(&rep)?;
                v["settings"] = source.into();
                write_json(&path, &v)?;
            }
        }
        Command::Table1 { models, data, metrics, k, n, markdown, json, keep, resume, rows, run } => {
            let names: Vec<String> = if models.is_empty() {
                zoo::entries()
                    .iter()
                    .filter(|e| e.bundled_dir.is_some() || e.available(None))
                    .map(|e| e.name.to_string())
                    .collect()
            } else {
                models
            };
            let dev = device(&run.device)?;
            let mut reports = Vec::new();
            let mut table = format!("{}\n", EvalReport::markdown_header());
            for name in &names {
                let model = zoo::load(name, None, &dev)?;
                let ds = data.load(model.entry.channels)?;
                let base = model.profile()?.unwrap_or_default();
                for p in [0.0, 0.5] {
                    let row_name = format!("{name}:{p}");
                    if !rows.is_empty() && !rows.contains(&row_name) {
                        continue;
                    }
                    // p = 0: the model's profile; p = ½: Algorithm 1 from seeded noise (for
                    // DDPM exactly the DDCM baseline, SPEC 4).
                    let s = gddcm::rd::point_settings(&base, p, k, n);
                    let cfg = s.to_config(model.entry.family, model.denoiser.marginal())?;
                    let batches = ds.images.len().div_ceil(run.batch.max(1)) as u64;
                    let nfe = 2 * Tokenizer::new(model.denoiser.as_ref(), &cfg, model.shape()).nfe() as u64 * batches;
                    let pb = progress(&run, nfe, &format!("{name} p={p}"));
                    let row_keep = keep.as_ref().map(|d| d.join(format!("{name}-p{p}")));
                    let opts = metrics.options(run.batch, row_keep, resume);
                    let rep = evaluate(&model, &cfg, &ds, &opts, &dev, pb.clone())?;
                    if let Some(pb) = pb {
                        pb.finish_and_clear();
                    }
                    let ddcm = model.entry.family == gddcm::family::Family::Ddpm && p == 0.5;
                    let row = rep.markdown_row(if ddcm { "= DDCM baseline" } else { "" });
                    println!("{row}");
                    table.push_str(&row);
                    table.push('\n');
                    reports.push(rep);
                }
            }
            println!("\n{table}");
            println!("({} images of {} {:?}, K = {k}, N = {n})", data.limit, data.data, data.split);
            if let Some(path) = markdown {
                write_atomic(&path, table.as_bytes())?;
            }
            if let Some(path) = json {
                write_json(&path, &serde_json::to_value(&reports)?)?;
            }
        }
        Command::Sample { model, n, output, seed, steps, run } => {
            let model = load_model(&model, &run)?;
            let dev = device(&run.device)?;
            let pb = progress(&run, 0, "sample");
            let images = codec::generate(&model, n, seed, steps, &dev, pb)?;
            let cols = (n as f64).sqrt().ceil() as usize;
            let grid = Image::grid(&images, cols)?;
            grid.save_png(&output)?;
            println!("{} ({} samples of {})", output.display(), n, model.entry.name);
        }
        // ---- tools: search, rd, bench ----
        Command::Search(args) => run_search(args)?,
        Command::Rd(args) => run_rd(args)?,
        Command::Bench(args) => run_bench(args)?,
    }
    Ok(())
}

fn write_json(path: &Path, value: &serde_json::Value) -> Result<()> {
    write_atomic(path, serde_json::to_string_pretty(value)?.as_bytes())
}

// ---- tools: search, rd, bench (issues 5 and 6) ----

#[derive(Args, Clone)]
struct SearchArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Validation images: the first VAL images of the training split (SPEC 8; never the test set).
    #[arg(long, default_value_t = 128)]
    val: usize,
    /// `fmnist` (its training split), or a folder of validation images (taken as they are).
    #[arg(long, default_value = "fmnist")]
    data: String,
    /// Random configurations (SPEC 8: about 200).
    #[arg(long, default_value_t = 200)]
    trials: usize,
    /// Rounds of coordinate refinement after the random phase.
    #[arg(long, default_value_t = 1)]
    refine: usize,
    /// Codebook size K (fixed during the search).
    #[arg(short = 'k', long, default_value_t = 256)]
    k: u32,
    /// Tokens N (fixed during the search).
    #[arg(short = 'n', long, default_value_t = 300)]
    n: u32,
    /// 0 searches Algorithm 2's space; p > 0 Algorithm 1's, with p among 0.1, 0.25, 0.5, 0.75, 0.9
    /// (starting from this p) unless --fix-p.
    #[arg(short = 'p', long, default_value_t = 0.0)]
    p: f64,
    /// Keep p fixed at --p (Algorithm 1 only).
    #[arg(long)]
    fix_p: bool,
    /// Seed of the configuration sampler.
    #[arg(long, default_value_t = 0x5EA4_C400)]
    search_seed: u64,
    /// What to minimise (auto: LPIPS if its weights are present, else an offline stand-in).
    #[arg(long, value_enum)]
    objective: Option<gddcm::search::ObjectiveMetric>,
    /// Folder with the LPIPS weight files (alexnet-owt-7be5be79.pth, lpips alex.pth).
    #[arg(long)]
    metric_weights: Option<PathBuf>,
    /// The best settings, as a profile file.
    #[arg(short, long, default_value = "profile.json")]
    output: PathBuf,
    /// The log of every trial (default: beside the profile, `<name>.trials.json`).
    #[arg(long)]
    log: Option<PathBuf>,
    #[command(flatten)]
    run: RunArgs,
}

fn run_search(args: SearchArgs) -> Result<()> {
    use gddcm::search::{random_then_coordinate, ObjectiveMetric, SearchOptions, SearchSpace};
    if !(0.0..1.0).contains(&args.p) {
        bail!("--p must be in [0, 1), found {}", args.p);
    }
    if args.fix_p && args.p == 0.0 {
        bail!("--fix-p needs a p > 0 (p = 0 is always fixed)");
    }
    if args.trials == 0 && args.refine == 0 {
        bail!("nothing to do: --trials 0 and --refine 0");
    }
    let model = load_model(&args.model, &args.run)?;
    let dev = device(&args.run.device)?;
    let data = if args.data == "fmnist" {
        gddcm::data::fashion_mnist(Path::new(gddcm::data::FASHION_MNIST_DIR), Split::Val, args.val)?
    } else {
        gddcm::data::image_folder(Path::new(&args.data), model.entry.channels, args.val)?
    };
    if data.images.is_empty() {
        bail!("the validation set is empty (--val {})", args.val);
    }
    let (c, size, _) = model.shape();
    let (metric, note) = match args.objective {
        Some(m) => (m, format!("{m:?} (requested)")),
        None => ObjectiveMetric::auto(args.metric_weights.as_deref(), None, c, size),
    };
    eprintln!("objective: {note}; {} validation images ({} {:?})", data.images.len(), args.data, Split::Val);
    let family = model.entry.family;
    let marginal = model.denoiser.marginal().clone();
    let mut space =
        if args.p > 0.0 { SearchSpace::stochastic(family, marginal) } else { SearchSpace::p_zero(family, marginal) };
    if args.fix_p {
        space.p_values = vec![args.p];
    }
    let mut base = model.profile()?.unwrap_or_default();
    if (base.p > 0.0) != (args.p > 0.0) {
        // The profile is for the other algorithm: its times mean something else.
        (base.t_start, base.t_end, base.grid_rho) = (None, None, None);
    }
    (base.k, base.n, base.p) = (args.k, args.n, args.p);
    let opts = EvalOptions { batch: args.run.batch, weights_dir: args.metric_weights.clone(), ..Default::default() };
    let sopts = SearchOptions { trials: args.trials, refine_rounds: args.refine, seed: args.search_seed };
    let log_path = args.log.clone().unwrap_or_else(|| args.output.with_extension("trials.json"));
    let header = serde_json::json!({
        "model": model.entry.name,
        "family": family.to_string(),
        "weights_sha256": model.weights_sha256.iter().map(|b| format!("{b:02x}")).collect::<String>(),
        "objective": metric,
        "objective_note": note,
        "validation": { "data": args.data, "split": "val (training split)", "images": data.images.len() },
        "k": args.k, "n": args.n, "p_mode": if args.p > 0.0 { "alg1" } else { "alg2" },
        "search_seed": args.search_seed, "random_trials": args.trials, "refine_rounds": args.refine,
    });
    let started = std::time::Instant::now();
    let mut log: Vec<serde_json::Value> = Vec::new();
    let total = 1 + args.trials;
    let objective = |s: &Settings| -> Result<f64> {
        let cfg = s.to_config(family, model.denoiser.marginal())?;
        gddcm::search::score_images(&model, &cfg, &data, metric, &opts, &dev)
    };
    let result = random_then_coordinate(&base, &space, &sopts, objective, |t, best| {
        let score = t.score.map(|v| format!("{v:.5}")).unwrap_or_else(|| "failed".into());
        let best = best.map(|v| format!("{v:.5}")).unwrap_or_else(|| "—".into());
        let of = if t.index < total { format!("/{total}") } else { String::new() };
        if !args.run.quiet {
            eprintln!(
                "trial {}{of} {:?}{} score {score} (best {best}) [{:.0} s]{}",
                t.index,
                t.phase,
                t.coordinate.map(|c| format!(" {c:?}")).unwrap_or_default(),
                started.elapsed().as_secs_f64(),
                t.error.as_deref().map(|e| format!(" — {e}")).unwrap_or_default()
            );
        }
        log.push(serde_json::to_value(t).unwrap_or_default());
        // Checkpoint the log after every trial: a long search interrupted keeps its trials.
        let mut v = header.clone();
        v["trials"] = serde_json::Value::Array(log.clone());
        if let Err(e) = write_json(&log_path, &v) {
            eprintln!("warning: cannot write the trial log: {e:#}");
        }
    })?;
    write_json(&args.output, &serde_json::to_value(&result.best)?)?;
    let mut v = header;
    v["trials"] = serde_json::to_value(&result.trials)?;
    v["best"] = serde_json::to_value(&result.best)?;
    v["best_score"] = result.best_score.into();
    v["base_score"] = result.base_score.into();
    v["seconds"] = started.elapsed().as_secs_f64().into();
    write_json(&log_path, &v)?;
    println!(
        "best {} = {:.5} (starting settings: {}) after {} trials in {:.0} s",
        serde_json::to_string(&metric)?.trim_matches('"'),
        result.best_score,
        result.base_score.map(|v| format!("{v:.5}")).unwrap_or_else(|| "invalid".into()),
        result.trials.len(),
        started.elapsed().as_secs_f64()
    );
    println!("profile: {}\ntrial log: {}", args.output.display(), log_path.display());
    Ok(())
}

#[derive(Args, Clone)]
struct RdArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Codebook sizes K.
    #[arg(short = 'k', long, value_delimiter = ',', default_values_t = [2u32, 16, 256, 4096])]
    k: Vec<u32>,
    /// Token counts N.
    #[arg(short = 'n', long, value_delimiter = ',', default_values_t = [50u32, 100, 300])]
    n: Vec<u32>,
    /// Values of p: 0 uses the model's profile; p > 0 Algorithm 1 from the largest time.
    #[arg(short = 'p', long, value_delimiter = ',', default_values_t = [0.0, 0.5])]
    p: Vec<f64>,
    #[command(flatten)]
    data: DataArgs,
    /// Metrics at each point.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [Metric::Pixel, Metric::Classifier])]
    metrics: Vec<Metric>,
    /// Folder with the metric weight files (for lpips or fid).
    #[arg(long)]
    metric_weights: Option<PathBuf>,
    /// Output prefix: PREFIX.json, PREFIX.svg, PREFIX.png.
    #[arg(short, long, default_value = "rd")]
    output: PathBuf,
    #[command(flatten)]
    run: RunArgs,
}

fn run_rd(args: RdArgs) -> Result<()> {
    if let Some(p) = args.p.iter().find(|p| !(0.0..1.0).contains(*p)) {
        bail!("every p must be in [0, 1), found {p}");
    }
    if let Some(k) = args.k.iter().find(|k| **k < 2) {
        bail!("every K must be at least 2, found {k}");
    }
    if args.n.contains(&0) {
        bail!("every N must be at least 1");
    }
    let model = load_model(&args.model, &args.run)?;
    let dev = device(&args.run.device)?;
    let ds = args.data.load(model.entry.channels)?;
    let opts = EvalOptions {
        metrics: args.metrics.clone(),
        batch: args.run.batch,
        weights_dir: args.metric_weights.clone(),
        ..Default::default()
    };
    let with_ext = |e: &str| {
        let mut s = args.output.clone().into_os_string();
        s.push(format!(".{e}"));
        PathBuf::from(s)
    };
    let (json, svg, png) = (with_ext("json"), with_ext("svg"), with_ext("png"));
    let total = args.p.len() * args.k.len() * args.n.len();
    let started = std::time::Instant::now();
    println!(
        "{:>5} {:>6} {:>5} {:>8} {:>8} {:>7} {:>9} {:>8}",
        "p", "K", "N", "bpp", "PSNR", "SSIM", "clf-FD", "enc im/s"
    );
    let sweep = gddcm::rd::sweep(&model, &args.p, &args.k, &args.n, &ds, &opts, &dev, |sw| {
        let pt = sw.points.last().expect("a point");
        let r = &pt.report;
        let f = |v: Option<f64>, p: usize| v.map(|x| format!("{x:.p$}")).unwrap_or_else(|| "—".into());
        println!(
            "{:>5} {:>6} {:>5} {:>8.4} {:>8} {:>7} {:>9} {:>8.2}   [{}/{total}, {:.0} s]",
            pt.p,
            pt.k,
            pt.n,
            r.bpp,
            f(r.psnr, 2),
            f(r.ssim, 4),
            f(r.classifier_fd, 2),
            r.encode_images_per_s,
            sw.points.len(),
            started.elapsed().as_secs_f64()
        );
        // Checkpoint: an interrupted sweep keeps its points.
        if let Err(e) = serde_json::to_value(sw).map_err(anyhow::Error::from).and_then(|v| write_json(&json, &v)) {
            eprintln!("warning: cannot write {}: {e:#}", json.display());
        }
    })?;
    write_json(&json, &serde_json::to_value(&sweep)?)?;
    let text = gddcm::rd::plot(&sweep, &svg, &png)?;
    println!(
        "{} points of {} on {} images ({} {:?}) in {:.0} s; p = 0 settings: {}",
        sweep.points.len(),
        sweep.model,
        sweep.images,
        args.data.data,
        args.data.split,
        started.elapsed().as_secs_f64(),
        sweep.p0_settings
    );
    println!("{}\n{}\n{}", json.display(), svg.display(), png.display());
    if !text {
        println!("(no TrueType font found: the PNG has no text; the SVG has the labels; set GDDCM_FONT=FILE.ttf)");
    }
    Ok(())
}

#[derive(Args, Clone)]
struct BenchArgs {
    /// Models to time (default: the bundled models whose weights are present).
    #[arg(short, long = "model", value_delimiter = ',')]
    models: Vec<String>,
    /// Weights folder or file, used for every model given (e.g. one test network).
    #[arg(long)]
    weights: Option<PathBuf>,
    /// Tokens N.
    #[arg(short = 'n', long, default_value_t = 300)]
    n: u32,
    /// Batch sizes.
    #[arg(long, value_delimiter = ',', default_values_t = [1usize, 64])]
    batch: Vec<usize>,
    /// Codebook size K (default: the model's profile, else 256).
    #[arg(short = 'k', long)]
    k: Option<u32>,
    /// p (default: the model's profile, else 0).
    #[arg(short = 'p', long)]
    p: Option<f64>,
    /// Write the rows as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Compute device.
    #[arg(long, default_value = "cpu")]
    device: String,
}

/// One row of `gddcm bench`: one model, one batch size.
#[derive(serde::Serialize)]
struct BenchRow {
    model: String,
    family: String,
    batch: usize,
    k: u32,
    n: u64,
    p: f64,
    nfe_per_batch: u64,
    /// "fmnist test" or "random" images.
    images: &'static str,
    encode_s: f64,
    encode_images_per_s: f64,
    encode_network_s: f64,
    encode_codebook_s: f64,
    encode_rest_s: f64,
    decode_s: f64,
    decode_images_per_s: f64,
    decode_network_s: f64,
    decode_codebook_s: f64,
    decode_rest_s: f64,
    decode_matches_encoder: bool,
}

/// `b` images in the model's input range: Fashion-MNIST test images if present and sized for
/// the model, else seeded uniform noise in [−1, 1].
fn bench_images(model: &LoadedModel, b: usize, dev: &Device) -> Result<(candle_core::Tensor, &'static str)> {
    let (c, s, _) = model.shape();
    if let Ok(ds) = gddcm::data::fashion_mnist(Path::new(gddcm::data::FASHION_MNIST_DIR), Split::Test, b) {
        let (h, w) = (ds.images[0].height, ds.images[0].width);
        if c == 1 && ds.images.len() == b {
            if let Ok(pad) = codec::padding_for(model, h, w) {
                let data: Vec<f32> = ds.images.iter().flat_map(|i| i.to_model(pad, codec::PAD_VALUE)).collect();
                return Ok((candle_core::Tensor::from_vec(data, (b, c, s, s), dev)?, "fmnist test"));
            }
        }
    }
    let cb = gddcm::codebook::Codebooks::new(0xBE4C, c * s * s);
    let data: Vec<f32> = (0..b as u32).flat_map(|j| cb.entry(3, 0, j)).map(|v| (v * 0.5).clamp(-1.0, 1.0)).collect();
    Ok((candle_core::Tensor::from_vec(data, (b, c, s, s), dev)?, "random"))
}

fn run_bench(args: BenchArgs) -> Result<()> {
    use gddcm::tokenizer::Timings;
    use std::sync::Arc;
    use std::time::Instant;
    if args.batch.is_empty() || args.batch.contains(&0) {
        bail!("batch sizes must be at least 1");
    }
    if args.n == 0 {
        bail!("N must be at least 1");
    }
    let names: Vec<String> = if args.models.is_empty() {
        let present: Vec<String> = zoo::entries()
            .iter()
            .filter(|e| e.bundled_dir.is_some() && e.available(args.weights.as_deref()))
            .map(|e| e.name.to_string())
            .collect();
        if present.is_empty() {
            bail!("no bundled model weights found; name models with --model (and --weights)");
        }
        present
    } else {
        args.models.clone()
    };
    let dev = device(&args.device)?;
    let mut rows = Vec::new();
    println!(
        "{:<14} {:>5} {:>5} {:>5} {:>4} | {:>9} {:>6} {:>6} {:>6} | {:>9} {:>6} {:>6} {:>6}",
        "model", "batch", "K", "N", "p", "enc im/s", "net%", "cb%", "rest%", "dec im/s", "net%", "cb%", "rest%"
    );
    for name in &names {
        let model = zoo::load(name, args.weights.as_deref(), &dev)?;
        let mut s = model.profile()?.unwrap_or_default();
        s.n = args.n;
        if let Some(k) = args.k {
            s.k = k;
        }
        if let Some(p) = args.p {
            if (p > 0.0) != (s.p > 0.0) {
                (s.t_start, s.t_end, s.grid_rho) = (None, None, None);
            }
            s.p = p;
        }
        let cfg = s.to_config(model.entry.family, model.denoiser.marginal())?;
        for &b in &args.batch {
            let (x, images) = bench_images(&model, b, &dev)?;
            let timings = Arc::new(Timings::default());
            let mut tok = Tokenizer::new(model.denoiser.as_ref(), &cfg, model.shape());
            tok.timings = Some(timings.clone());
            let t0 = Instant::now();
            let enc = tok.encode(&x)?;
            let encode_s = t0.elapsed().as_secs_f64();
            let (enc_net, enc_cb, nfe) =
                (timings.network_s(), timings.codebook_s(), timings.nfe.load(Ordering::Relaxed));
            timings.reset();
            let t1 = Instant::now();
            let dec = tok.decode(&enc.tokens, &dev)?;
            let decode_s = t1.elapsed().as_secs_f64();
            let (dec_net, dec_cb) = (timings.network_s(), timings.codebook_s());
            let same = (&dec - &enc.reconstruction)?.abs()?.max_all()?.to_scalar::<f32>()? == 0.0;
            let row = BenchRow {
                model: name.clone(),
                family: model.entry.family.to_string(),
                batch: b,
                k: cfg.k,
                n: cfg.algorithm.tokens(),
                p: cfg.algorithm.p(),
                nfe_per_batch: nfe,
                images,
                encode_s,
                encode_images_per_s: b as f64 / encode_s,
                encode_network_s: enc_net,
                encode_codebook_s: enc_cb,
                encode_rest_s: (encode_s - enc_net - enc_cb).max(0.0),
                decode_s,
                decode_images_per_s: b as f64 / decode_s,
                decode_network_s: dec_net,
                decode_codebook_s: dec_cb,
                decode_rest_s: (decode_s - dec_net - dec_cb).max(0.0),
                decode_matches_encoder: same,
            };
            let pc = |v: f64, t: f64| 100.0 * v / t;
            println!(
                "{:<14} {:>5} {:>5} {:>5} {:>4} | {:>9.3} {:>6.1} {:>6.1} {:>6.1} | {:>9.3} {:>6.1} {:>6.1} {:>6.1}",
                row.model,
                b,
                row.k,
                row.n,
                row.p,
                row.encode_images_per_s,
                pc(enc_net, encode_s),
                pc(enc_cb, encode_s),
                pc(row.encode_rest_s, encode_s),
                row.decode_images_per_s,
                pc(dec_net, decode_s),
                pc(dec_cb, decode_s),
                pc(row.decode_rest_s, decode_s)
            );
            if !same {
                eprintln!("warning: {name} batch {b}: the decode differs from the encoder's reconstruction");
            }
            rows.push(row);
        }
    }
    let threads = std::env::var("RAYON_NUM_THREADS").unwrap_or_default();
    println!("({} on {} threads; images: {})", args.device, threads, rows.first().map(|r| r.images).unwrap_or("-"));
    if let Some(path) = &args.json {
        write_json(path, &serde_json::json!({ "device": args.device, "threads": threads, "rows": rows }))?;
    }
    Ok(())
}
