//! `gddcm encode`: images → token files.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;

use gddcm::codec;
use gddcm::data::Image;
use gddcm::format::{Fit, TokenFile};
use gddcm::tokenizer::{Config, Tokenizer};
use gddcm::zoo::LoadedModel;

use super::args::{FitArg, FitArgs, ModelArgs, RunArgs, TokenizerArgs, TOKENIZER_FLAGS};
use super::common::{batches, check_outputs, device, load_model, progress, stem, OutputDir};

#[derive(Args)]
pub struct EncodeArgs {
    /// PNG or JPEG images (grayscale, RGB, with or without alpha), of the model's size or
    /// smaller by an even margin (padded with the background); other sizes need --fit.
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
    /// Output folder for the token files (NAME.gddcm for NAME.png).
    #[arg(short, long)]
    pub output: PathBuf,
    /// Overwrite token files that exist already (otherwise the run stops before any work).
    #[arg(long)]
    pub force: bool,
    /// Rate control by quality: per image, the smallest shipped operating point whose
    /// reconstruction reaches this PSNR (dB); an image no point brings there gets the largest
    /// point, and the output says so.
    #[arg(long, allow_negative_numbers = true, conflicts_with_all = TOKENIZER_FLAGS, conflicts_with_all = ["point", "bpp", "ddcm", "k", "seed"])]
    pub psnr: Option<f64>,

    #[command(flatten)]
    pub fit: FitArgs,
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub tok: TokenizerArgs,
}

pub fn run(args: EncodeArgs) -> Result<()> {
    let EncodeArgs { images, output, force, psnr, fit, model, tok } = args;
    let model = load_model(&model, &tok.run)?;
    let inputs = load_inputs(&model, &images, fit.fit)?;
    let plan = Plan::new(&model, &tok, psnr, &inputs)?;
    let outs: Vec<PathBuf> = images.iter().map(|p| output.join(format!("{}.gddcm", stem(p)))).collect();
    check_outputs(&outs.iter().cloned().zip(images.iter().map(PathBuf::as_path)).collect::<Vec<_>>(), force)?;
    let dir = OutputDir::prepare(&output)?;
    let (done, notes) = plan.encode(&model, &inputs, &outs, &tok.run)?;
    dir.keep();
    for ((path, file, _), note) in done.iter().zip(&notes) {
        let bytes = std::fs::metadata(path)?.len();
        let note = note.as_deref().map(|n| format!("; {n}")).unwrap_or_default();
        println!(
            "{}  {} tokens, {:.4} bpp ({} bytes){note}",
            path.display(),
            file.procedure.n,
            file.file_bpp(bytes),
            bytes
        );
    }
    println!("settings: {}", plan.source);
    Ok(())
}

/// What an encode run does: one configuration for every image, or (`--psnr`) a shipped
/// operating point per image chosen by its reconstruction's quality (issue 17 item 4).
pub struct Plan {
    target: Option<(f64, Vec<gddcm::rate::Rung>)>,
    cfg: Option<Config>,
    /// Where the settings came from, for the run's summary.
    pub source: String,
}

impl Plan {
    /// Checks everything that can be checked before any encode: the flags, the header limits
    /// of every image size, and that `--psnr` has a ladder to choose from and no `--fit`.
    pub fn new(model: &LoadedModel, tok: &TokenizerArgs, psnr: Option<f64>, inputs: &[Input]) -> Result<Plan> {
        let Some(q) = psnr else {
            let (cfg, source) = tok.config(model)?;
            check_headers(model, &cfg, inputs)?;
            return Ok(Plan { target: None, cfg: Some(cfg), source });
        };
        tok.check_flags()?;
        if !q.is_finite() {
            bail!("--psnr must be a finite number of dB, found {q}");
        }
        if inputs.iter().any(|i| i.fit.is_some()) {
            bail!("--psnr chooses among the model's operating points, whose compact files hold images of the model's own size; encode fitted images (--fit) with explicit settings instead");
        }
        let rungs = gddcm::rate::rate_ladder(model)?;
        if rungs.is_empty() {
            bail!(
                "model '{}' ships no operating points (operating_points.json), so --psnr cannot choose one",
                model.entry.name
            );
        }
        for r in &rungs {
            let cfg = model.config(&r.point.settings)?;
            check_headers(model, &cfg, inputs)?;
        }
        let source = format!(
            "--psnr {q}: per image the smallest of the {} shipped operating points of {} that reaches it ({} to {})",
            rungs.len(),
            model.entry.name,
            rungs[0].describe(),
            rungs[rungs.len() - 1].describe()
        );
        Ok(Plan { target: Some((q, rungs)), cfg: None, source })
    }

