//! Rate–distortion sweeps (SPEC 6, SPEC 9 "report the whole K sweep"): evaluate a model over
//! a grid of codebook sizes `K` and token counts `N`, at p = 0 (the model's profile) and at
//! p > 0 (Algorithm 1 from the largest time, DDCM for DDPM at p = ½), and plot quality
//! against bits per pixel.
//!
//! Each point is a full [`crate::eval::evaluate`]: tokens written, decoded from their bytes,
//! measured. The plot is drawn with `plotters` as SVG (text as `<text>` elements) and PNG
//! (text rasterised with ab_glyph from a TrueType font found at run time under
//! `/usr/share/fonts` or `$GDDCM_FONT`; without one the PNG is drawn without text and the
//! SVG keeps the labels).
//!
//! [`compare`] puts the model's shipped operating points (its ladder) beside the classic
//! codecs ([`crate::classic`]) on the same images, with BD-rates ([`crate::bdrate`]).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{anyhow, ensure, Context, Result};
use candle_core::Device;
use plotters::coord::Shift;
use plotters::prelude::*;
use serde::Serialize;

use crate::data::{write_atomic, Dataset};
use crate::eval::{evaluate, EvalOptions, EvalReport};
use crate::profile::{InitKind, Settings};
use crate::zoo::LoadedModel;

pub mod compare;

/// One point of the sweep: a `(p, K, N)` and its evaluation.
#[derive(Debug, Clone, Serialize)]
pub struct RdPoint {
    /// p of the step (0: Algorithm 2, SPEC 2.7; else Algorithm 1, SPEC 2.5).
    pub p: f64,
    /// Codebook size K (SPEC 6: ⌈log2 K⌉ bits per token).
    pub k: u32,
    /// Tokens N.
    pub n: u32,
    /// The settings evaluated (profile or defaults with K, N, p set).
    pub settings: Settings,
    /// The evaluation (SPEC 9 protocol) at this point.
    pub report: EvalReport,
}

/// A whole sweep of one model.
#[derive(Debug, Clone, Serialize)]
pub struct RdSweep {
    /// The model's name.
    pub model: String,
    /// Its family.
    pub family: String,
    /// Images evaluated at every point.
    pub images: usize,
    /// Where the p = 0 settings came from: `"profile"` (shipped `profile.json`) or `"defaults"`.
    pub p0_settings: String,
    /// The points, in order p, then N, then K.
    pub points: Vec<RdPoint>,
}

/// The settings of one sweep point (and of one `gddcm table1` row): `base` (the p = 0
/// profile) with `K`, `N`; for `p > 0` Algorithm 1 from the family's largest time with its
/// default grid, started from seeded noise (I1) with the default mixing, as DDCM does, so
/// nothing of the p = 0 search carries over. For DDPM at p = ½ this is exactly the DDCM
/// baseline ([`crate::tokenizer::Config::ddcm`], SPEC 4).
pub fn point_settings(base: &Settings, p: f64, k: u32, n: u32) -> Settings {
    let mut s = Settings { k, n, ..base.clone() };
    if p > 0.0 {
        (s.p, s.t_start, s.t_end, s.grid_rho) = (p, None, None, None);
        (s.init, s.mixing) = (InitKind::I1, Settings::default().mixing);
    } else if base.p > 0.0 {
        // A p > 0 profile's times mean something else at p = 0.
        (s.p, s.t_start, s.t_end, s.grid_rho) = (0.0, None, None, None);
    }
    s
}

