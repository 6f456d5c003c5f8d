//! How good a model's own samples are: the yardstick of the bundled models' training.
//!
//! At low rates a token file says little and the decoder's output is mostly the model's own
//! guess, so the quality of the prior is the quality of the codec. [`sample_quality`] measures
//! it the way the training scripts do (`tools/train/common.py`, `sample_quality`): the
//! classifier Frechet distance (stand-in, not FID) of the samples against a reference set, the
//! same distance for real images of the same count as its floor, and the classes the
//! classifier sees. It adds a test for samples that are noise rather than garments
//! ([`roughness`]), since a weak DDPM turns out speckled blobs that a Frechet distance alone
//! averages away.

use serde::Serialize;

use super::fid::{frechet_distance, FeatureStats};
use super::standin::{ClassifierStandIn, STANDIN_CLASSES, STANDIN_FEATURES, STANDIN_SIZE};
use super::{invalid, ImageU8, Result};

/// The mean absolute difference between horizontally and vertically adjacent pixels, in 8-bit
/// levels, over all channels. Garments are smooth regions with edges; a noise-like sample is
/// speckled, background included. [`sample_quality`] calls a sample noise-like when it is
/// rougher than 99.9% of the reference images: on v1 `fmnist-ddpm`'s samples that flags the
/// speckled squares and no garment.
pub fn roughness(img: &ImageU8) -> f64 {
    let (h, w) = (img.h, img.w);
    let (mut sum, mut count) = (0u64, 0u64);
    for ch in 0..img.c {
        let p = &img.data[ch * h * w..][..h * w];
        for y in 0..h {
            for x in 0..w {
                let v = p[y * w + x] as i32;
                if x + 1 < w {
                    sum += (v - p[y * w + x + 1] as i32).unsigned_abs() as u64;
                    count += 1;
                }
                if y + 1 < h {
                    sum += (v - p[(y + 1) * w + x] as i32).unsigned_abs() as u64;
                    count += 1;
                }
            }
        }
    }
    if count == 0 {
        0.0
    } else {
        sum as f64 / count as f64
    }
}

/// Pads a gray image smaller than the classifier's input with background (level 0, i.e. −1) to
/// 32×32, centred, as the models and the classifier were trained (Fashion-MNIST's 28×28 gets
/// 2 px on each side). A 32×32 image is returned as it is.
pub fn pad_to_classifier(img: &ImageU8) -> Result<ImageU8> {
    if img.c != 1 || img.h > STANDIN_SIZE || img.w > STANDIN_SIZE {
        return invalid(format!(
            "the classifier stand-in takes gray images up to {STANDIN_SIZE}x{STANDIN_SIZE}, got {}x{}x{}",
            img.c, img.h, img.w
        ));
    }
    let (top, left) = ((STANDIN_SIZE - img.h) / 2, (STANDIN_SIZE - img.w) / 2);
    let mut out = vec![0u8; STANDIN_SIZE * STANDIN_SIZE];
    for y in 0..img.h {
        out[(top + y) * STANDIN_SIZE + left..][..img.w].copy_from_slice(&img.data[y * img.w..][..img.w]);
    }
    ImageU8::from_chw(1, STANDIN_SIZE, STANDIN_SIZE, out)
}

/// What [`sample_quality`] measured.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SampleQuality {
    /// Number of samples.
    pub n_samples: usize,
    /// Number of reference images.
    pub n_reference: usize,
    /// Classifier Frechet distance (stand-in, not FID) of the samples against the reference.
    pub classifier_fd: f64,
    /// The same distance for the first `n_samples` reference images: what real data of the same
    /// count scores, the floor no model can beat by much.
    pub floor_fd: f64,
    /// Samples rougher than the threshold ([`roughness`]).
    pub noise_like: usize,
    /// `noise_like / n_samples`.
    pub noise_like_fraction: f64,
    /// The noise-like threshold: the [`roughness`] that only 0.1% of the reference images
    /// exceed (the 10th roughest of 10 000; the roughest of fewer than 1000).
    pub roughness_threshold: f64,
    /// The fraction of reference images above the threshold (at most 0.001): what real data
    /// scores on the same test.
    pub noise_like_fraction_reference: f64,
    /// Mean [`roughness`] of the samples and of the reference images.
    pub mean_roughness: f64,
    pub mean_roughness_reference: f64,
    /// How many samples the classifier puts in each class (0–9).
    pub predicted_class_histogram: Vec<usize>,
    /// The mean of the classifier's largest softmax probability over the samples.
    pub mean_max_softmax: f64,
}

