//! PSNR, SSIM and MS-SSIM on 8-bit images, computed in `f64`.
//!
//! Conventions (all with data range 255, `K1 = 0.01`, `K2 = 0.03`, multi-channel images
//! scored per channel and then averaged over channels):
//!
//! - [`psnr`]: `10 log10(255² / MSE)`, MSE over all pixels and channels
//!   (scikit-image `peak_signal_noise_ratio(data_range=255)`).
//! - [`ssim`]: scikit-image `structural_similarity(gaussian_weights=True, sigma=1.5,
//!   use_sample_covariance=False, data_range=255)`: an 11-tap Gaussian window (σ = 1.5,
//!   radius 5, `f64` weights), population covariance, mean over the "valid" part of the map
//!   (scikit-image crops the radius, so its reflect padding never matters).
//! - [`ssim_skimage_default`]: scikit-image's defaults: 7×7 uniform window, sample
//!   covariance (×49/48), crop 3 pixels, mean.
//! - [`ssim_pytorch_msssim`]: `pytorch_msssim.ssim(win_size=11, win_sigma=1.5)`, which is the
//!   Gaussian SSIM above with a window computed in `f32`.
//! - [`ms_ssim`]: `pytorch_msssim.ms_ssim` with its 5 default weights: relu'd contrast-structure
//!   terms at levels 0–3 and relu'd SSIM at level 4, with 2×2 average pooling (zero padding of
//!   `side % 2`, padded zeros counted) between levels; product of `value^weight` per channel,
//!   then mean over channels. Needs a smaller side above 160 pixels.

use super::{invalid, ImageU8, Result};

const K1: f64 = 0.01;
const K2: f64 = 0.03;
const DATA_RANGE: f64 = 255.0;

/// Window used for the local statistics of SSIM.
#[derive(Debug, Clone, PartialEq)]
pub enum SsimWindow {
    /// Separable Gaussian window with `2 * radius + 1` taps, `exp(-x² / 2σ²)` normalised to
    /// sum 1, computed in `f64` (scikit-image / scipy convention).
    Gaussian {
        /// Standard deviation in pixels.
        sigma: f64,
        /// Half width; scikit-image uses `int(3.5 * sigma + 0.5)` (5 for σ = 1.5).
        radius: usize,
    },
    /// The Gaussian window of pytorch_msssim: computed in `f32` and then widened to `f64`.
    GaussianF32 {
        /// Standard deviation in pixels.
        sigma: f32,
        /// Number of taps (odd).
        size: usize,
    },
    /// Uniform (box) window of `size × size` pixels.
    Uniform {
        /// Side of the box (odd).
        size: usize,
    },
}

impl SsimWindow {
    /// The 1-D taps of the separable window.
    pub fn taps(&self) -> Vec<f64> {
        match *self {
            SsimWindow::Gaussian { sigma, radius } => {
                let r = radius as f64;
                let raw: Vec<f64> = (0..2 * radius + 1)
                    .map(|i| {
                        let x = i as f64 - r;
                        (-(x * x) / (2.0 * sigma * sigma)).exp()
                    })
                    .collect();
                let s: f64 = raw.iter().sum();
                raw.iter().map(|v| v / s).collect()
            }
            SsimWindow::GaussianF32 { sigma, size } => {
                let half = (size / 2) as f32;
                let raw: Vec<f32> = (0..size)
                    .map(|i| {
                        let x = i as f32 - half;
                        (-(x * x) / (2.0 * sigma * sigma)).exp()
                    })
                    .collect();
                // torch's float32 sum of 11 values equals the exactly rounded sum here.
                let s = raw.iter().map(|&v| v as f64).sum::<f64>() as f32;
                raw.iter().map(|v| (v / s) as f64).collect()
            }
            SsimWindow::Uniform { size } => vec![1.0 / size as f64; size],
        }
    }
}

/// Full SSIM configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct SsimConfig {
    /// Local window.
    pub window: SsimWindow,
    /// If true, variances and covariance are multiplied by `n / (n - 1)` with `n` the number
    /// of window pixels (scikit-image `use_sample_covariance=True`).
    pub sample_covariance: bool,
}

impl SsimConfig {
    /// scikit-image with `gaussian_weights=True, sigma=1.5, use_sample_covariance=False`.
    pub fn skimage_gaussian() -> Self {
        Self { window: SsimWindow::Gaussian { sigma: 1.5, radius: 5 }, sample_covariance: false }
    }