/// Evaluates every `(p, K, N)` of the grid on `data` (SPEC 6, 9). `on_point` sees each point
/// as it completes (to print or checkpoint). A configuration the model cannot run (e.g.
/// DDPM Algorithm 1 with `N` above 999) is an error naming it.
#[allow(clippy::too_many_arguments)]
pub fn sweep(
    model: &LoadedModel,
    ps: &[f64],
    ks: &[u32],
    ns: &[u32],
    data: &Dataset,
    opts: &EvalOptions,
    device: &Device,
    mut on_point: impl FnMut(&RdSweep),
) -> Result<RdSweep> {
    ensure!(!ps.is_empty() && !ks.is_empty() && !ns.is_empty(), "the sweep needs at least one p, K and N");
    let profile = model.profile()?;
    let mut out = RdSweep {
        model: model.entry.name.to_string(),
        family: model.entry.family.to_string(),
        images: data.images.len(),
        p0_settings: if profile.is_some() { "profile" } else { "defaults" }.into(),
        points: vec![],
    };
    let base = profile.unwrap_or_default();
    for &p in ps {
        for &n in ns {
            for &k in ks {
                let s = point_settings(&base, p, k, n);
                let cfg = model.config(&s).with_context(|| format!("p = {p}, K = {k}, N = {n}"))?;
                let report = evaluate(model, &cfg, data, opts, device, None)
                    .with_context(|| format!("evaluating p = {p}, K = {k}, N = {n}"))?;
                out.points.push(RdPoint { p, k, n, settings: s, report });
                on_point(&out);
            }
        }
    }
    Ok(out)
}

/// A TrueType font for the PNG's text: `$GDDCM_FONT`, else DejaVu Sans, else the first
/// `.ttf` under `/usr/share/fonts`. Registered with plotters once.
fn font_ready() -> bool {
    static READY: OnceLock<bool> = OnceLock::new();
    *READY.get_or_init(|| {
        let mut candidates: Vec<PathBuf> = std::env::var_os("GDDCM_FONT").map(PathBuf::from).into_iter().collect();
        candidates.push("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf".into());
        candidates.extend(find_ttf(Path::new("/usr/share/fonts"), 4));
        for path in candidates {
            if let Ok(bytes) = std::fs::read(&path) {
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                if plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
                    return true;
                }
            }
        }
        false
    })
}

fn find_ttf(dir: &Path, depth: usize) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(dir) else { return vec![] };
    let mut entries: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
    entries.sort();
    let mut out = Vec::new();
    for p in entries {
        if p.is_dir() && depth > 0 {
            out.extend(find_ttf(&p, depth - 1));
        } else if p.extension().is_some_and(|e| e.eq_ignore_ascii_case("ttf")) {
            out.push(p);
        }
    }
    out
}

/// A quality metric the sweep's plot can show (one panel each).
struct Panel {
    name: &'static str,
    get: fn(&EvalReport) -> Option<f64>,
}

const PANELS: [Panel; 4] = [
    Panel { name: "PSNR (dB) ↑", get: |r| r.psnr },
    Panel { name: "SSIM ↑", get: |r| r.ssim },
    Panel { name: "LPIPS ↓", get: |r| r.lpips },
    Panel { name: "classifier FD (stand-in) ↓", get: |r| r.classifier_fd },
];

/// One sweep line: its label, its p and its `(bpp, value)` points.
type Line = (String, f64, Vec<(f64, f64)>);

/// One line per `(p, N)`, K growing along it.
fn series(sw: &RdSweep, get: fn(&EvalReport) -> Option<f64>) -> Vec<Line> {
    let mut lines: Vec<Line> = Vec::new();
    for pt in &sw.points {
        let Some(v) = get(&pt.report).filter(|v| v.is_finite()) else { continue };
        let label = format!("p={} N={}", pt.p, pt.n);
        match lines.iter_mut().find(|l| l.0 == label) {
            Some(l) => l.2.push((pt.report.bpp, v)),
            None => lines.push((label, pt.p, vec![(pt.report.bpp, v)])),
        }
    }
    for l in &mut lines {
        l.2.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    lines
}

/// One curve of a plot panel.
#[derive(Debug, Clone)]
pub struct PlotLine {
    pub label: String,
    pub color: RGBColor,
    /// `(bits per pixel, value)`, drawn in this order.
    pub points: Vec<(f64, f64)>,
    /// Radius of the point markers (a curve of one point is only its marker).
    pub marker: u32,
}

/// One panel: a quality measure against bits per pixel.
#[derive(Debug, Clone)]
pub struct PlotPanel {
    pub title: String,
    pub lines: Vec<PlotLine>,
}

/// Colours of the plots' curves, in order.
pub const PALETTE: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(255, 127, 14),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(23, 190, 207),
];

