//! `gddcm roundtrip`: encode, decode from the files, measure, write side-by-side PNGs.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use gddcm::data::Image;
use gddcm::format::TokenFile;
use gddcm::metrics::ssim::{psnr, ssim};

use super::args::{ModelArgs, TokenizerArgs};
use super::common::{load_model, stem, to_metric};
use super::decode::decode_files;
use super::encode::encode_images;

#[derive(Args)]
pub struct RoundtripArgs {
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
    /// Output folder for the token files and side-by-side PNGs.
    #[arg(short, long, default_value = "roundtrip-out")]
    pub output: PathBuf,
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub tok: TokenizerArgs,
}

pub fn run(args: RoundtripArgs) -> Result<()> {
    let RoundtripArgs { images, output, model, tok } = args;
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
        Image::side_by_side(&[orig, rec], 2)?.save_png(&output.join(format!("{}_roundtrip.png", stem(path))))?;
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
    Ok(())
}
