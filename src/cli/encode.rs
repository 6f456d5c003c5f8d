//! `gddcm encode`: images → token files.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;

use gddcm::codec;
use gddcm::data::Image;
use gddcm::format::{Fit, TokenFile};
use gddcm::tokenizer::{Config, Tokenizer};
use gddcm::zoo::LoadedModel;

use super::args::{FitArg, FitArgs, ModelArgs, RunArgs, TokenizerArgs};
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
    #[command(flatten)]
    pub fit: FitArgs,
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub tok: TokenizerArgs,
}

pub fn run(args: EncodeArgs) -> Result<()> {
    let EncodeArgs { images, output, force, fit, model, tok } = args;
    let model = load_model(&model, &tok.run)?;
    let (cfg, source) = tok.config(&model)?;
    let inputs = load_inputs(&model, &images, fit.fit)?;
    check_headers(&model, &cfg, &inputs)?;
    let outs: Vec<PathBuf> = images.iter().map(|p| output.join(format!("{}.gddcm", stem(p)))).collect();
    check_outputs(&outs.iter().cloned().zip(images.iter().map(PathBuf::as_path)).collect::<Vec<_>>(), force)?;
    let dir = OutputDir::prepare(&output)?;
    let done = encode_images(&model, &cfg, &inputs, &outs, &tok.run)?;
    dir.keep();
    for (path, file, _) in &done {
        let bytes = std::fs::metadata(path)?.len();
        println!("{}  {} tokens, {:.4} bpp ({} bytes)", path.display(), file.tokens.len(), file.file_bpp(bytes), bytes);
    }
    println!("settings: {source}");
    Ok(())
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
