//! Evaluation as in the paper (SPEC 9): tokenize a dataset, decode it *from the token files*,
//! and measure bits per pixel, PSNR, SSIM, LPIPS, FID and IS — plus the offline stand-ins
//! (Frechet distance and accuracy of the bundled Fashion-MNIST classifier), which are
//! reported under their own names, never as FID.
//!
//! \[D\] protocol (SPEC 9): FID between the reconstructions and their originals (pool3), IS on
//! the reconstructions, LPIPS/SSIM/PSNR averaged per image against the originals.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use candle_core::Device;
use indicatif::ProgressBar;
use serde::Serialize;

use crate::codec;
use crate::data::{Dataset, Image};
use crate::format::TokenFile;
use crate::metrics::image::ImageU8;
use crate::metrics::inception::FidInception;
use crate::metrics::lpips::{Lpips, LpipsNet};
use crate::metrics::samples::pad_to_classifier;
use crate::metrics::ssim::pixel_scores;
use crate::metrics::standin::{classifier_accuracy, classifier_frechet_distance, classifier_scores, ClassifierStandIn};
use crate::metrics::MetricsError;
use crate::tokenizer::Config;
use crate::zoo::LoadedModel;

/// Which metrics to compute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, clap::ValueEnum)]
pub enum Metric {
    /// PSNR, SSIM (and MS-SSIM on images above 160 px).
    Pixel,
    /// LPIPS (AlexNet, v0.1); needs torchvision's and lpips' weight files.
    Lpips,
    /// FID and Inception Score; needs pytorch-fid's Inception weights.
    Fid,
    /// Offline stand-ins from the bundled Fashion-MNIST classifier (1-channel 28/32 px only).
    Classifier,
}

/// Options of an evaluation.
#[derive(Debug, Clone, Default)]
pub struct EvalOptions {
    pub metrics: Vec<Metric>,
    /// Images per network batch.
    pub batch: usize,
    /// Folder with metric weight files (else `$GDDCM_HOME/weights`, the torch hub cache).
    pub weights_dir: Option<PathBuf>,
    /// The stand-in classifier's weights.
    pub classifier: Option<PathBuf>,
    /// Keep the token files and reconstructions here.
    pub keep: Option<PathBuf>,
    /// Reuse what an earlier, interrupted run left in `keep` instead of recomputing it.
    pub resume: bool,
}

/// The numbers of one evaluation (one model, one configuration, one image set).
#[derive(Debug, Clone, Default, Serialize)]
pub struct EvalReport {
    pub model: String,
    pub family: String,
    pub images: usize,
    pub k: u32,
    pub n: u64,
    pub p: f64,
    /// Atoms per step (SPEC 2.4a).
    pub atoms: crate::atoms::AtomRule,
    /// Network evaluations per image, encoder and decoder alike (the tokens and the final
    /// sampler's).
    pub nfe: u64,
    /// Bits per pixel as SPEC 6 counts them: the tokens, plus the I3 index when there is one.
    pub bpp: f64,
    /// Whole-file bits per pixel (header included).
    pub file_bpp: f64,
    pub psnr: Option<f64>,
    pub ssim: Option<f64>,
    pub ms_ssim: Option<f64>,
    pub lpips: Option<f64>,
    pub fid: Option<f64>,
    pub inception_score: Option<(f64, f64)>,
    /// Stand-in: Frechet distance of classifier features, reconstructions vs originals.
    pub classifier_fd: Option<f64>,
    /// Stand-in: classifier accuracy on the reconstructions (and on the originals).
    pub classifier_accuracy: Option<f64>,
    pub classifier_accuracy_originals: Option<f64>,
    /// Stand-in: the classifier's mean negative log-likelihood (nats) of the true labels on the
    /// reconstructions (the class kept, measured smoothly; a search objective).
    pub classifier_nll: Option<f64>,
    /// Speeds of this run (NaN when every image came from an earlier run's `keep` folder).
    pub encode_images_per_s: f64,
    pub decode_images_per_s: f64,
    /// Metrics that could not run, with the reason (e.g. a missing weight file).
    pub skipped: Vec<String>,
}

fn to_u8(img: &Image) -> Result<ImageU8> {
    Ok(ImageU8::from_chw(img.channels, img.height, img.width, img.data.clone())?)
}

