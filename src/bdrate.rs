//! Bjøntegaard delta rate (VCEG-M33, "Calculation of average PSNR differences between
//! RD-curves", 2001): how much more (positive) or less (negative) rate a test codec needs than
//! an anchor for the same quality, averaged over the quality range both curves cover.
//!
//! Each curve's `ln(rate)` is fitted as a cubic polynomial of the quality (least squares; with
//! exactly four points the cubic goes through them, as in VCEG-M33). The two fits are
//! integrated over the overlap of the two quality ranges; the mean difference `Δ` of the
//! log-rates gives the BD-rate `(e^Δ − 1) · 100 %`.
//!
//! Anything the method cannot answer — fewer than four distinct qualities on a curve, a rate
//! that is not positive, no overlapping quality range — is [`BdRate::NotAvailable`] with the
//! reason, never a NaN.

use nalgebra::{DMatrix, DVector};
use serde::Serialize;

/// Points a cubic fit needs (distinct qualities).
pub const MIN_POINTS: usize = 4;

/// The answer: a percentage, or why there is none.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BdRate {
    /// Rate change of the test curve against the anchor at equal quality, in percent
    /// (−50: the test needs half the rate).
    Percent(f64),
    /// Not computable; the reason.
    NotAvailable(String),
}

impl BdRate {
    /// The percentage, if there is one.
    pub fn percent(&self) -> Option<f64> {
        match self {
            BdRate::Percent(v) => Some(*v),
            BdRate::NotAvailable(_) => None,
        }
    }

    /// `"-12.3%"` or `"n/a (reason)"`.
    pub fn describe(&self) -> String {
        match self {
            BdRate::Percent(v) => format!("{v:+.1}%"),
            BdRate::NotAvailable(why) => format!("n/a ({why})"),
        }
    }
}

/// One rate–distortion point: rate (e.g. bits per pixel, > 0) and quality (e.g. PSNR, higher
/// is better).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RdPoint {
    pub rate: f64,
    pub quality: f64,
}

/// A cubic `ln(rate)(quality)` fitted to a curve, with the quality range it was fitted on.
/// The quality is centred and scaled before the fit (PSNR³ ~ 10⁵ would make the normal
/// equations ill-conditioned).
struct LogRateFit {
    coef: [f64; 4],
    centre: f64,
    scale: f64,
    lo: f64,
    hi: f64,
}

impl LogRateFit {
    fn new(name: &str, points: &[RdPoint]) -> Result<LogRateFit, String> {
        let points: Vec<RdPoint> =
            points.iter().copied().filter(|p| p.rate.is_finite() && p.quality.is_finite()).collect();
        if let Some(p) = points.iter().find(|p| p.rate <= 0.0) {
            return Err(format!("{name} has a rate of {} (a log-rate needs rates > 0)", p.rate));
        }
        let mut qualities: Vec<f64> = points.iter().map(|p| p.quality).collect();
        qualities.sort_by(f64::total_cmp);
        qualities.dedup();
        if qualities.len() < MIN_POINTS {
            return Err(format!(
                "{name} has {} point{} with distinct finite quality; a cubic fit needs at least {MIN_POINTS}",
                qualities.len(),
                if qualities.len() == 1 { "" } else { "s" }
            ));
        }
        let (lo, hi) = (qualities[0], qualities[qualities.len() - 1]);
        let (centre, scale) = ((lo + hi) / 2.0, (hi - lo) / 2.0);
        let a = DMatrix::from_fn(points.len(), 4, |i, j| ((points[i].quality - centre) / scale).powi(j as i32));
        let b = DVector::from_iterator(points.len(), points.iter().map(|p| p.rate.ln()));
        let x = a.svd(true, true).solve(&b, 1e-12).map_err(|e| format!("{name}: the cubic fit failed ({e})"))?;
        let coef = [x[0], x[1], x[2], x[3]];
        if coef.iter().any(|c| !c.is_finite()) {
            return Err(format!("{name}: the cubic fit is not finite"));
        }
        Ok(LogRateFit { coef, centre, scale, lo, hi })
    }

