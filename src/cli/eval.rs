//! `gddcm eval` (one model on a dataset) and `gddcm table1` (the paper's Table 1).

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;

use gddcm::codec;
use gddcm::data::{write_atomic, Dataset};
use gddcm::eval::{evaluate, EvalReport};
use gddcm::tokenizer::Tokenizer;
use gddcm::zoo;
use gddcm::zoo::LoadedModel;

use super::args::{DataArgs, FitArg, FitArgs, MetricArgs, ModelArgs, RunArgs, TokenizerArgs};
use super::common::{check_output_file, device, load_model, progress, write_json, OutputDir};

#[derive(Args)]
pub struct EvalArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub tok: TokenizerArgs,
    #[command(flatten)]
    pub data: DataArgs,
    #[command(flatten)]
    pub metrics: MetricArgs,
    #[command(flatten)]
    pub fit: FitArgs,
    /// Write the report as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Keep the token files and reconstructions in this folder.
    #[arg(long)]
    pub keep: Option<PathBuf>,
    /// Reuse the images an interrupted run already finished in the --keep folder.
    #[arg(long, requires = "keep")]
    pub resume: bool,
}

pub fn run(args: EvalArgs) -> Result<()> {
    let EvalArgs { model, tok, data, metrics, fit, json, keep, resume } = args;
    let model = load_model(&model, &tok.run)?;
    let (cfg, source) = tok.config(&model)?;
    if let Some(path) = &json {
        check_output_file(path)?;
    }
    if let Some(dir) = &keep {
        OutputDir::prepare(dir)?.keep();
    }
    let ds = fit_dataset(&model, data.load(model.entry.name, model.entry.channels)?, &data, fit.fit)?;
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
    Ok(())
}

#[derive(Args)]
pub struct Table1Args {
    /// Models (default: the four bundled ones, plus published ones whose weights are present).
    #[arg(long, value_delimiter = ',')]
    pub models: Vec<String>,
    #[command(flatten)]
    pub data: DataArgs,
    #[command(flatten)]
    pub metrics: MetricArgs,
    /// Codebook size K for every row.
    #[arg(short = 'k', long, default_value_t = 256)]
    pub k: u32,
    /// Tokens N for every row.
    #[arg(short = 'n', long, default_value_t = 300)]
    pub n: u32,
    /// Write the Markdown table here (also printed).
    #[arg(long)]
    pub markdown: Option<PathBuf>,
    /// Write all reports as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Keep each row's token files and reconstructions in DIR/MODEL-pP.
    #[arg(long)]
    pub keep: Option<PathBuf>,
    /// Reuse the images an interrupted run already finished in the --keep folders, so a
    /// long table can be computed in several sittings (or rows in parallel processes).
    #[arg(long, requires = "keep")]
    pub resume: bool,
    /// Compute only these rows (e.g. `fmnist-edm:0,fmnist-ddpm:0.5`); default all.
    #[arg(long, value_delimiter = ',')]
    pub rows: Vec<String>,
    #[command(flatten)]
    pub run: RunArgs,
}

