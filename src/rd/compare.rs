//! gddcm's ladder against the classic codecs on the same images (`gddcm rd --ladder --codecs`).
//!
//! A curve is a list of points, each a full measurement ([`EvalReport`], filled by the same
//! [`crate::eval::measure`] for every curve) at one setting: one of the model's shipped
//! operating points ([`crate::ladder`]; its files are stored in the compact container) or one
//! level of a codec's quality knob ([`crate::classic`]). Rate is always bytes on disk × 8 over
//! the original image's pixels, averaged over the images.
//!
//! Outputs: one CompressAI-style JSON per curve (`{"name", "description", "results": {"bpp":
//! [...], "psnr": [...], ...}}`, the layout of CompressAI's `results/image/*/*.json`, with the
//! run's settings under `"gddcm"`), and the BD-rates ([`crate::bdrate`]) of the ladder against
//! each codec.

use anyhow::{bail, ensure, Context, Result};
use candle_core::Device;
use indicatif::ProgressBar;
use rayon::prelude::*;
use serde::Serialize;
use serde_json::{json, Map, Value};

use super::{PlotLine, PlotPanel, PALETTE};
use crate::bdrate::{self, BdRate, RdPoint};
use crate::classic::CodecTools;
use crate::data::{Dataset, Image};
use crate::eval::{evaluate, measure, EvalOptions, EvalReport};
use crate::ladder::{self, PointSettings};
use crate::metrics::image::ImageU8;
use crate::tokenizer::Config;
use crate::zoo::LoadedModel;

/// One point of a curve.
#[derive(Debug, Clone, Serialize)]
pub struct CurvePoint {
    /// What was set: `"point 0 (p0-k256-n300)"`, `"-quality 75"`.
    pub setting: String,
    /// The codec's knob value (none for gddcm's points).
    pub level: Option<f64>,
    /// Bits per pixel on disk: file bytes × 8 / pixels of the original, averaged over images.
    pub bpp: f64,
    /// Every measure at this point (its `bpp` and `file_bpp` are gddcm's payload and file rates,
    /// or both the file rate for a codec).
    pub report: EvalReport,
}

/// One curve: gddcm's ladder, or a codec over its levels.
#[derive(Debug, Clone, Serialize)]
pub struct Curve {
    /// File-name key: `gddcm-fmnist-edm`, `jpeg`, ...
    pub key: String,
    /// Name in tables and plots.
    pub name: String,
    pub description: String,
    pub images: usize,
    /// How the points were made: tool versions and commands, or the operating points.
    pub settings: Value,
    pub points: Vec<CurvePoint>,
}

impl Curve {
    /// `(rate, quality)` points for a metric, leaving out points without it.
    pub fn rd_points(&self, metric: Measure) -> Vec<RdPoint> {
        self.points.iter().filter_map(|p| Some(RdPoint { rate: p.bpp, quality: metric(&p.report)? })).collect()
    }
}

/// Reads one measure of a report.
pub type Measure = fn(&EvalReport) -> Option<f64>;

/// The measures BD-rates are computed for, with their JSON keys.
pub const BD_METRICS: [(&str, Measure); 2] = [("psnr", |r| r.psnr), ("ssim", |r| r.ssim)];

/// The operating points `model` ships for rate control (the codec at its best: a point another
/// beats at no larger file is left out); an error when it ships none (there is no ladder).
pub fn ladder_points(model: &LoadedModel) -> Result<Vec<PointSettings>> {
    let reg = ladder::registry(&model.entry, &model.dir)?;
    let points: Option<Vec<PointSettings>> = reg.map(|r| r.points.into_iter().filter(|p| p.rate_control).collect());
    match points {
        Some(points) if !points.is_empty() => Ok(points),
        _ => bail!(
            "model '{}' ships no operating points ({} beside its weights), so it has no ladder to compare",
            model.entry.name,
            ladder::REGISTRY_FILE
        ),
    }
}