/// Measures `samples` against `reference` (both 1×32×32, the classifier's input; pad with
/// [`pad_to_classifier`]). `reference` needs at least as many images as `samples` for the floor.
pub fn sample_quality(
    net: &ClassifierStandIn,
    samples: &[ImageU8],
    reference: &[ImageU8],
    batch: usize,
) -> Result<SampleQuality> {
    let n = samples.len();
    if n < 2 || reference.len() < n {
        return invalid(format!(
            "sample quality needs at least 2 samples and at least as many reference images, got {n} samples and {} reference images",
            reference.len()
        ));
    }
    let fs = net.features_of_images(samples, batch)?;
    let fr = net.features_of_images(reference, batch)?;
    let stats_r = FeatureStats::from_features(&fr, reference.len(), STANDIN_FEATURES)?;
    let fd =
        |f: &[f64], count: usize| frechet_distance(&FeatureStats::from_features(f, count, STANDIN_FEATURES)?, &stats_r);
    let classifier_fd = fd(&fs, n)?;
    let floor_fd = fd(&fr[..n * STANDIN_FEATURES], n)?;

    let rough_r: Vec<f64> = reference.iter().map(roughness).collect();
    let rough_s: Vec<f64> = samples.iter().map(roughness).collect();
    let roughness_threshold = quantile_exceeded_by(&rough_r, rough_r.len() / 1000);
    let above = |v: &[f64]| v.iter().filter(|&&r| r > roughness_threshold).count();
    let noise_like = above(&rough_s);
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;

    let mut predicted_class_histogram = vec![0usize; STANDIN_CLASSES];
    let mut max_softmax = 0.0;
    for chunk in samples.chunks(batch.max(1)) {
        let rows: Vec<Vec<f32>> = net.logits(&ClassifierStandIn::images_to_input(chunk)?)?.to_vec2()?;
        for row in rows {
            let (arg, max) =
                row.iter().enumerate().fold((0, f32::NEG_INFINITY), |b, (i, &v)| if v > b.1 { (i, v) } else { b });
            predicted_class_histogram[arg] += 1;
            // softmax of the largest logit = 1 / Σ exp(l_i − l_max), without overflow.
            max_softmax += 1.0 / row.iter().map(|&v| ((v - max) as f64).exp()).sum::<f64>();
        }
    }
    Ok(SampleQuality {
        n_samples: n,
        n_reference: reference.len(),
        classifier_fd,
        floor_fd,
        noise_like,
        noise_like_fraction: noise_like as f64 / n as f64,
        roughness_threshold,
        noise_like_fraction_reference: above(&rough_r) as f64 / rough_r.len() as f64,
        mean_roughness: mean(&rough_s),
        mean_roughness_reference: mean(&rough_r),
        predicted_class_histogram,
        mean_max_softmax: max_softmax / n as f64,
    })
}

/// The value that at most `k` of `values` exceed: the `(k+1)`-th largest.
fn quantile_exceeded_by(values: &[f64], k: usize) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(|a, b| b.total_cmp(a));
    sorted[k.min(sorted.len() - 1)]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gray(h: usize, w: usize, f: impl Fn(usize, usize) -> u8) -> ImageU8 {
        let data = (0..h * w).map(|i| f(i / w, i % w)).collect();
        ImageU8::from_chw(1, h, w, data).unwrap()
    }

    #[test]
    fn roughness_counts_every_neighbour_pair_once() {
        // Flat: 0. A vertical edge 0 | 255 in a 2×2 image: 2 horizontal pairs differ by 255,
        // 2 vertical pairs by 0 → 510 / 4.
        assert_eq!(roughness(&gray(3, 3, |_, _| 7)), 0.0);
        assert_eq!(roughness(&gray(2, 2, |_, x| if x == 0 { 0 } else { 255 })), 127.5);
        // A checkerboard is as rough as an image can be.
        assert_eq!(roughness(&gray(4, 4, |y, x| if (x + y) % 2 == 0 { 0 } else { 255 })), 255.0);
    }

    #[test]
    fn padding_centres_the_image_on_background() {
        let p = pad_to_classifier(&gray(28, 28, |_, _| 200)).unwrap();
        assert_eq!((p.c, p.h, p.w), (1, 32, 32));
        assert_eq!(p.data[0], 0);
        assert_eq!(p.data[2 * 32 + 1], 0);
        assert_eq!(p.data[2 * 32 + 2], 200);
        assert_eq!(p.data[29 * 32 + 29], 200);
        assert_eq!(p.data[30 * 32 + 30], 0);
        assert_eq!(p.data.iter().filter(|&&v| v == 200).count(), 28 * 28);
        assert!(pad_to_classifier(&gray(33, 28, |_, _| 0)).is_err());
    }

    #[test]
    fn the_threshold_is_exceeded_by_at_most_k_values() {
        let v: Vec<f64> = (0..2000).map(|i| ((i * 7919) % 2000) as f64).collect();
        assert_eq!(quantile_exceeded_by(&v, 2), 1997.0);
        assert_eq!(quantile_exceeded_by(&v, 0), 1999.0);
        assert_eq!(quantile_exceeded_by(&[3.0, 1.0], 5), 1.0);
    }
}