    /// scikit-image defaults: 7×7 uniform window with sample covariance.
    pub fn skimage_default() -> Self {
        Self { window: SsimWindow::Uniform { size: 7 }, sample_covariance: true }
    }

    /// pytorch_msssim `ssim(win_size=11, win_sigma=1.5)`.
    pub fn pytorch_msssim() -> Self {
        Self { window: SsimWindow::GaussianF32 { sigma: 1.5, size: 11 }, sample_covariance: false }
    }
}

fn check_pair(x: &ImageU8, y: &ImageU8) -> Result<()> {
    if (x.c, x.h, x.w) != (y.c, y.h, y.w) {
        return invalid(format!("images differ in size: {}x{}x{} vs {}x{}x{} (CxHxW)", x.c, x.h, x.w, y.c, y.h, y.w));
    }
    if x.data.len() != x.c * x.h * x.w || y.data.len() != y.c * y.h * y.w {
        return invalid("image data length does not match c*h*w");
    }
    Ok(())
}

/// Peak signal-to-noise ratio in dB with data range 255; `+inf` for identical images.
pub fn psnr(x: &ImageU8, y: &ImageU8) -> Result<f64> {
    check_pair(x, y)?;
    let sse: f64 = x
        .data
        .iter()
        .zip(&y.data)
        .map(|(&a, &b)| {
            let d = a as f64 - b as f64;
            d * d
        })
        .sum();
    let mse = sse / x.data.len() as f64;
    Ok(10.0 * (DATA_RANGE * DATA_RANGE / mse).log10())
}

/// A single-channel `f64` plane.
struct Plane {
    h: usize,
    w: usize,
    v: Vec<f64>,
}

/// "Valid" separable filtering with `taps` along rows and then columns.
fn filter_valid(p: &Plane, taps: &[f64]) -> Plane {
    let k = taps.len();
    let oh = p.h + 1 - k;
    let ow = p.w + 1 - k;
    // Along H.
    let mut tmp = vec![0.0; oh * p.w];
    for y in 0..oh {
        for (t, &wt) in taps.iter().enumerate() {
            let src = &p.v[(y + t) * p.w..(y + t + 1) * p.w];
            let dst = &mut tmp[y * p.w..(y + 1) * p.w];
            for (d, s) in dst.iter_mut().zip(src) {
                *d += wt * s;
            }
        }
    }
    // Along W.
    let mut out = vec![0.0; oh * ow];
    for y in 0..oh {
        let row = &tmp[y * p.w..(y + 1) * p.w];
        for x in 0..ow {
            out[y * ow + x] = taps.iter().zip(&row[x..x + k]).map(|(a, b)| a * b).sum();
        }
    }
    Plane { h: oh, w: ow, v: out }
}

/// Per-channel mean SSIM and mean contrast-structure term.
fn ssim_cs_plane(x: &Plane, y: &Plane, taps: &[f64], sample_cov: bool) -> (f64, f64) {
    let c1 = (K1 * DATA_RANGE).powi(2);
    let c2 = (K2 * DATA_RANGE).powi(2);
    let n_win = (taps.len() * taps.len()) as f64;
    let cov_norm = if sample_cov { n_win / (n_win - 1.0) } else { 1.0 };
    let prod = |a: &Plane, b: &Plane| Plane { h: a.h, w: a.w, v: a.v.iter().zip(&b.v).map(|(p, q)| p * q).collect() };
    let mx = filter_valid(x, taps);
    let my = filter_valid(y, taps);
    let mxx = filter_valid(&prod(x, x), taps);
    let myy = filter_valid(&prod(y, y), taps);
    let mxy = filter_valid(&prod(x, y), taps);
    let n = mx.v.len();
    let (mut ssim_sum, mut cs_sum) = (0.0, 0.0);
    for i in 0..n {
        let (ux, uy) = (mx.v[i], my.v[i]);
        let vx = cov_norm * (mxx.v[i] - ux * ux);
        let vy = cov_norm * (myy.v[i] - uy * uy);
        let vxy = cov_norm * (mxy.v[i] - ux * uy);
        let cs = (2.0 * vxy + c2) / (vx + vy + c2);
        let lum = (2.0 * ux * uy + c1) / (ux * ux + uy * uy + c1);
        ssim_sum += lum * cs;
        cs_sum += cs;
    }
    (ssim_sum / n as f64, cs_sum / n as f64)
}