/// Evaluates every operating point of `points` on `data` ([`evaluate`]: encode, store as the
/// file would be stored, decode from the bytes, measure). `progress` makes a bar for a point;
/// `on_point` sees the curve after each point.
#[allow(clippy::too_many_arguments)]
pub fn ladder_curve(
    model: &LoadedModel,
    points: &[PointSettings],
    data: &Dataset,
    opts: &EvalOptions,
    device: &Device,
    progress: &dyn Fn(&PointSettings, &Config) -> Option<ProgressBar>,
    on_point: &mut dyn FnMut(&Curve),
) -> Result<Curve> {
    let mut curve = Curve {
        key: format!("gddcm-{}", model.entry.name),
        name: format!("gddcm {}", model.entry.name),
        description: format!(
            "gddcm, model {} ({}): its shipped operating points, files in the compact container",
            model.entry.name, model.entry.family
        ),
        images: data.images.len(),
        settings: json!({
            "model": model.entry.name,
            "family": model.entry.family.to_string(),
            "weights_sha256": model.weights_sha256.iter().map(|b| format!("{b:02x}")).collect::<String>(),
            "operating_points": points,
        }),
        points: vec![],
    };
    for p in points {
        let cfg = model.config(&p.settings).with_context(|| format!("operating point {} ({})", p.id, p.name))?;
        let pb = progress(p, &cfg);
        let report = evaluate(model, &cfg, data, opts, device, pb.clone())
            .with_context(|| format!("evaluating operating point {} ({})", p.id, p.name))?;
        if let Some(pb) = pb {
            pb.finish_and_clear();
        }
        curve.points.push(CurvePoint {
            setting: format!("point {} ({})", p.id, p.name),
            level: None,
            bpp: report.file_bpp,
            report,
        });
        on_point(&curve);
    }
    Ok(curve)
}

fn to_u8(img: &Image) -> Result<ImageU8> {
    Ok(ImageU8::from_chw(img.channels, img.height, img.width, img.data.clone())?)
}

/// Codes every image of `data` at every level with the codec's tools (images in parallel) and
/// measures what its decoder gives back.
pub fn codec_curve(
    tools: &CodecTools,
    levels: &[f64],
    data: &Dataset,
    opts: &EvalOptions,
    on_point: &mut dyn FnMut(&Curve),
) -> Result<Curve> {
    let n = data.images.len();
    ensure!(n > 0, "no images to code");
    let codec = tools.codec;
    let gray = data.images.iter().all(|i| i.channels == 1);
    let (encode_cmd, decode_cmd) = tools.command_lines(gray);
    let mut curve = Curve {
        key: codec.key().to_string(),
        name: codec.display_name().to_string(),
        description: format!(
            "{} via {} / {}; rate = file size on disk",
            codec.display_name(),
            tools.encoder_version,
            tools.decoder_version
        ),
        images: n,
        settings: json!({
            "encoder": tools.encoder, "encoder_version": tools.encoder_version,
            "decoder": tools.decoder, "decoder_version": tools.decoder_version,
            "encoder_settings": tools.settings,
            "level": codec.level_name(), "levels": levels,
            "encode_command": encode_cmd, "decode_command": decode_cmd,
        }),
        points: vec![],
    };
    let orig: Vec<ImageU8> = data.images.iter().map(to_u8).collect::<Result<_>>()?;
    for &level in levels {
        let coded = data
            .images
            .par_iter()
            .zip(&data.names)
            .map(|(img, name)| tools.code(img, level).with_context(|| format!("{codec} at {level}, image {name}")))
            .collect::<Result<Vec<_>>>()?;
        let bpp = coded
            .iter()
            .zip(&data.images)
            .map(|(c, i)| 8.0 * c.file.len() as f64 / (i.width * i.height) as f64)
            .sum::<f64>()
            / n as f64;
        let (encode_s, decode_s): (f64, f64) =
            coded.iter().map(|c| (c.encode_s, c.decode_s)).fold((0.0, 0.0), |a, b| (a.0 + b.0, a.1 + b.1));
        let rec: Vec<ImageU8> = coded.iter().map(|c| to_u8(&c.decoded)).collect::<Result<_>>()?;
        let mut report = EvalReport {
            model: codec.key().to_string(),
            family: "classic".to_string(),
            images: n,
            bpp,
            file_bpp: bpp,
            // Per process, the tools' start-up included (what a user running them pays).
            encode_images_per_s: n as f64 / encode_s,
            decode_images_per_s: n as f64 / decode_s,
            ..Default::default()
        };
        measure(&orig, &rec, &data.labels, opts, &mut report)?;
        let setting = format!("{} {level}", codec.level_flag());
        curve.points.push(CurvePoint { setting, level: Some(level), bpp, report });
        on_point(&curve);
    }
    Ok(curve)
}

/// The result keys of the CompressAI-style JSON, with the measure each holds.
const RESULT_KEYS: [(&str, Measure); 7] = [
    ("psnr", |r| r.psnr),
    ("ms-ssim", |r| r.ms_ssim),
    ("ssim", |r| r.ssim),
    ("lpips", |r| r.lpips),
    ("fid", |r| r.fid),
    ("clf-fd", |r| r.classifier_fd),
    ("clf-acc", |r| r.classifier_accuracy),
];