pub fn run_table1(args: Table1Args) -> Result<()> {
    let Table1Args { models, data, metrics, k, n, markdown, json, keep, resume, rows, run } = args;
    let names: Vec<String> = if models.is_empty() {
        zoo::entries()
            .iter()
            .filter(|e| e.bundled_dir.is_some() || e.available(None))
            .map(|e| e.name.to_string())
            .collect()
    } else {
        models
    };
    for path in markdown.iter().chain(&json) {
        check_output_file(path)?;
    }
    let dev = device(&run.device)?;
    let mut reports = Vec::new();
    let mut table = format!("{}\n", EvalReport::markdown_header());
    for name in &names {
        let model = zoo::load(name, None, &dev)?;
        let ds = data.load(model.entry.name, model.entry.channels)?;
        let base = model.profile()?.unwrap_or_default();
        let rungs = gddcm::rate::ladder(&model)?;
        for p in [0.0, 0.5] {
            let row_name = format!("{name}:{p}");
            if !rows.is_empty() && !rows.contains(&row_name) {
                continue;
            }
            // Each row at its own searched settings when the model ships an operating point with
            // this p at this K and N (issue 16), the newest (highest id) when several do:
            // points are only ever added, so a later search supersedes an earlier one without
            // changing the files that name the old point. Else p = 0: the model's profile, and
            // p = ½: Algorithm 1 from seeded noise (for DDPM exactly the DDCM baseline, SPEC 4).
            let searched = gddcm::rate::newest_point(&rungs, k, n, p);
            let (s, note) = match searched {
                Some(r) => (r.point.settings.clone(), format!("searched: point {} '{}'", r.point.id, r.point.name)),
                None if model.entry.family == gddcm::family::Family::Ddpm && p == 0.5 => {
                    (gddcm::rd::point_settings(&base, p, k, n), "= DDCM baseline".to_string())
                }
                None if p > 0.0 => (gddcm::rd::point_settings(&base, p, k, n), "unsearched (T_r = max, I1)".into()),
                None => (gddcm::rd::point_settings(&base, p, k, n), "profile.json".into()),
            };
            let cfg = model.config(&s)?;
            let batches = ds.images.len().div_ceil(run.batch.max(1)) as u64;
            let nfe = 2 * Tokenizer::new(model.denoiser.as_ref(), &cfg, model.shape()).nfe() as u64 * batches;
            let pb = progress(&run, nfe, &format!("{name} p={p}"));
            let row_keep = keep.as_ref().map(|d| d.join(format!("{name}-p{p}")));
            let opts = metrics.options(run.batch, row_keep, resume);
            let rep = evaluate(&model, &cfg, &ds, &opts, &dev, pb.clone())?;
            if let Some(pb) = pb {
                pb.finish_and_clear();
            }
            let row = rep.markdown_row(&note);
            println!("{row}");
            table.push_str(&row);
            table.push('\n');
            let mut v = serde_json::to_value(&rep)?;
            v["settings_source"] = serde_json::Value::String(note);
            reports.push(v);
        }
    }
    println!("\n{table}");
    println!("({} images of {} {:?}, K = {k}, N = {n})", data.limit, data.data, data.split);
    if let Some(path) = markdown {
        write_atomic(&path, table.as_bytes())?;
    }
    if let Some(path) = json {
        write_json(&path, &serde_json::Value::Array(reports))?;
    }
    Ok(())
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
    println!(
        "  speed: encode {:.3} images/s, decode {:.3} images/s ({} network evaluations per image)",
        r.encode_images_per_s, r.decode_images_per_s, r.nfe
    );
    for s in &r.skipped {
        println!("  skipped {s}");
    }
}

/// The data set at one size the model takes: as it is when every image shares one such size,
/// else with `--fit` every image not of the model's size fitted to it, else an error naming
/// the images that cannot be batched with the first.
fn fit_dataset(model: &LoadedModel, mut ds: Dataset, data: &DataArgs, fit: Option<FitArg>) -> Result<Dataset> {
    let Some(first) = ds.images.first().map(|i| (i.height, i.width)) else { return Ok(ds) };
    let takes = |i: &gddcm::data::Image| codec::padding_for(model, i.height, i.width).is_ok();
    if ds.images.iter().all(|i| (i.height, i.width) == first && takes(i)) {
        return Ok(ds);
    }
    let n = model.entry.size - 2 * model.entry.pad;
    let Some(f) = fit else {
        let names: Vec<String> = match gddcm::data::image_paths(std::path::Path::new(&data.data), data.limit) {
            Ok(paths) if data.data != "fmnist" => paths.iter().map(|p| p.display().to_string()).collect(),
            _ => ds.names.clone(),
        };
        let bad: Vec<String> = ds
            .images
            .iter()
            .zip(&names)
            .filter(|(i, _)| (i.height, i.width) != first || !takes(i))
            .map(|(i, name)| format!("{name} ({}×{})", i.width, i.height))
            .take(10)
            .collect();
        bail!(
            "the images must share one size that model '{}' takes ({n}×{n}; the first is {}×{}), and these \
             do not: {}; --fit crop, pad or resize scales them to {n}×{n}",
            model.entry.name,
            first.1,
            first.0,
            bad.join(", ")
        );
    };
    for img in &mut ds.images {
        if (img.height, img.width) != (n, n) {
            *img = img.fitted(f.mode(), n);
        }
    }
    Ok(ds)
}
