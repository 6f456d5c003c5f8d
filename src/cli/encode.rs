//! `gddcm encode`: images → token files.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Args;

use gddcm::codec;
use gddcm::data::Image;
use gddcm::format::TokenFile;
use gddcm::tokenizer::{Config, Tokenizer};
use gddcm::zoo::LoadedModel;

use super::args::{ModelArgs, RunArgs, TokenizerArgs};
use super::common::{batches, device, load_model, progress, stem};

#[derive(Args)]
pub struct EncodeArgs {
    /// PNG/JPEG images.
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
    /// Output folder for the token files.
    #[arg(short, long)]
    pub output: PathBuf,
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub tok: TokenizerArgs,
}

pub fn run(args: EncodeArgs) -> Result<()> {
    let EncodeArgs { images, output, model, tok } = args;
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
    Ok(())
}

/// Encodes images to token files in `out`; returns the files, their paths and the inputs.
pub fn encode_images(
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