/// A curve in CompressAI's results layout: `results` holds one list per measure, a value per
/// point in the order of `bpp`; a measure missing at any point (MS-SSIM on images of 160 px or
/// less, LPIPS without its weights) is left out rather than written as null, so CompressAI's
/// plotting reads the file. Times are seconds per image. The run's settings are under `gddcm`.
pub fn compressai_json(c: &Curve) -> Value {
    let mut results = Map::new();
    results.insert("bpp".into(), json!(c.points.iter().map(|p| p.bpp).collect::<Vec<_>>()));
    let mut absent = Vec::new();
    for (key, get) in RESULT_KEYS {
        let values: Option<Vec<f64>> = c.points.iter().map(|p| get(&p.report).filter(|v| v.is_finite())).collect();
        match values {
            Some(v) if !c.points.is_empty() => {
                results.insert(key.into(), json!(v));
            }
            _ => absent.push(key),
        }
    }
    let per_image = |ips: f64| if ips.is_finite() && ips > 0.0 { json!(1.0 / ips) } else { Value::Null };
    results.insert(
        "encoding_time".into(),
        json!(c.points.iter().map(|p| per_image(p.report.encode_images_per_s)).collect::<Vec<_>>()),
    );
    results.insert(
        "decoding_time".into(),
        json!(c.points.iter().map(|p| per_image(p.report.decode_images_per_s)).collect::<Vec<_>>()),
    );
    let skipped: Vec<&String> = c.points.first().map(|p| p.report.skipped.iter().collect()).unwrap_or_default();
    json!({
        "name": c.name,
        "description": c.description,
        "results": results,
        "gddcm": {
            "key": c.key,
            "images": c.images,
            "settings": c.settings,
            "points": c.points.iter().map(|p| json!({"setting": p.setting, "level": p.level, "bpp": p.bpp})).collect::<Vec<_>>(),
            "not_measured": absent,
            "skipped": skipped,
        },
    })
}

/// A ladder point's rate against a codec's at the same quality (read off the codec's curve):
/// for when the ladder has too few points for a BD-rate.
#[derive(Debug, Clone, Serialize)]
pub struct EqualQuality {
    pub point: String,
    pub quality: f64,
    pub gddcm_bpp: f64,
    /// The codec's rate for that quality, if its curve reaches it.
    pub codec_bpp: Option<f64>,
    /// `(gddcm / codec − 1) · 100`: negative when gddcm needs less.
    pub rate_change_percent: Option<f64>,
    pub note: Option<String>,
}

/// The ladder against one codec for one measure.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    pub codec: String,
    pub metric: String,
    /// BD-rate of the ladder (test) against the codec (anchor): negative when gddcm needs less
    /// rate for the same quality.
    pub bd_rate: BdRate,
    pub equal_quality: Vec<EqualQuality>,
}

/// The ladder against `codec` for every measure of [`BD_METRICS`].
pub fn compare(ladder: &Curve, codec: &Curve) -> Vec<Comparison> {
    BD_METRICS
        .iter()
        .map(|&(metric, get)| {
            let (anchor, test) = (codec.rd_points(get), ladder.rd_points(get));
            let bd_rate = match (anchor.is_empty(), test.is_empty()) {
                (true, _) => BdRate::NotAvailable(format!("{} has no {metric} values", codec.name)),
                (_, true) => BdRate::NotAvailable(format!("{} has no {metric} values", ladder.name)),
                _ => bdrate::bd_rate(&anchor, &test),
            };
            let equal_quality = ladder
                .points
                .iter()
                .filter_map(|p| Some((p, get(&p.report)?)))
                .map(|(p, quality)| {
                    let codec_bpp = bdrate::rate_at_quality(&anchor, quality);
                    let note = codec_bpp.is_none().then(|| {
                        let (lo, hi) = anchor
                            .iter()
                            .fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), q| (l.min(q.quality), h.max(q.quality)));
                        format!("{} reaches {metric} {lo:.4}..{hi:.4} only, not {quality:.4}", codec.name)
                    });
                    EqualQuality {
                        point: p.setting.clone(),
                        quality,
                        gddcm_bpp: p.bpp,
                        codec_bpp,
                        rate_change_percent: codec_bpp.map(|c| (p.bpp / c - 1.0) * 100.0),
                        note,
                    }
                })
                .collect();
            Comparison { codec: codec.key.clone(), metric: metric.to_string(), bd_rate, equal_quality }
        })
        .collect()
}

