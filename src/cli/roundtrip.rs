//! `gddcm roundtrip`: encode, decode from the files, measure, write side-by-side PNGs.

use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::Args;

use gddcm::data::Image;
use gddcm::format::TokenFile;
use gddcm::metrics::ssim::{psnr, ssim};

use super::args::{FitArgs, ModelArgs, TokenizerArgs, TOKENIZER_FLAGS};
use super::common::{check_outputs, escape_untrusted, load_model, stem, to_metric, OutputDir};
use super::decode::decode_files;
use super::encode::{load_inputs, Plan};
use super::font;

#[derive(Args)]
pub struct RoundtripArgs {
    /// PNG or JPEG images (grayscale, RGB, with or without alpha), of the model's size or
    /// smaller by an even margin (padded with the background); other sizes need --fit.
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
    /// Output folder for the token files and the side-by-side PNGs (NAME.gddcm and
    /// NAME_roundtrip.png for NAME.png).
    #[arg(short, long, default_value = "roundtrip-out")]
    pub output: PathBuf,
    /// Overwrite outputs that exist already (otherwise the run stops before any work).
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

pub fn run(args: RoundtripArgs) -> Result<()> {
    let RoundtripArgs { images, output, force, psnr: target, fit, model, tok } = args;
    let model = load_model(&model, &tok.run)?;
    let inputs = load_inputs(&model, &images, fit.fit)?;
    let plan = Plan::new(&model, &tok, target, &inputs)?;
    let outs: Vec<PathBuf> = images.iter().map(|p| output.join(format!("{}.gddcm", stem(p)))).collect();
    let pngs: Vec<PathBuf> = images.iter().map(|p| output.join(format!("{}_roundtrip.png", stem(p)))).collect();
    let planned: Vec<(PathBuf, &Path)> =
        outs.iter().chain(&pngs).cloned().zip(images.iter().chain(&images).map(PathBuf::as_path)).collect();
    check_outputs(&planned, force)?;
    let dir = OutputDir::prepare(&output)?;
    let (done, _) = plan.encode(&model, &inputs, &outs, &tok.run)?;
    // Decode from the files themselves, not the encoder's trajectory (SPEC 5, G4).
    let resolver = gddcm::ladder::Resolver::for_model(&model);
    let stored: Vec<_> = done.iter().map(|(p, _, _)| resolver.read(p)).collect::<Result<_>>()?;
    let files: Vec<TokenFile> = stored.iter().map(|s| s.file.clone()).collect();
    let recon = decode_files(&files, None, &tok.run, Some(&model))?;
    let names: Vec<String> = done.iter().map(|(p, _, _)| escape_untrusted(&stem(p))).collect();
    let w = names.iter().map(|n| n.chars().count()).max().unwrap_or(0).max(5);
    println!("{:<w$} {:>9} {:>8} {:>8} {:>8} {:>6}", "image", "file bpp", "bpp", "PSNR", "SSIM", "point");
    let (mut sp, mut ss, mut sb, mut sf) = (0.0, 0.0, 0.0, 0.0);
    for (((((_, file, orig), rec), name), png), st) in done.iter().zip(&recon).zip(&names).zip(&pngs).zip(&stored) {
        let (p, s) = (psnr(&to_metric(orig)?, &to_metric(rec)?)?, ssim(&to_metric(orig)?, &to_metric(rec)?)?);
        // File bpp counts the stored file (what is worth storing); payload bpp the tokens
        // (SPEC 6, as the paper).
        let (bpp, fbpp) = (file.rate_bpp(), st.file_bpp());
        // The shipped operating point a compact file names (none: a full self-describing header).
        let point = st.compact.as_ref().map(|c| c.point.to_string()).unwrap_or_else(|| "—".into());
        println!("{name:<w$} {fbpp:>9.4} {bpp:>8.4} {p:>8.2} {s:>8.4} {point:>6}");
        side_by_side(orig, rec, &[&format!("{fbpp:.3} bpp"), &format!("PSNR {p:.2} dB")]).save_png(png)?;
        (sp, ss, sb, sf) = (sp + p, ss + s, sb + bpp, sf + fbpp);
    }
    let n = done.len() as f64;
    println!("{:<w$} {:>9.4} {:>8.4} {:>8.2} {:>8.4} {:>6}", "mean", sf / n, sb / n, sp / n, ss / n, "");
    let first = &files[0].procedure;
    let same = files.iter().all(|f| f.procedure.k == first.k && f.procedure.n == first.n && f.procedure.p == first.p);
    let what =
        if same { format!("K = {}, N = {}, p = {}", first.k, first.n, first.p) } else { "settings per image".into() };
    println!("(model {}, {what}; files and side-by-side PNGs in {})", model.entry.name, output.display());
    println!("settings: {}", plan.source);
    dir.keep();
    Ok(())
}

/// Original | reconstruction, scaled up by nearest neighbour (×8 for 28×28) so the pixels can
/// be seen, with a grey separator, under a caption strip: "original" over the left image,
/// "reconstruction" and the `caption` lines (rate and PSNR) over the right one.
pub fn side_by_side(orig: &Image, rec: &Image, caption: &[&str]) -> Image {
    let (c, h, w) = (orig.channels, orig.height, orig.width);
    let s = (224 / h.max(w)).max(1);
    let gap = 2 * s;
    // Text twice as large where the longest line fits.
    let longest = caption.iter().map(|l| l.chars().count()).max().unwrap_or(0).max(14);
    let fs = if w * s >= (longest + 1) * font::ADVANCE * 2 { 2 } else { 1 };
    let strip = (1 + caption.len()) * font::LINE * fs + 4;
    let (ow, oh) = (2 * w * s + gap, strip + h * s);
    let mut out = Image { channels: c, height: oh, width: ow, data: vec![0; c * oh * ow] };
    for ch in 0..c {
        for y in 0..oh {
            for x in w * s..w * s + gap {
                out.data[(ch * oh + y) * ow + x] = 128;
            }
        }
        for (k, img) in [orig, rec].into_iter().enumerate() {
            let x0 = k * (w * s + gap);
            for y in 0..h * s {
                for x in 0..w * s {
                    out.data[(ch * oh + strip + y) * ow + x0 + x] = img.data[(ch * h + y / s) * w + x / s];
                }
            }
        }
    }
    font::draw(&mut out, 2, 2, "original", fs);
    font::draw(&mut out, w * s + gap + 2, 2, "reconstruction", fs);
    for (i, line) in caption.iter().enumerate() {
        font::draw(&mut out, w * s + gap + 2, 2 + (i + 1) * font::LINE * fs, line, fs);
    }
    out
}