    /// ∫ ln(rate) d(quality) from `a` to `b`.
    fn integral(&self, a: f64, b: f64) -> f64 {
        let antiderivative = |q: f64| {
            let u = (q - self.centre) / self.scale;
            self.scale
                * self.coef.iter().enumerate().map(|(j, c)| c * u.powi(j as i32 + 1) / (j as f64 + 1.0)).sum::<f64>()
        };
        antiderivative(b) - antiderivative(a)
    }
}

/// BD-rate of `test` against `anchor` (VCEG-M33): negative when `test` needs less rate for the
/// same quality. Points may come in any order; non-finite ones are left out.
pub fn bd_rate(anchor: &[RdPoint], test: &[RdPoint]) -> BdRate {
    let fits = LogRateFit::new("the anchor", anchor).and_then(|a| Ok((a, LogRateFit::new("the test curve", test)?)));
    let (a, t) = match fits {
        Ok(f) => f,
        Err(why) => return BdRate::NotAvailable(why),
    };
    let (lo, hi) = (a.lo.max(t.lo), a.hi.min(t.hi));
    if lo >= hi {
        return BdRate::NotAvailable(format!(
            "the quality ranges do not overlap (anchor {:.4}..{:.4}, test {:.4}..{:.4})",
            a.lo, a.hi, t.lo, t.hi
        ));
    }
    let mean_log_ratio = (t.integral(lo, hi) - a.integral(lo, hi)) / (hi - lo);
    let percent = mean_log_ratio.exp_m1() * 100.0;
    if percent.is_finite() {
        BdRate::Percent(percent)
    } else {
        BdRate::NotAvailable(format!("the rate difference overflows (mean log-rate ratio {mean_log_ratio:.3e})"))
    }
}

