//! `gddcm rd`: rate–distortion sweeps over K × N.

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;

use gddcm::eval::{EvalOptions, Metric};

use super::args::{DataArgs, ModelArgs, RunArgs};
use super::common::{device, load_model, write_json};

#[derive(Args, Clone)]
pub struct RdArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Codebook sizes K.
    #[arg(short = 'k', long, value_delimiter = ',', default_values_t = [2u32, 16, 256, 4096])]
    pub k: Vec<u32>,
    /// Token counts N.
    #[arg(short = 'n', long, value_delimiter = ',', default_values_t = [50u32, 100, 300])]
    pub n: Vec<u32>,
    /// Values of p: 0 uses the model's profile; p > 0 Algorithm 1 from the largest time.
    #[arg(short = 'p', long, value_delimiter = ',', default_values_t = [0.0, 0.5])]
    pub p: Vec<f64>,
    #[command(flatten)]
    pub data: DataArgs,
    /// Metrics at each point.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [Metric::Pixel, Metric::Classifier])]
    pub metrics: Vec<Metric>,
    /// Folder with the metric weight files (for lpips or fid).
    #[arg(long)]
    pub metric_weights: Option<PathBuf>,
    /// Output prefix: PREFIX.json, PREFIX.svg, PREFIX.png.
    #[arg(short, long, default_value = "rd")]
    pub output: PathBuf,
    #[command(flatten)]
    pub run: RunArgs,
}

pub fn run(args: RdArgs) -> Result<()> {
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
    let ds = args.data.load(model.entry.name, model.entry.channels)?;
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
