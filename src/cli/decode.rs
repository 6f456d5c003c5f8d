//! `gddcm decode`: token files → images.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;

use gddcm::codec;
use gddcm::data::Image;
use gddcm::format::TokenFile;
use gddcm::tokenizer::Tokenizer;
use gddcm::zoo::{self, LoadedModel};

use super::args::RunArgs;
use super::common::{batches, check_outputs, device, hex_prefix, progress, stem, OutputDir};

#[derive(Args)]
pub struct DecodeArgs {
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Output folder for the PNG images.
    #[arg(short, long)]
    pub output: PathBuf,
    /// Weights folder or file for the model the files name.
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// Overwrite images that exist already (otherwise the run stops before any work).
    #[arg(long)]
    pub force: bool,
    /// Refuse files whose procedure takes more network evaluations per image (a bound on the
    /// work a file may ask for, checked before any model is loaded).
    #[arg(long, default_value_t = gddcm::validate::DEFAULT_MAX_NFE)]
    pub max_nfe: u64,
    #[command(flatten)]
    pub run: RunArgs,
}

pub fn run(args: DecodeArgs) -> Result<()> {
    let DecodeArgs { files, output, weights, force, max_nfe, run } = args;
    // Compact files name a shipped operating point and a weights fingerprint: the resolver
    // expands them from the installed models' operating points.
    let resolver = gddcm::ladder::Resolver::new(weights.as_deref());
    let tfs: Vec<TokenFile> = files.iter().map(|p| Ok(resolver.read(p)?.file)).collect::<Result<_>>()?;
    let first = &tfs[0].model;
    if let Some((p, _)) = files
        .iter()
        .zip(&tfs)
        .find(|(_, f)| f.model.name != first.name || f.model.weights_sha256 != first.weights_sha256)
    {
        bail!("{} was made with another model than {}; decode them separately", p.display(), files[0].display());
    }
    codec::check_files(&files, &tfs, max_nfe, weights.as_deref())?;
    let outs: Vec<PathBuf> = files.iter().map(|p| output.join(format!("{}.png", stem(p)))).collect();
    check_outputs(&outs.iter().cloned().zip(files.iter().map(PathBuf::as_path)).collect::<Vec<_>>(), force)?;
    let dir = OutputDir::prepare(&output)?;
    let images = decode_files(&tfs, weights.as_deref(), &run, None)?;
    for ((path, img), tf) in outs.iter().zip(images).zip(&tfs) {
        // A fitted image goes back to its original size (crop: the cut-out square).
        let img = match &tf.fit {
            Some(fit) => img.unfitted(fit),
            None => img,
        };
        img.save_png(path)?;
        println!("{}", path.display());
    }
    dir.keep();
    Ok(())
}

/// Decodes token files (grouped into batches by procedure); all must name one model.
pub fn decode_files(
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
                codec::config_from(&files[s[0]].procedure, model.entry.family, &model.x_ref).ok().map(|c| c.0)
                    == codec::config_from(&files[i].procedure, model.entry.family, &model.x_ref).ok().map(|c| c.0)
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
            codec::config_from(&files[g[0]].procedure, model.entry.family, &model.x_ref)
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
