//! `gddcm search`: the tokenizer parameter search on a validation set.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use clap::Args;

use gddcm::data::Split;
use gddcm::eval::EvalOptions;
use gddcm::profile::Settings;

use super::args::{ModelArgs, RunArgs};
use super::common::{device, load_model, write_json};

#[derive(Args, Clone)]
pub struct SearchArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Validation images: the first VAL images of the training split (never the test set).
    #[arg(long, default_value_t = 128)]
    pub val: usize,
    /// `fmnist` (its training split), or a folder of validation images (taken as they are).
    #[arg(long, default_value = "fmnist")]
    pub data: String,
    /// Random configurations (about 200 is usual).
    #[arg(long, default_value_t = 200)]
    pub trials: usize,
    /// Rounds of coordinate refinement after the random phase.
    #[arg(long, default_value_t = 1)]
    pub refine: usize,
    /// Codebook size K (fixed during the search).
    #[arg(short = 'k', long, default_value_t = 256)]
    pub k: u32,
    /// Tokens N (fixed during the search).
    #[arg(short = 'n', long, default_value_t = 300)]
    pub n: u32,
    /// Atoms per step (fixed during the search): single, topm:M or pursuit:M:C.
    #[arg(long, default_value = "single")]
    pub atoms: gddcm::atoms::AtomRule,
    /// 0 searches Algorithm 2's space; p > 0 Algorithm 1's, with p among 0.1, 0.25, 0.5, 0.75, 0.9
    /// (starting from this p) unless --fix-p.
    #[arg(short = 'p', long, default_value_t = 0.0)]
    pub p: f64,
    /// Keep p fixed at --p (Algorithm 1 only).
    #[arg(long)]
    pub fix_p: bool,
    /// Settings to start from (a profile file; default: the model's shipped profile). Its fields
    /// that the search space does not cover (x_ref, score region, seed) are kept.
    #[arg(long)]
    pub start: Option<PathBuf>,
    /// The reference image of I2/I3 during the whole search (default: the start's).
    #[arg(long, value_enum)]
    pub x_ref: Option<gddcm::profile::XRefKind>,
    /// Where the codeword choice is scored during the whole search (default: the start's).
    #[arg(long, value_enum)]
    pub score_region: Option<gddcm::profile::ScoreKind>,
    /// Seed of the configuration sampler.
    #[arg(long, default_value_t = 0x5EA4_C400)]
    pub search_seed: u64,
    /// What to minimise (auto: LPIPS if its weights are present, else an offline stand-in).
    #[arg(long, value_enum)]
    pub objective: Option<gddcm::search::ObjectiveMetric>,
    /// Folder with the LPIPS weight files (alexnet-owt-7be5be79.pth, lpips alex.pth).
    #[arg(long)]
    pub metric_weights: Option<PathBuf>,
    /// The best settings, as a profile file.
    #[arg(short, long, default_value = "profile.json")]
    pub output: PathBuf,
    /// The log of every trial (default: beside the profile, `<name>.trials.json`).
    #[arg(long)]
    pub log: Option<PathBuf>,
    #[command(flatten)]
    pub run: RunArgs,
}

pub fn run(args: SearchArgs) -> Result<()> {
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
    // A bad starting profile is reported before the model loads.
    let start = args.start.as_deref().map(Settings::load).transpose()?;
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
    metric.check(&data, c, size)?;
    eprintln!("objective: {note}; {} validation images ({} {:?})", data.images.len(), args.data, Split::Val);
    let family = model.entry.family;
    let marginal = model.denoiser.marginal().clone();
    let mut space =
        if args.p > 0.0 { SearchSpace::stochastic(family, marginal) } else { SearchSpace::p_zero(family, marginal) };
    if args.fix_p {
        space.p_values = vec![args.p];
    }
    let mut base = match start {
        Some(s) => s,
        None => model.profile()?.unwrap_or_default(),
    };
    if let Some(x_ref) = args.x_ref {
        base.x_ref = x_ref;
    }
    if let Some(region) = args.score_region {
        base.score_region = region;
    }
    if (base.p > 0.0) != (args.p > 0.0) {
        // The profile is for the other algorithm: its times mean something else.
        (base.t_start, base.t_end, base.grid_rho) = (None, None, None);
    }
    (base.k, base.n, base.p, base.atoms) = (args.k, args.n, args.p, args.atoms);
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
        "k": args.k, "n": args.n, "atoms": args.atoms, "p_mode": if args.p > 0.0 { "alg1" } else { "alg2" },
        "search_seed": args.search_seed, "random_trials": args.trials, "refine_rounds": args.refine,
        "start": args.start.as_ref().map(|p| p.display().to_string()),
        "x_ref": base.x_ref, "score_region": base.score_region,
    });
    let started = std::time::Instant::now();
    let mut log: Vec<serde_json::Value> = Vec::new();
    let total = 1 + args.trials;
    let objective = |s: &Settings| -> Result<f64> {
        let cfg = model.config(s)?;
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
