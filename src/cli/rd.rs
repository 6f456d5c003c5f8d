//! `gddcm rd`: rate–distortion sweeps over K × N, and the model's ladder against the classic
//! codecs (`--ladder`, `--codecs`).

use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use clap::Args;

use gddcm::classic::{self, Codec, CodecTools};
use gddcm::eval::{EvalOptions, EvalReport, Metric};
use gddcm::rd::compare::{self, Curve};

use super::args::{DataArgs, ModelArgs, RunArgs};
use super::common::{check_outputs, device, load_model, progress, write_json, OutputDir};

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
    /// Instead of the K × N sweep, compare with classic codecs on the same images: jpeg, webp,
    /// avif, jxl (comma-separated; their Debian tools must be installed), or all (the installed
    /// ones: a missing tool is skipped with a note).
    #[arg(long, value_delimiter = ',', value_name = "CODECS", conflicts_with_all = ["k", "n", "p"])]
    pub codecs: Vec<String>,
    /// Instead of the K × N sweep, measure the model's shipped operating points (its ladder,
    /// operating_points.json beside its weights); with --codecs, with BD-rates against each.
    #[arg(long, conflicts_with_all = ["k", "n", "p"])]
    pub ladder: bool,
    /// A codec's levels instead of its defaults, CODEC=L1,L2,… (repeatable), e.g. jxl=1,2,4:
    /// jpeg -quality 1..100, webp -q 0..100, avif quantizer 0..63, jxl distance 0..25.
    #[arg(long, value_name = "CODEC=LIST", requires = "codecs")]
    pub levels: Vec<String>,
    /// A codec's encoder settings instead of its defaults (all but the level, input and output;
    /// split at spaces), CODEC=ARGS (repeatable), e.g. "avif=-s 0 -a tune=ssim".
    #[arg(long, value_name = "CODEC=ARGS", allow_hyphen_values = true, requires = "codecs")]
    pub codec_settings: Vec<String>,
    #[command(flatten)]
    pub data: DataArgs,
    /// Metrics at each point.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [Metric::Pixel, Metric::Classifier])]
    pub metrics: Vec<Metric>,
    /// Folder with the metric weight files (for lpips or fid).
    #[arg(long)]
    pub metric_weights: Option<PathBuf>,
    /// K × N sweep: output prefix, PREFIX.json, PREFIX.svg, PREFIX.png. --ladder/--codecs: output
    /// folder, one CompressAI-style JSON per curve, summary.json (BD-rates), rd.svg, rd.png.
    #[arg(short, long, default_value = "rd")]
    pub output: PathBuf,
    /// Overwrite the outputs of an earlier comparison (--ladder/--codecs) in the folder.
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub run: RunArgs,
}