    /// Encodes `inputs` to `outs`; returns what [`encode_images`] returns and, per image, a
    /// note on the operating point chosen (with `--psnr`).
    #[allow(clippy::type_complexity)]
    pub fn encode(
        &self,
        model: &LoadedModel,
        inputs: &[Input],
        outs: &[PathBuf],
        run: &RunArgs,
    ) -> Result<(Vec<(PathBuf, TokenFile, Image)>, Vec<Option<String>>)> {
        match (&self.target, &self.cfg) {
            (Some((q, rungs)), _) => encode_to_psnr(model, rungs, *q, inputs, outs, run),
            (None, Some(cfg)) => Ok((encode_images(model, cfg, inputs, outs, run)?, vec![None; inputs.len()])),
            (None, None) => unreachable!("a plan has a target or a configuration"),
        }
    }
}

/// `--psnr`: encodes every image at the rungs [`gddcm::rate::for_psnr`] probes (one batch per
/// rung and round), keeps the encoding of the rung chosen and writes it.
#[allow(clippy::type_complexity)]
fn encode_to_psnr(
    model: &LoadedModel,
    rungs: &[gddcm::rate::Rung],
    target: f64,
    inputs: &[Input],
    outs: &[PathBuf],
    run: &RunArgs,
) -> Result<(Vec<(PathBuf, TokenFile, Image)>, Vec<Option<String>>)> {
    use std::collections::HashMap;
    let dev = device(&run.device)?;
    let mut kept: HashMap<(usize, usize), (TokenFile, Vec<u8>)> = HashMap::new();
    let choice = gddcm::rate::for_psnr(rungs.len(), inputs.len(), target, |r, which| {
        let cfg = model.config(&rungs[r].point.settings)?;
        let mut out = Vec::with_capacity(which.len());
        // Same-sized images share a batch.
        let mut order = which.to_vec();
        order.sort_by_key(|&i| (inputs[i].image.height, inputs[i].image.width, i));
        let mut by_image = HashMap::new();
        for group in order.chunk_by(|&a, &b| {
            (inputs[a].image.height, inputs[a].image.width) == (inputs[b].image.height, inputs[b].image.width)
        }) {
            for chunk in group.chunks(run.batch.max(1)) {
                let batch: Vec<&Image> = chunk.iter().map(|&i| &inputs[i].image).collect();
                let enc = codec::encode(model, &cfg, &batch, &dev, None)
                    .with_context(|| format!("encoding {} at {}", outs[chunk[0]].display(), rungs[r].describe()))?;
                for (((&i, file), bytes), rec) in chunk.iter().zip(enc.files).zip(enc.bytes).zip(&enc.reconstructions) {
                    let q = gddcm::metrics::ssim::psnr(
                        &super::common::to_metric(&inputs[i].image)?,
                        &super::common::to_metric(rec)?,
                    )?;
                    by_image.insert(i, q);
                    kept.insert((r, i), (file, bytes));
                }
            }
        }
        for &i in which {
            out.push(by_image[&i]);
        }
        Ok(out)
    })?;
    let mut done = Vec::with_capacity(inputs.len());
    let mut notes = Vec::with_capacity(inputs.len());
    for (i, &(r, reached)) in choice.iter().enumerate() {
        let (file, bytes) = kept.remove(&(r, i)).context("the chosen point was encoded")?;
        let path: &Path = &outs[i];
        gddcm::atomic::write(path, &bytes).with_context(|| format!("writing {}", path.display()))?;
        let rung = &rungs[r];
        notes.push(Some(if reached {
            format!("{} reaches {target} dB", rung.describe())
        } else {
            eprintln!(
                "warning: {}: no shipped operating point reaches {target} dB; stored at the largest, {} (best effort)",
                path.display(),
                rung.describe()
            );
            format!("{} (best effort: below {target} dB)", rung.describe())
        }));
        done.push((path.to_path_buf(), file, inputs[i].image.clone()));
    }
    Ok((done, notes))
}

/// An input image as the model takes it, and how it was fitted to the model's size.
pub struct Input {
    pub image: Image,
    pub fit: Option<Fit>,
}