fn planes(im: &ImageU8) -> Vec<Plane> {
    (0..im.c).map(|ch| Plane { h: im.h, w: im.w, v: im.plane(ch).iter().map(|&p| p as f64).collect() }).collect()
}

/// SSIM of each channel (and the mean contrast-structure term of each channel), with the given
/// configuration. Returns `(ssim_per_channel, cs_per_channel)`.
pub fn ssim_per_channel(x: &ImageU8, y: &ImageU8, cfg: &SsimConfig) -> Result<(Vec<f64>, Vec<f64>)> {
    check_pair(x, y)?;
    let taps = cfg.window.taps();
    if taps.is_empty() || taps.len().is_multiple_of(2) {
        return invalid(format!("SSIM window must have an odd size, got {}", taps.len()));
    }
    if x.h < taps.len() || x.w < taps.len() {
        return invalid(format!("image {}x{} is smaller than the {}-pixel SSIM window", x.h, x.w, taps.len()));
    }
    let (px, py) = (planes(x), planes(y));
    let mut s = Vec::with_capacity(x.c);
    let mut c = Vec::with_capacity(x.c);
    for (a, b) in px.iter().zip(&py) {
        let (si, ci) = ssim_cs_plane(a, b, &taps, cfg.sample_covariance);
        s.push(si);
        c.push(ci);
    }
    Ok((s, c))
}

/// SSIM averaged over channels with the given configuration.
pub fn ssim_with(x: &ImageU8, y: &ImageU8, cfg: &SsimConfig) -> Result<f64> {
    let (s, _) = ssim_per_channel(x, y, cfg)?;
    Ok(s.iter().sum::<f64>() / s.len() as f64)
}

/// SSIM with the scikit-image Gaussian convention (σ = 1.5, 11 taps, population covariance,
/// data range 255), averaged over channels. This is the usual "SSIM" of papers.
pub fn ssim(x: &ImageU8, y: &ImageU8) -> Result<f64> {
    ssim_with(x, y, &SsimConfig::skimage_gaussian())
}

/// SSIM with scikit-image's default arguments (7×7 uniform window, sample covariance).
pub fn ssim_skimage_default(x: &ImageU8, y: &ImageU8) -> Result<f64> {
    ssim_with(x, y, &SsimConfig::skimage_default())
}

/// SSIM as `pytorch_msssim.ssim(data_range=255)` computes it (window rounded to `f32`).
pub fn ssim_pytorch_msssim(x: &ImageU8, y: &ImageU8) -> Result<f64> {
    ssim_with(x, y, &SsimConfig::pytorch_msssim())
}

/// The default MS-SSIM level weights of pytorch_msssim, as the `f32` values it uses.
pub const MS_SSIM_WEIGHTS: [f32; 5] = [0.0448, 0.2856, 0.3001, 0.2363, 0.1333];

/// 2×2 average pooling with stride 2 and zero padding of `side % 2` on both sides of each
/// axis, padded zeros counted (torch `avg_pool2d(kernel_size=2, padding=side % 2)`).
fn avg_pool_2x2(p: &Plane) -> Plane {
    let (ph, pw) = (p.h % 2, p.w % 2);
    let oh = (p.h + 2 * ph - 2) / 2 + 1;
    let ow = (p.w + 2 * pw - 2) / 2 + 1;
    let mut v = vec![0.0; oh * ow];
    for oy in 0..oh {
        for ox in 0..ow {
            let mut s = 0.0;
            for dy in 0..2 {
                for dx in 0..2 {
                    let yy = (2 * oy + dy) as isize - ph as isize;
                    let xx = (2 * ox + dx) as isize - pw as isize;
                    if yy >= 0 && xx >= 0 && (yy as usize) < p.h && (xx as usize) < p.w {
                        s += p.v[yy as usize * p.w + xx as usize];
                    }
                }
            }
            v[oy * ow + ox] = s / 4.0;
        }
    }
    Plane { h: oh, w: ow, v }
}

/// MS-SSIM as `pytorch_msssim.ms_ssim(data_range=255)` computes it (5 levels, default
/// weights, 11-tap σ = 1.5 window), averaged over channels. The smaller image side must
/// exceed 160 pixels.
pub fn ms_ssim(x: &ImageU8, y: &ImageU8) -> Result<f64> {
    Ok(ms_ssim_levels(x, y)?.0)
}