/// Draws every curve: PSNR and SSIM against bits per pixel, side by side (gddcm's points large).
pub fn plot(curves: &[Curve], title: &str, svg: &std::path::Path, png: &std::path::Path) -> Result<bool> {
    let panels: Vec<PlotPanel> = [("PSNR (dB) ↑", BD_METRICS[0].1), ("SSIM ↑", BD_METRICS[1].1)]
        .into_iter()
        .map(|(name, get)| PlotPanel {
            title: name.to_string(),
            lines: curves
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    let mut points: Vec<(f64, f64)> =
                        c.rd_points(get).iter().filter(|p| p.rate.is_finite()).map(|p| (p.rate, p.quality)).collect();
                    points.sort_by(|a, b| a.0.total_cmp(&b.0));
                    let marker = if c.key.starts_with("gddcm") { 6 } else { 3 };
                    PlotLine { label: c.name.clone(), color: PALETTE[i % PALETTE.len()], points, marker }
                })
                .filter(|l| !l.points.is_empty())
                .collect(),
        })
        .filter(|p| !p.lines.is_empty())
        .collect();
    super::plot_panels(title, &panels, svg, png)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn curve(key: &str, pts: &[(f64, f64, f64)]) -> Curve {
        Curve {
            key: key.into(),
            name: key.to_uppercase(),
            description: String::new(),
            images: 4,
            settings: Value::Null,
            points: pts
                .iter()
                .map(|&(bpp, psnr, ssim)| CurvePoint {
                    setting: format!("{bpp}"),
                    level: None,
                    bpp,
                    report: EvalReport {
                        bpp,
                        file_bpp: bpp,
                        psnr: Some(psnr),
                        ssim: Some(ssim),
                        encode_images_per_s: 10.0,
                        decode_images_per_s: f64::NAN,
                        ..Default::default()
                    },
                })
                .collect(),
        }
    }

    #[test]
    fn compressai_layout() {
        let c = curve("jpeg", &[(1.0, 30.0, 0.9), (2.0, 35.0, 0.95)]);
        let v = compressai_json(&c);
        assert_eq!(v["name"], "JPEG");
        assert_eq!(v["results"]["bpp"], json!([1.0, 2.0]));
        assert_eq!(v["results"]["psnr"], json!([30.0, 35.0]));
        assert_eq!(v["results"]["ssim"], json!([0.9, 0.95]));
        assert_eq!(v["results"]["encoding_time"], json!([0.1, 0.1]));
        assert_eq!(v["results"]["decoding_time"], json!([null, null]));
        // MS-SSIM is not measured on small images: absent, not null.
        assert!(v["results"].get("ms-ssim").is_none());
        assert!(v["gddcm"]["not_measured"].as_array().unwrap().contains(&json!("ms-ssim")));
    }

    #[test]
    fn one_ladder_point_gives_equal_quality_rates_and_no_bd_rate() {
        let codec = curve("webp", &[(1.0, 30.0, 0.90), (2.0, 34.0, 0.94), (3.0, 37.0, 0.96), (4.0, 39.0, 0.97)]);
        let ladder = curve("gddcm-x", &[(1.0, 32.0, 0.99)]);
        let cmp = compare(&ladder, &codec);
        assert_eq!(cmp.len(), 2);
        let psnr = &cmp[0];
        assert!(matches!(&psnr.bd_rate, BdRate::NotAvailable(w) if w.contains("1 point")), "{:?}", psnr.bd_rate);
        let eq = &psnr.equal_quality[0];
        // Halfway (log-rate) between 1 and 2 bpp: √2.
        assert!((eq.codec_bpp.unwrap() - 2f64.sqrt()).abs() < 1e-12);
        assert!((eq.rate_change_percent.unwrap() - (1.0 / 2f64.sqrt() - 1.0) * 100.0).abs() < 1e-9);
        // SSIM 0.99 is beyond the codec's curve: no rate, a note saying so.
        let eq = &cmp[1].equal_quality[0];
        assert!(eq.codec_bpp.is_none() && eq.note.as_deref().unwrap().contains("not 0.99"), "{eq:?}");
        // Serialised without NaN.
        let text = serde_json::to_string(&cmp).unwrap();
        assert!(!text.contains("NaN") && text.contains("not_available"), "{text}");
    }

    #[test]
    fn the_plot_has_both_panels() {
        let dir = tempfile::tempdir().unwrap();
        let curves = [
            curve("gddcm-x", &[(3.1, 32.0, 0.97)]),
            curve("jpeg", &[(2.0, 25.0, 0.8), (3.0, 30.0, 0.9), (5.0, 38.0, 0.98)]),
        ];
        let (svg, png) = (dir.path().join("rd.svg"), dir.path().join("rd.png"));
        plot(&curves, "test", &svg, &png).unwrap();
        let img = image::open(&png).unwrap();
        assert_eq!((img.width(), img.height()), (2 * 460, 440));
        assert!(std::fs::read_to_string(&svg).unwrap().contains("polyline"));
    }
}
