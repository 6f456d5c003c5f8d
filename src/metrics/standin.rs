//! Offline stand-ins for the Inception-based metrics.
//!
//! [`ClassifierStandIn`] is a small Fashion-MNIST classifier whose 128-d penultimate features
//! replace Inception pool3 features when the real Inception weights are not available. The
//! numbers it gives ([`classifier_frechet_distance`], [`classifier_accuracy`]) are only
//! comparable with each other, for the same classifier weights: they are **not** FID or
//! Inception Score and must not be reported as such.
//!
//! Architecture (fixed; the PyTorch training code uses the same module names): input
//! `[B, 1, 32, 32]` in `[-1, 1]`; all convolutions 3×3, padding 1, with bias:
//! `conv1` (1→32) ReLU, `conv2` (32→32) ReLU, max-pool 2, `conv3` (32→64) ReLU,
//! `conv4` (64→64) ReLU, max-pool 2, flatten in NCHW order (4096), `fc1` (4096→128) ReLU
//! = features, `fc2` (128→10) = logits.

use super::fid::{frechet_distance, FeatureStats};
use super::image::images_to_tensor;
use super::tensors::{Conv2d, Linear, WeightFile};
use super::{invalid, ImageU8, Result};
use candle_core::{Device, Tensor};
use std::path::Path;

/// Side of the classifier's square input.
pub const STANDIN_SIZE: usize = 32;
/// Length of the feature vector.
pub const STANDIN_FEATURES: usize = 128;
/// Number of classes.
pub const STANDIN_CLASSES: usize = 10;

/// The Fashion-MNIST classifier stand-in (see the module docs).
#[derive(Debug, Clone)]
pub struct ClassifierStandIn {
    conv1: Conv2d,
    conv2: Conv2d,
    conv3: Conv2d,
    conv4: Conv2d,
    fc1: Linear,
    fc2: Linear,
}

impl ClassifierStandIn {
    /// Loads the weights (`conv1.weight`, `conv1.bias`, …, `fc2.bias`, any float dtype) from a
    /// safetensors file or a PyTorch zip checkpoint of the `state_dict`.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let wf = WeightFile::open(path)?;
        let conv = |name: &str, i: usize, o: usize| Conv2d::load(&wf, name, i, o, (3, 3), 1, (1, 1), true);
        Ok(Self {
            conv1: conv("conv1", 1, 32)?,
            conv2: conv("conv2", 32, 32)?,
            conv3: conv("conv3", 32, 64)?,
            conv4: conv("conv4", 64, 64)?,
            fc1: Linear::load(&wf, "fc1", 64 * 8 * 8, STANDIN_FEATURES, true)?,
            fc2: Linear::load(&wf, "fc2", STANDIN_FEATURES, STANDIN_CLASSES, true)?,
        })
    }

    fn check_input(x: &Tensor) -> Result<()> {
        match x.dims() {
            [_, 1, STANDIN_SIZE, STANDIN_SIZE] => Ok(()),
            d => invalid(format!("classifier stand-in expects [B, 1, 32, 32] in [-1, 1], got {d:?}")),
        }
    }

    /// The 128-d features (fc1 after ReLU) of `x`, `[B, 1, 32, 32]` `f32` in `[-1, 1]`.
    pub fn features(&self, x: &Tensor) -> Result<Tensor> {
        Self::check_input(x)?;
        let x = self.conv1.forward(x)?.relu()?;
        let x = self.conv2.forward(&x)?.relu()?.max_pool2d(2)?;
        let x = self.conv3.forward(&x)?.relu()?;
        let x = self.conv4.forward(&x)?.relu()?.max_pool2d(2)?;
        let x = x.flatten_from(1)?;
        Ok(self.fc1.forward(&x)?.relu()?)
    }

    /// The 10 class logits of `x`, `[B, 1, 32, 32]` in `[-1, 1]`.
    pub fn logits(&self, x: &Tensor) -> Result<Tensor> {
        self.fc2.forward(&self.features(x)?)
    }

    /// Converts gray 32×32 images to the classifier input (`pixel / 127.5 − 1`).
    pub fn images_to_input(images: &[ImageU8]) -> Result<Tensor> {
        for (i, im) in images.iter().enumerate() {
            if (im.c, im.h, im.w) != (1, STANDIN_SIZE, STANDIN_SIZE) {
                return invalid(format!(
                    "classifier stand-in needs 1x32x32 gray images, image {i} is {}x{}x{} \
                     (pad 28x28 Fashion-MNIST images by 2 pixels first)",
                    im.c, im.h, im.w
                ));
            }
        }
        images_to_tensor(images, -1.0, 1.0, &Device::Cpu)
    }

    /// Features of many images, computed in batches of `batch` (row-major `[n, 128]`, `f64`).
    pub fn features_of_images(&self, images: &[ImageU8], batch: usize) -> Result<Vec<f64>> {
        let mut out = Vec::with_capacity(images.len() * STANDIN_FEATURES);
        for chunk in images.chunks(batch.max(1)) {
            let f = self.features(&Self::images_to_input(chunk)?)?;
            out.extend(f.flatten_all()?.to_vec1::<f32>()?.into_iter().map(|v| v as f64));
        }
        Ok(out)
    }
}