/// Gray images become RGB by repeating the channel (for LPIPS and Inception, which are RGB).
fn to_rgb(img: &ImageU8) -> Result<ImageU8> {
    if img.c == 3 {
        return Ok(img.clone());
    }
    let plane = img.plane(0);
    Ok(ImageU8::from_chw(3, img.h, img.w, [plane, plane, plane].concat())?)
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

/// A metric that needs weights: `Ok(None)` with a note when they are missing.
fn optional<T>(what: &str, r: std::result::Result<T, MetricsError>, skipped: &mut Vec<String>) -> Result<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(MetricsError::MissingWeights(m)) => {
            skipped.push(format!("{what}: {m}"));
            Ok(None)
        }
        Err(e) => Err(e).with_context(|| format!("computing {what}")),
    }
}

/// Tokenizes every image of `data`, writes the token files (in memory, or to `keep`), decodes
/// them back from their bytes and measures.
pub fn evaluate(
    model: &LoadedModel,
    cfg: &Config,
    data: &Dataset,
    opts: &EvalOptions,
    device: &Device,
    progress: Option<ProgressBar>,
) -> Result<EvalReport> {
    let n = data.images.len();
    anyhow::ensure!(n > 0, "no images to evaluate");
    let images: Vec<Image> = data.images.iter().map(|i| convert_channels(i, model.entry.channels)).collect();
    // Each token file with its stored size (compact or full header).
    let mut files: Vec<Option<(TokenFile, u64)>> = vec![None; n];
    let mut recon: Vec<Option<Image>> = vec![None; n];
    if let Some(dir) = &opts.keep {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    if opts.resume {
        let dir = opts.keep.as_deref().context("resuming needs the folder the results were kept in")?;
        reuse_kept(dir, model, cfg, &data.names, &mut files, &mut recon)?;
    }
    let todo: Vec<usize> = (0..n).filter(|&i| recon[i].is_none()).collect();
    if let Some(pb) = &progress {
        // The bar was sized for every image; the kept ones need no work.
        let per_image = pb.length().unwrap_or(0) / n as u64;
        pb.set_length(per_image * todo.len() as u64);
    }
    let (mut encode_s, mut decode_s) = (0.0, 0.0);
    // Chunk by chunk (encode, write, decode, write) so that an interrupted run keeps its work.
    for chunk in todo.chunks(opts.batch.max(1)) {
        let t0 = Instant::now();
        let refs: Vec<&Image> = chunk.iter().map(|&i| &images[i]).collect();
        let enc = codec::encode(model, cfg, &refs, device, progress.clone())?;
        // Through bytes: what is measured is what a decoder reading the file gets.
        let resolver = crate::ladder::Resolver::for_model(model);
        let stored: Vec<crate::ladder::Stored> = enc.bytes.iter().map(|b| resolver.parse(b)).collect::<Result<_>>()?;
        let chunk_files: Vec<TokenFile> = stored.iter().map(|s| s.file.clone()).collect();
        encode_s += t0.elapsed().as_secs_f64();
        let t1 = Instant::now();
        let chunk_recon = codec::decode(model, &chunk_files.iter().collect::<Vec<_>>(), device, progress.clone())?;
        decode_s += t1.elapsed().as_secs_f64();
        for (((&i, f), img), bytes) in chunk.iter().zip(chunk_files).zip(chunk_recon).zip(&enc.bytes) {
            if let Some(dir) = &opts.keep {
                // The PNG last: its presence marks the image as done (see `reuse_kept`).
                crate::atomic::write(&dir.join(format!("{}.gddcm", data.names[i])), bytes)?;
                img.save_png(&dir.join(format!("{}.png", data.names[i])))?;
            }
            (files[i], recon[i]) = (Some((f, bytes.len() as u64)), Some(img));
        }
    }
    let files: Vec<(TokenFile, u64)> = files.into_iter().flatten().collect();
    let recon: Vec<Image> = recon.into_iter().flatten().collect();
    let speed = |secs: f64| if todo.is_empty() { f64::NAN } else { todo.len() as f64 / secs };
    let mut rep = EvalReport {
        model: model.entry.name.to_string(),
        family: model.entry.family.to_string(),
        images: n,
        k: cfg.k,
        n: cfg.algorithm.tokens(),
        p: cfg.algorithm.p(),
        atoms: cfg.atoms,
        nfe: crate::tokenizer::Tokenizer::new(model.denoiser.as_ref(), cfg, model.shape()).nfe() as u64,
        bpp: mean(&files.iter().map(|(f, _)| f.rate_bpp()).collect::<Vec<_>>()),
        file_bpp: mean(&files.iter().map(|(f, bytes)| f.file_bpp(*bytes)).collect::<Vec<_>>()),
        encode_images_per_s: speed(encode_s),
        decode_images_per_s: speed(decode_s),
        ..Default::default()
    };
    let orig: Vec<ImageU8> = images.iter().map(to_u8).collect::<Result<_>>()?;
    let rec: Vec<ImageU8> = recon.iter().map(to_u8).collect::<Result<_>>()?;
    measure(&orig, &rec, &data.labels, opts, &mut rep)?;
    Ok(rep)
}

/// Loads the token files and reconstructions an earlier run kept in `dir` (an image counts as
/// done when both `NAME.gddcm` and `NAME.png` are there). A token file made with another model
/// or other settings is an error, not silently re-used.
fn reuse_kept(
    dir: &Path,
    model: &LoadedModel,
    cfg: &Config,
    names: &[String],
    files: &mut [Option<(TokenFile, u64)>],
    recon: &mut [Option<Image>],
) -> Result<()> {
    for (i, name) in names.iter().enumerate() {
        let (tok, png) = (dir.join(format!("{name}.gddcm")), dir.join(format!("{name}.png")));
        if !(tok.is_file() && png.is_file()) {
            continue;
        }
        let stored = crate::ladder::Resolver::for_model(model).read(&tok)?;
        let f = stored.file;
        anyhow::ensure!(
            codec::made_with(&f, model, cfg)?,
            "{} was made with another model or other settings than this run ({}, K = {}, N = {}, p = {}); \
             use another --keep folder or delete it",
            tok.display(),
            model.entry.name,
            cfg.k,
            cfg.algorithm.tokens(),
            cfg.algorithm.p()
        );
        recon[i] = Some(Image::load(&png, model.entry.channels)?);
        files[i] = Some((f, stored.bytes));
    }
    Ok(())
}

fn convert_channels(img: &Image, channels: usize) -> Image {
    match (img.channels, channels) {
        (a, b) if a == b => img.clone(),
        (3, 1) => {
            let hw = img.height * img.width;
            let data = (0..hw)
                .map(|p| {
                    let (r, g, b) = (img.data[p] as f32, img.data[hw + p] as f32, img.data[2 * hw + p] as f32);
                    (0.299 * r + 0.587 * g + 0.114 * b).round() as u8 // ITU-R 601 luma, as PIL's "L"
                })
                .collect();
            Image { channels: 1, height: img.height, width: img.width, data }
        }
        _ => Image { channels: 3, height: img.height, width: img.width, data: img.data.repeat(3) },
    }
}

/// Fills the metric fields of `rep` for originals vs reconstructions.
pub fn measure(
    orig: &[ImageU8],
    rec: &[ImageU8],
    labels: &[Option<u8>],
    opts: &EvalOptions,
    rep: &mut EvalReport,
) -> Result<()> {
    let batch = opts.batch.max(1);
    let wdir = opts.weights_dir.as_deref();
    if opts.metrics.contains(&Metric::Pixel) {
        let scores =
            orig.iter().zip(rec).map(|(a, b)| pixel_scores(a, b)).collect::<std::result::Result<Vec<_>, _>>()?;
        // Identical images have infinite PSNR; cap at 100 dB so the mean stays finite.
        rep.psnr = Some(mean(&scores.iter().map(|s| s.psnr.min(100.0)).collect::<Vec<_>>()));
        rep.ssim = Some(mean(&scores.iter().map(|s| s.ssim).collect::<Vec<_>>()));
        let ms: Vec<f64> = scores.iter().filter_map(|s| s.ms_ssim).collect();
        rep.ms_ssim = (!ms.is_empty()).then(|| mean(&ms));
    }
    let needs_rgb = opts.metrics.iter().any(|m| matches!(m, Metric::Lpips | Metric::Fid));
    let (orig_rgb, rec_rgb) = if needs_rgb {
        (orig.iter().map(to_rgb).collect::<Result<Vec<_>>>()?, rec.iter().map(to_rgb).collect::<Result<Vec<_>>>()?)
    } else {
        (vec![], vec![])
    };
    if opts.metrics.contains(&Metric::Lpips) {
        if let Some(net) = optional("LPIPS", Lpips::from_weight_dirs(LpipsNet::Alex, wdir), &mut rep.skipped)? {
            rep.lpips = Some(mean(&net.distance_images(&orig_rgb, &rec_rgb, batch)?));
        }
    }
    if opts.metrics.contains(&Metric::Fid) {
        if orig.len() < 2 {
            rep.skipped.push("FID/IS: needs at least 2 images".into());
        } else if let Some(net) = optional("FID/IS", FidInception::from_weight_dirs(wdir), &mut rep.skipped)? {
            let a = net.image_set_stats(&orig_rgb, batch, 10)?;
            let b = net.image_set_stats(&rec_rgb, batch, 10)?;
            rep.fid = Some(crate::metrics::fid::frechet_distance(&a.stats, &b.stats)?);
            rep.inception_score = Some(b.inception_score);
        }
    }
    if opts.metrics.contains(&Metric::Classifier) {
        classifier_metrics(orig, rec, labels, opts, rep)?;
    }
    Ok(())
}

/// The bundled stand-in classifier, `models/classifier/model.safetensors`.
pub fn default_classifier() -> Option<PathBuf> {
    [
        PathBuf::from("models/classifier/model.safetensors"),
        Path::new(env!("CARGO_MANIFEST_DIR")).join("models/classifier/model.safetensors"),
    ]
    .into_iter()
    .find(|p| p.is_file())
}

fn classifier_metrics(
    orig: &[ImageU8],
    rec: &[ImageU8],
    labels: &[Option<u8>],
    opts: &EvalOptions,
    rep: &mut EvalReport,
) -> Result<()> {
    if orig[0].c != 1 || orig[0].h > 32 || orig[0].w > 32 {
        rep.skipped.push("classifier stand-ins: only for 1-channel images up to 32 px (Fashion-MNIST)".into());
        return Ok(());
    }
    let Some(path) = opts.classifier.clone().or_else(default_classifier) else {
        rep.skipped.push("classifier stand-ins: models/classifier/model.safetensors not found (train it with tools/train/train.py classifier)".into());
        return Ok(());
    };
    let net = ClassifierStandIn::load(&path)?;
    // The classifier takes 32×32: pad Fashion-MNIST's 28×28 with background, as in training.
    let pad = |imgs: &[ImageU8]| imgs.iter().map(pad_to_classifier).collect::<std::result::Result<Vec<_>, _>>();
    let (po, pr) = (pad(orig)?, pad(rec)?);
    let batch = opts.batch.max(1);
    if orig.len() >= 2 {
        rep.classifier_fd = Some(classifier_frechet_distance(&net, &po, &pr, batch)?);
    }
    if labels.iter().all(Option::is_some) {
        let l: Vec<u32> = labels.iter().map(|l| l.unwrap() as u32).collect();
        let on_reconstructions = classifier_scores(&net, &pr, &l, batch)?;
        rep.classifier_accuracy = Some(on_reconstructions.accuracy);
        rep.classifier_nll = Some(on_reconstructions.nll);
        rep.classifier_accuracy_originals = Some(classifier_accuracy(&net, &po, &l, batch)?);
    }
    Ok(())
}

fn fmt_opt(v: Option<f64>, prec: usize) -> String {
    v.map(|x| format!("{x:.prec$}")).unwrap_or_else(|| "—".into())
}

impl EvalReport {
    /// One Markdown table row: model | p | FID | LPIPS | IS | SSIM | PSNR | bpp | stand-ins.
    pub fn markdown_row(&self, note: &str) -> String {
        format!(
            "| {} | {} | {} | {} | {} | {} | {} | {:.3} | {} | {} | {} |",
            self.model,
            self.p,
            fmt_opt(self.fid, 2),
            fmt_opt(self.lpips, 3),
            self.inception_score.map(|(m, _)| format!("{m:.2}")).unwrap_or_else(|| "—".into()),
            fmt_opt(self.ssim, 3),
            fmt_opt(self.psnr, 2),
            self.bpp,
            fmt_opt(self.classifier_fd, 2),
            fmt_opt(self.classifier_accuracy, 3),
            note
        )
    }

    /// The header matching [`EvalReport::markdown_row`].
    pub fn markdown_header() -> &'static str {
        "| model | p | FID↓ | LPIPS↓ | IS↑ | SSIM↑ | PSNR↑ | bpp | clf-FD↓ (stand-in) | clf-acc↑ (stand-in) | note |\n|---|---|---|---|---|---|---|---|---|---|---|"
    }
}