/// MS-SSIM together with the per-level values `[level][channel]` (relu'd contrast-structure
/// at levels 0–3, relu'd SSIM at level 4).
pub fn ms_ssim_levels(x: &ImageU8, y: &ImageU8) -> Result<(f64, Vec<Vec<f64>>)> {
    check_pair(x, y)?;
    let win = SsimWindow::GaussianF32 { sigma: 1.5, size: 11 };
    let taps = win.taps();
    let min_side = x.h.min(x.w);
    if min_side <= (taps.len() - 1) * 16 {
        return invalid(format!(
            "MS-SSIM needs the smaller image side to exceed {} pixels, got {}x{}",
            (taps.len() - 1) * 16,
            x.h,
            x.w
        ));
    }
    let mut per_channel = Vec::with_capacity(x.c);
    let (px, py) = (planes(x), planes(y));
    let mut levels: Vec<Vec<f64>> = vec![Vec::new(); 5];
    for (mut a, mut b) in px.into_iter().zip(py) {
        let mut prod = 1.0;
        for (lvl, &wt) in MS_SSIM_WEIGHTS.iter().enumerate() {
            let (s, cs) = ssim_cs_plane(&a, &b, &taps, false);
            let v = if lvl < 4 { cs.max(0.0) } else { s.max(0.0) };
            levels[lvl].push(v);
            prod *= v.powf(wt as f64);
            if lvl < 4 {
                a = avg_pool_2x2(&a);
                b = avg_pool_2x2(&b);
            }
        }
        per_channel.push(prod);
    }
    let mean = per_channel.iter().sum::<f64>() / per_channel.len() as f64;
    Ok((mean, levels))
}

/// The pixel metrics of one image pair, as an evaluation reports them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PixelScores {
    /// [`psnr`] in dB (`+inf` for identical images).
    pub psnr: f64,
    /// [`ssim`] (scikit-image Gaussian convention).
    pub ssim: f64,
    /// [`ms_ssim`], or `None` when the smaller side is 160 pixels or less.
    pub ms_ssim: Option<f64>,
}

/// PSNR, SSIM and (when the image is large enough) MS-SSIM of one pair.
pub fn pixel_scores(x: &ImageU8, y: &ImageU8) -> Result<PixelScores> {
    let ms = if x.h.min(x.w) > 160 { Some(ms_ssim(x, y)?) } else { None };
    Ok(PixelScores { psnr: psnr(x, y)?, ssim: ssim(x, y)?, ms_ssim: ms })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp(c: usize, h: usize, w: usize, seed: u32) -> ImageU8 {
        let data =
            (0..c * h * w).map(|i| ((i as u32).wrapping_mul(2654435761).wrapping_add(seed) >> 24) as u8).collect();
        ImageU8::from_chw(c, h, w, data).unwrap()
    }

    #[test]
    fn identical_images() {
        let a = ramp(3, 20, 24, 1);
        assert!((ssim(&a, &a).unwrap() - 1.0).abs() < 1e-12);
        assert!((ssim_skimage_default(&a, &a).unwrap() - 1.0).abs() < 1e-12);
        assert!(psnr(&a, &a).unwrap().is_infinite());
        let s = pixel_scores(&a, &a).unwrap();
        assert!(s.ms_ssim.is_none() && (s.ssim - 1.0).abs() < 1e-12);
    }

    #[test]
    fn bad_inputs_are_errors() {
        let a = ramp(3, 20, 24, 1);
        let b = ramp(3, 20, 20, 1);
        assert!(ssim(&a, &b).is_err());
        assert!(psnr(&a, &b).is_err());
        let tiny = ramp(1, 8, 8, 2);
        assert!(ssim(&tiny, &tiny).is_err());
        assert!(ms_ssim(&a, &a).is_err());
        assert!(ImageU8::from_chw(3, 2, 2, vec![0; 5]).is_err());
    }

    #[test]
    fn hwc_roundtrip() {
        let a = ramp(3, 5, 7, 3);
        let hwc = a.to_hwc();
        assert_eq!(ImageU8::from_hwc(5, 7, 3, &hwc).unwrap(), a);
    }

    #[test]
    fn odd_pooling_counts_padding() {
        let p = Plane { h: 3, w: 3, v: vec![4.0; 9] };
        let q = avg_pool_2x2(&p);
        assert_eq!((q.h, q.w), (2, 2));
        // Top-left window holds 3 padded zeros and one pixel.
        assert_eq!(q.v[0], 1.0);
        assert_eq!(q.v[3], 4.0);
    }
}