fn bounds(vals: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = vals.fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), v| (l.min(v), h.max(v)));
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    let pad = ((hi - lo) * 0.08).max(1e-3 * hi.abs().max(1.0));
    (lo - pad, hi + pad)
}

fn draw<DB: DrawingBackend>(root: DrawingArea<DB, Shift>, title: &str, panels: &[PlotPanel], text: bool) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| anyhow!("drawing the plot: {e:?}");
    root.fill(&WHITE).map_err(err)?;
    ensure!(!panels.is_empty(), "no point has a metric to plot");
    let root = if text { root.titled(title, ("sans-serif", 22)).map_err(err)? } else { root };
    let areas = root.split_evenly((1, panels.len()));
    for (area, panel) in areas.iter().zip(panels) {
        let (x0, x1) = bounds(panel.lines.iter().flat_map(|l| l.points.iter().map(|p| p.0)));
        let (y0, y1) = bounds(panel.lines.iter().flat_map(|l| l.points.iter().map(|p| p.1)));
        let mut builder = ChartBuilder::on(area);
        builder.margin(12);
        if text {
            builder.caption(&panel.title, ("sans-serif", 18)).x_label_area_size(40).y_label_area_size(55);
        }
        let mut chart = builder.build_cartesian_2d(x0..x1, y0..y1).map_err(err)?;
        let mut mesh = chart.configure_mesh();
        if text {
            mesh.x_desc("bits per pixel").y_desc(&panel.title);
        } else {
            mesh.x_labels(0).y_labels(0);
        }
        mesh.draw().map_err(err)?;
        for line in &panel.lines {
            let color = line.color;
            let s = chart.draw_series(LineSeries::new(line.points.clone(), color.stroke_width(2))).map_err(err)?;
            if text {
                s.label(line.label.as_str())
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2)));
            }
            let r = line.marker;
            chart.draw_series(line.points.iter().map(|&(x, y)| Circle::new((x, y), r, color.filled()))).map_err(err)?;
        }
        if text {
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .position(SeriesLabelPosition::LowerRight)
                .label_font(("sans-serif", 13))
                .draw()
                .map_err(err)?;
        }
    }
    root.present().map_err(err)?;
    Ok(())
}

/// Draws `panels` side by side under `title` as SVG and PNG (each written atomically). Returns
/// whether the PNG has text (a TrueType font was found).
pub fn plot_panels(title: &str, panels: &[PlotPanel], svg: &Path, png: &Path) -> Result<bool> {
    let text = font_ready();
    let size = (460 * panels.len().max(1) as u32, 440);
    let mut s = String::new();
    draw(SVGBackend::with_string(&mut s, size).into_drawing_area(), title, panels, text)?;
    write_atomic(svg, s.as_bytes())?;
    let mut buf = vec![0u8; size.0 as usize * size.1 as usize * 3];
    draw(BitMapBackend::with_buffer(&mut buf, size).into_drawing_area(), title, panels, text)?;
    let img = image::RgbImage::from_raw(size.0, size.1, buf).context("plot buffer size")?;
    let mut bytes = std::io::Cursor::new(Vec::new());
    img.write_to(&mut bytes, image::ImageFormat::Png).context("encoding the PNG plot")?;
    write_atomic(png, bytes.get_ref())?;
    Ok(text)
}