/// The least rate at which `curve` reaches `quality`, read off its polyline in order of rate
/// (log-rate linear in quality along each segment); `None` outside the curve's quality range.
/// For a single point of a test codec against an anchor curve, where BD-rate needs four.
pub fn rate_at_quality(curve: &[RdPoint], quality: f64) -> Option<f64> {
    let mut pts: Vec<RdPoint> =
        curve.iter().copied().filter(|p| p.rate.is_finite() && p.rate > 0.0 && p.quality.is_finite()).collect();
    pts.sort_by(|a, b| a.rate.total_cmp(&b.rate));
    if !quality.is_finite() {
        return None;
    }
    // A codec's quality is not always monotone in its rate: every segment that crosses the
    // quality is a way there; the cheapest counts.
    pts.windows(2)
        .filter(|w| w[0].quality.min(w[1].quality) <= quality && quality <= w[0].quality.max(w[1].quality))
        .map(|w| {
            let span = w[1].quality - w[0].quality;
            let f = if span != 0.0 { (quality - w[0].quality) / span } else { 0.0 };
            (w[0].rate.ln() + f * (w[1].rate.ln() - w[0].rate.ln())).exp()
        })
        .chain(pts.iter().filter(|p| p.quality == quality).map(|p| p.rate))
        .min_by(f64::total_cmp)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn curve(points: &[(f64, f64)]) -> Vec<RdPoint> {
        points.iter().map(|&(rate, quality)| RdPoint { rate, quality }).collect()
    }

    fn codec_like() -> Vec<RdPoint> {
        curve(&[(0.4, 28.1), (0.7, 31.0), (1.1, 33.4), (1.8, 36.2), (2.9, 39.5), (4.2, 42.0)])
    }

    #[test]
    fn identical_curves_are_zero() {
        let c = codec_like();
        let v = bd_rate(&c, &c).percent().unwrap();
        assert!(v.abs() < 1e-9, "{v}");
    }

    #[test]
    fn the_same_curve_at_half_the_rate_is_minus_fifty() {
        let a = codec_like();
        let half: Vec<RdPoint> = a.iter().map(|p| RdPoint { rate: p.rate / 2.0, ..*p }).collect();
        let v = bd_rate(&a, &half).percent().unwrap();
        assert!((v + 50.0).abs() < 1e-9, "{v}");
        let v = bd_rate(&half, &a).percent().unwrap();
        assert!((v - 100.0).abs() < 1e-9, "{v}");
    }

    /// By hand: the anchor has rate 1 everywhere (ln R = 0) on qualities 0..3; the test has
    /// ln R = q² on qualities 1..4 (a cubic fits both exactly). The overlap is [1, 3]; the mean
    /// log-rate difference is (1/2)∫₁³ q² dq = (27 − 1)/6 = 13/3, so BD-rate = (e^{13/3} − 1)·100.
    #[test]
    fn a_hand_computed_case() {
        let anchor: Vec<RdPoint> = (0..4).map(|q| RdPoint { rate: 1.0, quality: q as f64 }).collect();
        let test: Vec<RdPoint> = (1..5).map(|q| RdPoint { rate: ((q * q) as f64).exp(), quality: q as f64 }).collect();
        let v = bd_rate(&anchor, &test).percent().unwrap();
        let expected = ((13.0f64 / 3.0).exp() - 1.0) * 100.0;
        assert!((v - expected).abs() < 1e-9 * expected, "{v} vs {expected}");
        // And the other way round: −(1 − e^{−13/3}).
        let v = bd_rate(&test, &anchor).percent().unwrap();
        assert!((v - ((-13.0f64 / 3.0).exp() - 1.0) * 100.0).abs() < 1e-9, "{v}");
    }

    #[test]
    fn too_few_points_or_no_overlap_is_not_available() {
        let c = codec_like();
        let one = curve(&[(3.1, 32.0)]);
        match bd_rate(&c, &one) {
            BdRate::NotAvailable(why) => assert!(why.contains("1 point ") && why.contains("at least 4"), "{why}"),
            other => panic!("{other:?}"),
        }
        // Repeated qualities do not count twice.
        let repeated = curve(&[(1.0, 30.0), (2.0, 30.0), (3.0, 31.0), (4.0, 32.0)]);
        assert!(bd_rate(&c, &repeated).percent().is_none());
        let far = curve(&[(1.0, 50.0), (2.0, 51.0), (3.0, 52.0), (4.0, 53.0)]);
        match bd_rate(&c, &far) {
            BdRate::NotAvailable(why) => assert!(why.contains("do not overlap"), "{why}"),
            other => panic!("{other:?}"),
        }
        let zero = curve(&[(0.0, 30.0), (2.0, 31.0), (3.0, 32.0), (4.0, 33.0)]);
        assert!(matches!(bd_rate(&c, &zero), BdRate::NotAvailable(w) if w.contains("rates > 0")));
        let nan = curve(&[(f64::NAN, 30.0), (2.0, f64::NAN), (3.0, 32.0), (4.0, 33.0)]);
        assert!(bd_rate(&c, &nan).percent().is_none());
        assert!(bd_rate(&[], &[]).describe().starts_with("n/a ("));
    }

    #[test]
    fn more_points_than_four_are_fitted_in_least_squares() {
        // ln R exactly cubic in q: a least-squares fit of any number of points recovers it.
        let f = |q: f64| 0.1 * q - 0.02 * q * q + 0.001 * q * q * q;
        let a: Vec<RdPoint> =
            (0..9).map(|i| 20.0 + 2.5 * i as f64).map(|q| RdPoint { rate: f(q).exp(), quality: q }).collect();
        let t: Vec<RdPoint> = a.iter().map(|p| RdPoint { rate: p.rate * 1.25, ..*p }).collect();
        let v = bd_rate(&a, &t).percent().unwrap();
        assert!((v - 25.0).abs() < 1e-7, "{v}");
    }

    #[test]
    fn rate_at_quality_interpolates_log_rate() {
        let c = curve(&[(1.0, 30.0), (4.0, 34.0)]);
        assert!((rate_at_quality(&c, 32.0).unwrap() - 2.0).abs() < 1e-12);
        assert_eq!(rate_at_quality(&c, 30.0), Some(1.0));
        assert_eq!(rate_at_quality(&c, 29.0), None);
        assert_eq!(rate_at_quality(&c, f64::NAN), None);
        // A non-monotone curve reaches 32.5 dB three times; the first crossing is the cheapest:
        // 5/6 of the way from 1 to 2 bpp in log-rate.
        let wiggly = curve(&[(8.0, 40.0), (1.0, 30.0), (3.0, 32.0), (2.0, 33.0)]);
        let r = rate_at_quality(&wiggly, 32.5).unwrap();
        assert!((r - 2f64.powf(5.0 / 6.0)).abs() < 1e-12, "{r}");
    }
}