pub fn run(args: RdArgs) -> Result<()> {
    if args.ladder || !args.codecs.is_empty() {
        return run_comparison(args);
    }
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

/// A codec's tools and the levels to sweep.
type CodecRun = (CodecTools, Vec<f64>);

/// The codecs `--codecs` names, found on `search_path` with `--levels` and `--codec-settings`
/// applied, checked before any work; and a note for each codec `all` skipped.
fn codec_tools(
    names: &[String],
    levels: &[String],
    settings: &[String],
    search_path: &std::ffi::OsStr,
) -> Result<(Vec<CodecRun>, Vec<String>)> {
    let mut wanted: Vec<(Codec, bool)> = Vec::new(); // (codec, named explicitly)
    for name in names.iter().map(|n| n.trim()).filter(|n| !n.is_empty()) {
        let add: Vec<(Codec, bool)> = if name.eq_ignore_ascii_case("all") {
            Codec::ALL.iter().map(|&c| (c, false)).collect()
        } else {
            let c = Codec::parse(name)
                .with_context(|| format!("unknown codec '{name}' in --codecs (jpeg, webp, avif, jxl or all)"))?;
            vec![(c, true)]
        };
        for (c, explicit) in add {
            match wanted.iter_mut().find(|w| w.0 == c) {
                Some(w) => w.1 |= explicit,
                None => wanted.push((c, explicit)),
            }
        }
    }
    let mut found = Vec::new();
    let mut skipped = Vec::new();
    for (codec, explicit) in wanted {
        match classic::discover(codec, search_path) {
            Ok(t) => found.push((t, codec.default_levels())),
            Err(e) if !explicit && e.downcast_ref::<classic::MissingTool>().is_some() => {
                skipped.push(format!("skipping {}: {e}", codec.display_name()))
            }
            Err(e) => return Err(e.context(format!("--codecs {codec}: the codec's tools are needed"))),
        }
    }
    let split = |flag: &str, item: &str| -> Result<(Codec, String)> {
        let (name, value) =
            item.split_once('=').with_context(|| format!("{flag} {item}: expected CODEC=VALUE, e.g. jxl=…"))?;
        let codec = Codec::parse(name.trim()).with_context(|| format!("{flag} {item}: unknown codec '{name}'"))?;
        Ok((codec, value.to_string()))
    };
    let entry = |flag: &str, codec: Codec| -> Result<usize> {
        found
            .iter()
            .position(|(t, _)| t.codec == codec)
            .with_context(|| format!("{flag}: {codec} is not among the codecs of this run"))
    };
    let mut level_overrides = Vec::new();
    for item in levels {
        let (codec, list) = split("--levels", item)?;
        let i = entry("--levels", codec)?;
        let values: Vec<f64> = list
            .split(',')
            .map(|v| v.trim().parse::<f64>().with_context(|| format!("--levels {item}: '{v}' is not a number")))
            .collect::<Result<_>>()?;
        ensure!(!values.is_empty(), "--levels {item}: no levels");
        if let Some(bad) = values.iter().find(|&&v| !codec.level_in_range(v)) {
            bail!("--levels {item}: {bad} is outside the range of {}", codec.level_name());
        }
        level_overrides.push((i, values));
    }
    let mut setting_overrides = Vec::new();
    for item in settings {
        let (codec, args) = split("--codec-settings", item)?;
        setting_overrides
            .push((entry("--codec-settings", codec)?, args.split_whitespace().map(str::to_string).collect()));
    }
    for (i, values) in level_overrides {
        found[i].1 = values;
    }
    for (i, args) in setting_overrides {
        found[i].0.settings = args;
    }
    Ok((found, skipped))
}

fn f(v: Option<f64>, p: usize) -> String {
    v.filter(|x| x.is_finite()).map(|x| format!("{x:.p$}")).unwrap_or_else(|| "—".into())
}

fn print_point(curve: &Curve) {
    let pt = curve.points.last().expect("a point");
    let r: &EvalReport = &pt.report;
    println!(
        "{:<20} {:<28} {:>7.3} {:>7} {:>7} {:>8} {:>7}",
        curve.name,
        pt.setting,
        pt.bpp,
        f(r.psnr, 2),
        f(r.ssim, 4),
        f(r.classifier_fd, 2),
        f(r.classifier_accuracy, 3)
    );
}

fn run_comparison(args: RdArgs) -> Result<()> {
    // Everything that can be wrong is checked before the work: codecs, tools, levels, outputs,
    // the model's ladder.
    let search_path = std::env::var_os("PATH").unwrap_or_default();
    let (codecs, skipped) = codec_tools(&args.codecs, &args.levels, &args.codec_settings, &search_path)?;
    for note in &skipped {
        println!("{note}");
    }
    ensure!(args.ladder || !codecs.is_empty(), "none of the codecs of --codecs is installed; nothing to compare");
    let model_name = args.model.model.clone().unwrap_or_else(|| gddcm::zoo::default_model().to_string());
    let (model, points) = if args.ladder {
        let model = load_model(&args.model, &args.run)?;
        let points = compare::ladder_points(&model)?;
        (Some(model), points)
    } else {
        (None, vec![])
    };
    let dir = args.output.clone();
    let out_dir = OutputDir::prepare(&dir)?;
    let ladder_key = format!("gddcm-{model_name}");
    let mut outputs: Vec<PathBuf> = ["summary.json", "rd.svg", "rd.png"].iter().map(|f| dir.join(f)).collect();
    outputs.extend(codecs.iter().map(|(t, _)| dir.join(format!("{}.json", t.codec.key()))));
    if args.ladder {
        outputs.push(dir.join(format!("{ladder_key}.json")));
    }
    check_outputs(&outputs.iter().map(|o| (o.clone(), Path::new("this run"))).collect::<Vec<_>>(), args.force)?;
    let channels = match &model {
        Some(m) => m.entry.channels,
        None => gddcm::zoo::entry(&model_name)?.channels,
    };
    let ds = args.data.load(&model_name, channels)?;
    ensure!(!ds.images.is_empty(), "no images in {}", args.data.data);
    let opts = EvalOptions {
        metrics: args.metrics.clone(),
        batch: args.run.batch,
        weights_dir: args.metric_weights.clone(),
        ..Default::default()
    };
    let started = std::time::Instant::now();
    println!(
        "{} images ({} {:?}); rate = bytes on disk × 8 / pixels of the original",
        ds.images.len(),
        args.data.data,
        args.data.split
    );
    println!(
        "{:<20} {:<28} {:>7} {:>7} {:>7} {:>8} {:>7}",
        "curve", "setting", "bpp", "PSNR", "SSIM", "clf-FD", "clf-acc"
    );
    let mut curves: Vec<Curve> = Vec::new();
    for (tools, levels) in &codecs {
        let curve = compare::codec_curve(tools, levels, &ds, &opts, &mut print_point)?;
        write_json(&dir.join(format!("{}.json", curve.key)), &compare::compressai_json(&curve))?;
        curves.push(curve);
    }
    if let Some(model) = &model {
        let dev = device(&args.run.device)?;
        let batches = ds.images.len().div_ceil(args.run.batch.max(1)) as u64;
        let bar = |p: &gddcm::ladder::PointSettings, cfg: &gddcm::tokenizer::Config| {
            let nfe = gddcm::tokenizer::Tokenizer::new(model.denoiser.as_ref(), cfg, model.shape()).nfe() as u64;
            progress(&args.run, 2 * nfe * batches, &format!("point {} ({})", p.id, p.name))
        };
        let curve = compare::ladder_curve(model, &points, &ds, &opts, &dev, &bar, &mut print_point)?;
        write_json(&dir.join(format!("{}.json", curve.key)), &compare::compressai_json(&curve))?;
        // The ladder first: drawn and listed before the codecs.
        curves.insert(0, curve);
    }
    let comparisons: Vec<compare::Comparison> = match curves.first().filter(|_| args.ladder) {
        Some(ladder) => curves[1..].iter().flat_map(|c| compare::compare(ladder, c)).collect(),
        None => vec![],
    };
    let summary = serde_json::json!({
        "command": std::env::args().collect::<Vec<_>>().join(" "),
        "data": { "source": args.data.data, "split": args.data.split, "images": ds.images.len() },
        "rate": "bytes on disk × 8 / pixels of the original image, mean over the images",
        "metrics": args.metrics,
        "curves": curves.iter().map(|c| serde_json::json!({
            "key": c.key, "name": c.name, "file": format!("{}.json", c.key), "points": c.points.len(),
            "settings": c.settings,
        })).collect::<Vec<_>>(),
        "skipped_codecs": skipped,
        "bd_rate": "Bjøntegaard delta rate (VCEG-M33) of gddcm's ladder (test) against each codec (anchor): \
                    cubic fit of ln(bpp) against the quality, integrated over the common quality range; negative = \
                    gddcm needs less rate for the same quality. Needs 4 points per curve. equal_quality: each \
                    ladder point's rate against the codec's rate at the same quality (log-rate interpolated on \
                    the codec's curve).",
        "comparisons": comparisons,
    });
    write_json(&dir.join("summary.json"), &summary)?;
    let title = format!(
        "{} images: {}",
        ds.images.len(),
        curves.iter().map(|c| c.name.as_str()).collect::<Vec<_>>().join(", ")
    );
    let text = compare::plot(&curves, &title, &dir.join("rd.svg"), &dir.join("rd.png"))?;
    out_dir.keep();
    if !comparisons.is_empty() {
        println!("\ngddcm {model_name} against each codec (negative: gddcm needs less rate for the same quality)");
        println!("{:<10} {:<6} {:<52} equal-quality rate change per ladder point", "codec", "metric", "BD-rate");
        for c in &comparisons {
            let eq: Vec<String> = c
                .equal_quality
                .iter()
                .map(|e| match e.rate_change_percent {
                    Some(v) => format!(
                        "{}: {v:+.1}% ({:.3} vs {:.3} bpp)",
                        e.point,
                        e.gddcm_bpp,
                        e.codec_bpp.unwrap_or(f64::NAN)
                    ),
                    None => format!("{}: n/a ({})", e.point, e.note.as_deref().unwrap_or("")),
                })
                .collect();
            println!("{:<10} {:<6} {:<52} {}", c.codec, c.metric, c.bd_rate.describe(), eq.join("; "));
        }
    }
    println!("\n{} curves in {:.0} s; written to {}:", curves.len(), started.elapsed().as_secs_f64(), dir.display());
    for o in &outputs {
        println!("  {}", o.display());
    }
    if !text {
        println!("(no TrueType font found: the PNG has no text; the SVG has the labels; set GDDCM_FONT=FILE.ttf)");
    }
    Ok(())
}