/// Writes the sweep's plot as SVG and PNG (each written atomically): one panel per metric any
/// point has, one line per `(p, N)` coloured by p, lighter for fewer tokens. Returns whether
/// the PNG has text (a TrueType font was found).
pub fn plot(sw: &RdSweep, svg: &Path, png: &Path) -> Result<bool> {
    let ps: Vec<f64> = {
        let mut v: Vec<f64> = sw.points.iter().map(|p| p.p).collect();
        v.dedup();
        v
    };
    let n_values: Vec<u32> = {
        let mut v: Vec<u32> = sw.points.iter().map(|p| p.n).collect();
        v.sort_unstable();
        v.dedup();
        v
    };
    let panels: Vec<PlotPanel> = PANELS
        .iter()
        .map(|panel| {
            let lines = series(sw, panel.get)
                .into_iter()
                .map(|(label, p, points)| {
                    let pi = ps.iter().position(|&q| q == p).unwrap_or(0);
                    let ni = n_values.iter().position(|&n| label.ends_with(&format!("N={n}"))).unwrap_or(0);
                    let base = PALETTE[pi % 4];
                    let f = 0.45 + 0.55 * (ni + 1) as f64 / n_values.len() as f64;
                    let mix = |c: u8| (255.0 - (255.0 - c as f64) * f) as u8;
                    PlotLine { label, color: RGBColor(mix(base.0), mix(base.1), mix(base.2)), points, marker: 3 }
                })
                .collect();
            PlotPanel { title: panel.name.to_string(), lines }
        })
        .filter(|p: &PlotPanel| !p.lines.is_empty())
        .collect();
    let title = format!("{} ({}): rate–distortion, {} images", sw.model, sw.family, sw.images);
    plot_panels(&title, &panels, svg, png)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake() -> RdSweep {
        let mut points = vec![];
        for p in [0.0, 0.5] {
            for n in [50, 100] {
                for k in [2, 16, 256] {
                    let bpp = n as f64 * (k as f64).log2() / 784.0;
                    let report = EvalReport {
                        bpp,
                        psnr: Some(10.0 + 3.0 * bpp - 4.0 * p),
                        ssim: Some(0.5 + 0.1 * bpp),
                        classifier_fd: Some(30.0 / (1.0 + bpp)),
                        ..Default::default()
                    };
                    points.push(RdPoint { p, k, n, settings: Settings::default(), report });
                }
            }
        }
        RdSweep { model: "fake".into(), family: "edm".into(), images: 4, p0_settings: "defaults".into(), points }
    }

    #[test]
    fn plots_are_written_as_svg_and_png() {
        let dir = tempfile::tempdir().unwrap();
        let (svg, png) = (dir.path().join("rd.svg"), dir.path().join("rd.png"));
        let text = plot(&fake(), &svg, &png).unwrap();
        let s = std::fs::read_to_string(&svg).unwrap();
        assert!(s.starts_with("<svg") && s.contains("polyline"));
        if text {
            assert!(s.contains("bits per pixel"));
        }
        let img = image::open(&png).unwrap();
        assert_eq!((img.width(), img.height()), (460 * 3, 440));
        // Not blank: the lines are coloured.
        assert!(img.to_rgb8().pixels().any(|p| p.0[0] != p.0[1] || p.0[1] != p.0[2]));
    }

    #[test]
    fn p_half_settings_start_from_the_largest_time() {
        let base = Settings { t_start: Some(0.3), intervals: 6, ..Settings::default() };
        let s = point_settings(&base, 0.5, 16, 100);
        assert_eq!((s.p, s.k, s.n, s.t_start), (0.5, 16, 100, None));
        let s0 = point_settings(&base, 0.0, 4096, 50);
        assert_eq!((s0.p, s0.k, s0.n, s0.t_start, s0.intervals), (0.0, 4096, 50, Some(0.3), 6));
    }

    #[test]
    fn ddpm_at_one_half_is_exactly_ddcm() {
        use crate::family::Family;
        use crate::marginal::{DdpmSchedule, Marginal};
        use crate::tokenizer::Config;
        // A searched p = 0 profile with another init and mixing must not leak into p = ½.
        let base = Settings {
            init: InitKind::I3,
            mixing: crate::marginal::Mixing::SmallSigma,
            t_start: Some(48.0),
            ..Settings::default()
        };
        let s = point_settings(&base, 0.5, 256, 300);
        let cfg = s.to_config(Family::Ddpm, &Marginal::Ddpm(DdpmSchedule::cifar10())).unwrap();
        assert_eq!(cfg, Config::ddcm(256, s.seed));
    }
}