/// "Classifier Frechet distance" (a stand-in, **not** FID): the Frechet distance between the
/// stand-in features of two image sets (each needs at least 2 images).
pub fn classifier_frechet_distance(net: &ClassifierStandIn, a: &[ImageU8], b: &[ImageU8], batch: usize) -> Result<f64> {
    let fa = net.features_of_images(a, batch)?;
    let fb = net.features_of_images(b, batch)?;
    frechet_distance(
        &FeatureStats::from_features(&fa, a.len(), STANDIN_FEATURES)?,
        &FeatureStats::from_features(&fb, b.len(), STANDIN_FEATURES)?,
    )
}

/// Fraction of rows of `logits` (`[B, 10]`) whose argmax equals the label.
pub fn accuracy_from_logits(logits: &Tensor, labels: &[u32]) -> Result<f64> {
    let (b, k) = logits.dims2()?;
    check_labels(b, k, labels)?;
    let pred: Vec<u32> = logits.argmax(1)?.to_vec1()?;
    let hits = pred.iter().zip(labels).filter(|(p, l)| p == l).count();
    Ok(hits as f64 / b as f64)
}

/// Mean negative log-likelihood of the labels under the rows of `logits` (`[B, 10]`): the
/// cross-entropy `−log softmax(logits)[label]`, in nats, averaged over the rows.
pub fn nll_from_logits(logits: &Tensor, labels: &[u32]) -> Result<f64> {
    let rows: Vec<Vec<f32>> = logits.to_vec2()?;
    check_labels(rows.len(), rows.first().map_or(0, Vec::len), labels)?;
    let nll = rows.iter().zip(labels).map(|(row, &l)| {
        // log-sum-exp shifted by the row's maximum, so no exponential overflows.
        let max = row.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
        let lse = max + row.iter().map(|&v| (v as f64 - max).exp()).sum::<f64>().ln();
        lse - row[l as usize] as f64
    });
    Ok(nll.sum::<f64>() / labels.len() as f64)
}

fn check_labels(rows: usize, classes: usize, labels: &[u32]) -> Result<()> {
    if rows != labels.len() || rows == 0 {
        return invalid(format!("{} labels for {rows} rows of logits (need equal, non-zero)", labels.len()));
    }
    if let Some(l) = labels.iter().find(|&&l| l as usize >= classes) {
        return invalid(format!("label {l} out of range for {classes} classes"));
    }
    Ok(())
}

/// How well the stand-in classifier recognises the given labels (Fashion-MNIST classes 0–9)
/// in a set of images.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClassScores {
    /// The fraction of images assigned to their label ("classifier accuracy", a stand-in).
    pub accuracy: f64,
    /// The mean negative log-likelihood of the labels ([`nll_from_logits`]): a smooth measure of
    /// the same thing, which a parameter search can follow where the accuracy is flat.
    pub nll: f64,
}

/// [`ClassScores`] of `images` against `labels`, computed in batches of `batch`.
pub fn classifier_scores(
    net: &ClassifierStandIn,
    images: &[ImageU8],
    labels: &[u32],
    batch: usize,
) -> Result<ClassScores> {
    if images.len() != labels.len() || images.is_empty() {
        return invalid(format!("{} images but {} labels (need equal, non-zero)", images.len(), labels.len()));
    }
    let (mut hits, mut nll) = (0.0, 0.0);
    for (ims, labs) in images.chunks(batch.max(1)).zip(labels.chunks(batch.max(1))) {
        let logits = net.logits(&ClassifierStandIn::images_to_input(ims)?)?;
        hits += accuracy_from_logits(&logits, labs)? * ims.len() as f64;
        nll += nll_from_logits(&logits, labs)? * ims.len() as f64;
    }
    let n = images.len() as f64;
    Ok(ClassScores { accuracy: hits / n, nll: nll / n })
}

/// "Classifier accuracy" (a stand-in): the fraction of images the stand-in classifier assigns
/// to the given label (Fashion-MNIST classes 0–9).
pub fn classifier_accuracy(net: &ClassifierStandIn, images: &[ImageU8], labels: &[u32], batch: usize) -> Result<f64> {
    Ok(classifier_scores(net, images, labels, batch)?.accuracy)
}