/// Reads the images, fits those of another size than the model's (`--fit`), and says once
/// what the conversion to the model's channels dropped. Errors name the image and the way
/// forward, before any work.
pub fn load_inputs(model: &LoadedModel, paths: &[PathBuf], fit: Option<FitArg>) -> Result<Vec<Input>> {
    let mut inputs = Vec::with_capacity(paths.len());
    let mut dropped: Vec<(String, &str)> = Vec::new();
    for p in paths {
        let (image, lost) = Image::load_noting(p, model.entry.channels)?;
        if let Some(lost) = lost {
            dropped.push((p.display().to_string(), lost));
        }
        inputs.push(fit_input(model, image, fit).with_context(|| p.display().to_string())?);
    }
    warn_dropped(model.entry.name, model.entry.channels, &dropped);
    Ok(inputs)
}

/// Says once, for all the images, what the conversion to the model's channels dropped
/// (`dropped`: image name, "colour" / "alpha" / "colour and alpha").
pub fn warn_dropped(model: &str, channels: usize, dropped: &[(String, &str)]) {
    if dropped.is_empty() {
        return;
    }
    let colour = dropped.iter().any(|d| d.1.contains("colour"));
    let alpha = dropped.iter().any(|d| d.1.contains("alpha"));
    let what = match (colour, alpha) {
        (true, true) => "colour and alpha",
        (true, false) => "colour",
        _ => "alpha",
    };
    let takes = if channels == 1 { "grayscale" } else { "RGB" };
    let names: Vec<&str> = dropped.iter().map(|d| d.0.as_str()).take(5).collect();
    let more = if dropped.len() > 5 { format!(" and {} more", dropped.len() - 5) } else { String::new() };
    eprintln!(
        "warning: model '{model}' takes {takes} images: the {what} of {}{more} {} dropped",
        names.join(", "),
        if dropped.len() == 1 { "was" } else { "were" }
    );
}

/// One image made ready for the model: as it is when the model takes it, else fitted
/// (`--fit`), else an error that says how to make it fit.
pub fn fit_input(model: &LoadedModel, image: Image, fit: Option<FitArg>) -> Result<Input> {
    match codec::padding_for(model, image.height, image.width) {
        Ok(_) => Ok(Input { image, fit: None }),
        Err(e) => {
            let Some(f) = fit else {
                bail!("{e}; --fit crop, pad or resize scales it to the model's size");
            };
            let n = model.entry.size - 2 * model.entry.pad;
            let fit = Fit { mode: f.mode(), width: image.width as u32, height: image.height as u32 };
            Ok(Input { image: image.fitted(fit.mode, n), fit: Some(fit) })
        }
    }
}

/// The token file limits for every image size, before any work.
pub fn check_headers(model: &LoadedModel, cfg: &Config, inputs: &[Input]) -> Result<()> {
    let mut sizes: Vec<(usize, usize)> = inputs.iter().map(|i| (i.image.height, i.image.width)).collect();
    sizes.dedup();
    for (h, w) in sizes {
        codec::check_header(model, cfg, h, w)?;
    }
    Ok(())
}

/// Encodes images to the token files `outs` (one per input); returns the files, their paths
/// and the images as encoded.
pub fn encode_images(
    model: &LoadedModel,
    cfg: &Config,
    inputs: &[Input],
    outs: &[PathBuf],
    run: &RunArgs,
) -> Result<Vec<(PathBuf, TokenFile, Image)>> {
    let dev = device(&run.device)?;
    let nfe = Tokenizer::new(model.denoiser.as_ref(), cfg, model.shape()).nfe() as u64;
    let groups = batches(inputs, |i| (i.image.height as u32, i.image.width as u32), run.batch);
    let pb = progress(run, nfe * groups.len() as u64, "encode");
    let mut results: Vec<Option<(PathBuf, TokenFile, Image)>> = (0..inputs.len()).map(|_| None).collect();
    for g in groups {
        let batch: Vec<&Image> = g.iter().map(|&i| &inputs[i].image).collect();
        let enc = codec::encode(model, cfg, &batch, &dev, pb.clone())
            .with_context(|| format!("encoding {}", outs[g[0]].display()))?;
        for ((&i, mut file), bytes) in g.iter().zip(enc.files).zip(enc.bytes) {
            // Compact when the settings are a shipped operating point, else the full header; a
            // fitted image always keeps the full header, whose fit block restores its size.
            file.fit = inputs[i].fit;
            let bytes = if file.fit.is_some() { file.to_bytes()? } else { bytes };
            let path: &Path = &outs[i];
            gddcm::atomic::write(path, &bytes).with_context(|| format!("writing {}", path.display()))?;
            results[i] = Some((path.to_path_buf(), file, inputs[i].image.clone()));
        }
    }
    if let Some(pb) = pb {
        pb.finish_and_clear();
    }
    Ok(results.into_iter().flatten().collect())
}
