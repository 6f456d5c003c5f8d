//! The FID Inception-v3 of pytorch-fid (`fid_inception_v3`, ported from TensorFlow's
//! inception-2015-12-05 graph), giving pool3 features for FID and the 1008-way logits for the
//! Inception Score.
//!
//! Pipeline (pytorch-fid `InceptionV3(resize_input=True, normalize_input=True)`): RGB input in
//! `[0, 1]`, bilinear resize to 299×299 (PyTorch `align_corners=False`, no antialiasing),
//! `2x − 1`, then torchvision's Inception3 layout with pytorch-fid's patched blocks: the pool
//! branch of Mixed_5b–5d, 6b–6e and 7b uses a 3×3 average pool that excludes the padding from
//! the count, and Mixed_7c uses a 3×3 max pool. Convolutions are followed by batch
//! normalisation (eps 1e-3, folded into the convolution at load time) and ReLU.
//! `pool3` is the global average after Mixed_7c (`[B, 2048]`); `logits = pool3 Wᵀ + b` and
//! `logits_unbiased = pool3 Wᵀ` (`[B, 1008]`).
//!
//! Weights: pytorch-fid's `pt_inception-2015-12-05-6726825d.pth` (PyTorch zip checkpoint;
//! `*.num_batches_tracked` entries are ignored) or a safetensors file with the same keys
//! (optionally prefixed by `w.`).

use super::fid::{frechet_distance, inception_score, FeatureStats};
use super::image::images_to_tensor;
use super::tensors::{Conv2d, Linear, WeightFile};
use super::weights::{find, WeightId};
use super::{invalid, ImageU8, Result};
use candle_core::{DType, Device, Tensor};
use std::collections::HashMap;
use std::path::Path;

/// Input side of the network.
pub const INCEPTION_SIZE: usize = 299;
/// Length of the pool3 feature vector.
pub const POOL3_DIM: usize = 2048;
/// Number of logits of the FID Inception (1008, of which the first 1000 or 1001 are ImageNet
/// classes in the original TensorFlow graph).
pub const LOGITS_DIM: usize = 1008;

/// Builds the `[out, in]` matrix of PyTorch's 1-D linear interpolation with
/// `align_corners=False` (no antialiasing), as used by `F.interpolate(mode='bilinear')`.
pub fn bilinear_matrix(n_in: usize, n_out: usize) -> Vec<f32> {
    let mut m = vec![0f32; n_out * n_in];
    // PyTorch computes the scale and source index in the input's float type.
    let scale = n_in as f32 / n_out as f32;
    for o in 0..n_out {
        let src = (scale * (o as f32 + 0.5) - 0.5).max(0.0);
        let i0 = (src as usize).min(n_in - 1);
        let i1 = if i0 < n_in - 1 { i0 + 1 } else { i0 };
        let l1 = src - i0 as f32;
        let l0 = 1.0 - l1;
        m[o * n_in + i0] += l0;
        m[o * n_in + i1] += l1;
    }
    m
}

/// Bilinear resize of `[B, C, H, W]` to `[B, C, oh, ow]` matching PyTorch's
/// `F.interpolate(x, size=(oh, ow), mode='bilinear', align_corners=False)`.
pub fn resize_bilinear(x: &Tensor, oh: usize, ow: usize) -> Result<Tensor> {
    let (b, c, h, w) = x.dims4()?;
    if h == 0 || w == 0 || oh == 0 || ow == 0 {
        return invalid("cannot resize an empty image");
    }
    let dev = x.device();
    let x = x.to_dtype(DType::F32)?.contiguous()?;
    let rw_t = Tensor::from_vec(bilinear_matrix(w, ow), (ow, w), dev)?.t()?.contiguous()?; // [w, ow]
    let rh_t = Tensor::from_vec(bilinear_matrix(h, oh), (oh, h), dev)?.t()?.contiguous()?; // [h, oh]
                                                                                           // Along W: [b*c*h, w] x [w, ow].
    let y = x.reshape((b * c * h, w))?.matmul(&rw_t)?;
    // Along H: [b*c, ow, h] x [h, oh].
    let y = y.reshape((b * c, h, ow))?.transpose(1, 2)?.contiguous()?.reshape((b * c * ow, h))?.matmul(&rh_t)?;
    Ok(y.reshape((b * c, ow, oh))?.transpose(1, 2)?.contiguous()?.reshape((b, c, oh, ow))?)
}

/// Convolution (no bias) + batch norm (eps 1e-3, folded) + ReLU.
#[derive(Debug, Clone)]
struct BasicConv(Conv2d);

impl BasicConv {
    #[allow(clippy::too_many_arguments)]
    fn load(
        wf: &WeightFile,
        name: &str,
        cin: usize,
        cout: usize,
        k: (usize, usize),
        stride: usize,
        pad: (usize, usize),
    ) -> Result<Self> {
        let w = wf.get(&format!("{name}.conv.weight"), &[cout, cin, k.0, k.1])?;
        let bn = |p: &str| -> Result<Vec<f64>> {
            let t = wf.get(&format!("{name}.bn.{p}"), &[cout])?;
            Ok(t.to_dtype(DType::F64)?.to_vec1::<f64>()?)
        };
        let (gamma, beta, mean, var) = (bn("weight")?, bn("bias")?, bn("running_mean")?, bn("running_var")?);
        let scale: Vec<f64> = gamma.iter().zip(&var).map(|(g, v)| g / (v + 1e-3).sqrt()).collect();
        if scale.iter().any(|s| !s.is_finite()) {
            return Err(wf.bad(format!("{name}.bn has a non-finite scale")));
        }
        let bias: Vec<f32> = (0..cout).map(|i| (beta[i] - mean[i] * scale[i]) as f32).collect();
        let per = cin * k.0 * k.1;
        let wv = w.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
        let folded: Vec<f32> = wv.iter().enumerate().map(|(i, v)| (v * scale[i / per]) as f32).collect();
        let dev = Device::Cpu;
        Ok(Self(Conv2d {
            weight: Tensor::from_vec(folded, (cout, cin, k.0, k.1), &dev)?,
            bias: Some(Tensor::from_vec(bias, cout, &dev)?),
            stride,
            pad,
        }))
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(self.0.forward(x)?.relu()?)
    }
}

/// 3×3, stride 1, padding 1 average pool that does not count the padding (TF semantics).
fn avg_pool_3x3_exclude_pad(x: &Tensor) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    let summed = x.pad_with_zeros(2, 1, 1)?.pad_with_zeros(3, 1, 1)?.avg_pool2d_with_stride(3, 1)?;
    // Number of real pixels under each window.
    let mut inv = Vec::with_capacity(h * w);
    for y in 0..h {
        let ny = (y.min(1) + 1 + usize::from(y + 1 < h)) as f32;
        for xx in 0..w {
            let nx = (xx.min(1) + 1 + usize::from(xx + 1 < w)) as f32;
            inv.push(9.0 / (ny * nx));
        }
    }
    let inv = Tensor::from_vec(inv, (1, 1, h, w), x.device())?;
    Ok(summed.broadcast_mul(&inv)?)
}

/// 3×3, stride 1, padding 1 max pool (replicated border = same maximum as `-inf` padding).
fn max_pool_3x3_same(x: &Tensor) -> Result<Tensor> {
    Ok(x.pad_with_same(2, 1, 1)?.pad_with_same(3, 1, 1)?.max_pool2d_with_stride(3, 1)?)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    A,
    B,
    C,
    D,
    /// FIDInceptionE_1 (average pool branch).
    E1,
    /// FIDInceptionE_2 (max pool branch).
    E2,
}

#[derive(Debug, Clone)]
struct Mixed {
    kind: Kind,
    convs: HashMap<&'static str, BasicConv>,
}

impl Mixed {
    fn load(wf: &WeightFile, name: &str, kind: Kind, cin: usize, extra: usize) -> Result<Self> {
        type Spec = (&'static str, usize, usize, (usize, usize), usize, (usize, usize));
        let specs: Vec<Spec> = match kind {
            Kind::A => vec![
                ("branch1x1", cin, 64, (1, 1), 1, (0, 0)),
                ("branch5x5_1", cin, 48, (1, 1), 1, (0, 0)),
                ("branch5x5_2", 48, 64, (5, 5), 1, (2, 2)),
                ("branch3x3dbl_1", cin, 64, (1, 1), 1, (0, 0)),
                ("branch3x3dbl_2", 64, 96, (3, 3), 1, (1, 1)),
                ("branch3x3dbl_3", 96, 96, (3, 3), 1, (1, 1)),
                ("branch_pool", cin, extra, (1, 1), 1, (0, 0)),
            ],
            Kind::B => vec![
                ("branch3x3", cin, 384, (3, 3), 2, (0, 0)),
                ("branch3x3dbl_1", cin, 64, (1, 1), 1, (0, 0)),
                ("branch3x3dbl_2", 64, 96, (3, 3), 1, (1, 1)),
                ("branch3x3dbl_3", 96, 96, (3, 3), 2, (0, 0)),
            ],
            Kind::C => {
                let c7 = extra;
                vec![
                    ("branch1x1", cin, 192, (1, 1), 1, (0, 0)),
                    ("branch7x7_1", cin, c7, (1, 1), 1, (0, 0)),
                    ("branch7x7_2", c7, c7, (1, 7), 1, (0, 3)),
                    ("branch7x7_3", c7, 192, (7, 1), 1, (3, 0)),
                    ("branch7x7dbl_1", cin, c7, (1, 1), 1, (0, 0)),
                    ("branch7x7dbl_2", c7, c7, (7, 1), 1, (3, 0)),
                    ("branch7x7dbl_3", c7, c7, (1, 7), 1, (0, 3)),
                    ("branch7x7dbl_4", c7, c7, (7, 1), 1, (3, 0)),
                    ("branch7x7dbl_5", c7, 192, (1, 7), 1, (0, 3)),
                    ("branch_pool", cin, 192, (1, 1), 1, (0, 0)),
                ]
            }
            Kind::D => vec![
                ("branch3x3_1", cin, 192, (1, 1), 1, (0, 0)),
                ("branch3x3_2", 192, 320, (3, 3), 2, (0, 0)),
                ("branch7x7x3_1", cin, 192, (1, 1), 1, (0, 0)),
                ("branch7x7x3_2", 192, 192, (1, 7), 1, (0, 3)),
                ("branch7x7x3_3", 192, 192, (7, 1), 1, (3, 0)),
                ("branch7x7x3_4", 192, 192, (3, 3), 2, (0, 0)),
            ],
            Kind::E1 | Kind::E2 => vec![
                ("branch1x1", cin, 320, (1, 1), 1, (0, 0)),
                ("branch3x3_1", cin, 384, (1, 1), 1, (0, 0)),
                ("branch3x3_2a", 384, 384, (1, 3), 1, (0, 1)),
                ("branch3x3_2b", 384, 384, (3, 1), 1, (1, 0)),
                ("branch3x3dbl_1", cin, 448, (1, 1), 1, (0, 0)),
                ("branch3x3dbl_2", 448, 384, (3, 3), 1, (1, 1)),
                ("branch3x3dbl_3a", 384, 384, (1, 3), 1, (0, 1)),
                ("branch3x3dbl_3b", 384, 384, (3, 1), 1, (1, 0)),
                ("branch_pool", cin, 192, (1, 1), 1, (0, 0)),
            ],
        };
        let mut convs = HashMap::new();
        for (n, i, o, k, s, p) in specs {
            convs.insert(n, BasicConv::load(wf, &format!("{name}.{n}"), i, o, k, s, p)?);
        }
        Ok(Self { kind, convs })
    }

    fn c(&self, n: &str, x: &Tensor) -> Result<Tensor> {
        match self.convs.get(n) {
            Some(c) => c.forward(x),
            None => invalid(format!("internal: no conv {n}")),
        }
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let parts = match self.kind {
            Kind::A => {
                let b1 = self.c("branch1x1", x)?;
                let b5 = self.c("branch5x5_2", &self.c("branch5x5_1", x)?)?;
                let d = self.c("branch3x3dbl_1", x)?;
                let d = self.c("branch3x3dbl_3", &self.c("branch3x3dbl_2", &d)?)?;
                let p = self.c("branch_pool", &avg_pool_3x3_exclude_pad(x)?)?;
                vec![b1, b5, d, p]
            }
            Kind::B => {
                let b3 = self.c("branch3x3", x)?;
                let d = self.c("branch3x3dbl_1", x)?;
                let d = self.c("branch3x3dbl_3", &self.c("branch3x3dbl_2", &d)?)?;
                let p = x.max_pool2d_with_stride(3, 2)?;
                vec![b3, d, p]
            }
            Kind::C => {
                let b1 = self.c("branch1x1", x)?;
                let mut b7 = self.c("branch7x7_1", x)?;
                for n in ["branch7x7_2", "branch7x7_3"] {
                    b7 = self.c(n, &b7)?;
                }
                let mut d = self.c("branch7x7dbl_1", x)?;
                for n in ["branch7x7dbl_2", "branch7x7dbl_3", "branch7x7dbl_4", "branch7x7dbl_5"] {
                    d = self.c(n, &d)?;
                }
                let p = self.c("branch_pool", &avg_pool_3x3_exclude_pad(x)?)?;
                vec![b1, b7, d, p]
            }
            Kind::D => {
                let b3 = self.c("branch3x3_2", &self.c("branch3x3_1", x)?)?;
                let mut b7 = self.c("branch7x7x3_1", x)?;
                for n in ["branch7x7x3_2", "branch7x7x3_3", "branch7x7x3_4"] {
                    b7 = self.c(n, &b7)?;
                }
                let p = x.max_pool2d_with_stride(3, 2)?;
                vec![b3, b7, p]
            }
            Kind::E1 | Kind::E2 => {
                let b1 = self.c("branch1x1", x)?;
                let t = self.c("branch3x3_1", x)?;
                let b3 = Tensor::cat(&[self.c("branch3x3_2a", &t)?, self.c("branch3x3_2b", &t)?], 1)?;
                let d = self.c("branch3x3dbl_2", &self.c("branch3x3dbl_1", x)?)?;
                let d = Tensor::cat(&[self.c("branch3x3dbl_3a", &d)?, self.c("branch3x3dbl_3b", &d)?], 1)?;
                let pooled = if self.kind == Kind::E1 { avg_pool_3x3_exclude_pad(x)? } else { max_pool_3x3_same(x)? };
                let p = self.c("branch_pool", &pooled)?;
                vec![b1, b3, d, p]
            }
        };
        Ok(Tensor::cat(&parts, 1)?)
    }
}

/// Outputs of [`FidInception::forward`].
#[derive(Debug, Clone)]
pub struct InceptionOutput {
    /// Pool3 features `[B, 2048]` (the FID features).
    pub pool3: Tensor,
    /// `fc(pool3)` with bias, `[B, 1008]`.
    pub logits: Tensor,
    /// `pool3 Wᵀ` without the fc bias, `[B, 1008]` (the usual Inception Score input).
    pub logits_unbiased: Tensor,
}

/// pytorch-fid's FID Inception-v3 (see the module docs).
#[derive(Debug, Clone)]
pub struct FidInception {
    stem: Vec<(&'static str, BasicConv)>,
    mixed: Vec<(&'static str, Mixed)>,
    fc: Linear,
}

impl FidInception {
    /// Loads the weights from `pt_inception-2015-12-05-6726825d.pth` or a safetensors file
    /// with the same keys.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let wf = WeightFile::open(path)?;
        let stem_specs: [(&'static str, usize, usize, usize, usize, usize); 5] = [
            ("Conv2d_1a_3x3", 3, 32, 3, 2, 0),
            ("Conv2d_2a_3x3", 32, 32, 3, 1, 0),
            ("Conv2d_2b_3x3", 32, 64, 3, 1, 1),
            ("Conv2d_3b_1x1", 64, 80, 1, 1, 0),
            ("Conv2d_4a_3x3", 80, 192, 3, 1, 0),
        ];
        let mut stem = Vec::new();
        for (n, i, o, k, s, p) in stem_specs {
            stem.push((n, BasicConv::load(&wf, n, i, o, (k, k), s, (p, p))?));
        }
        let mixed_specs: [(&'static str, Kind, usize, usize); 11] = [
            ("Mixed_5b", Kind::A, 192, 32),
            ("Mixed_5c", Kind::A, 256, 64),
            ("Mixed_5d", Kind::A, 288, 64),
            ("Mixed_6a", Kind::B, 288, 0),
            ("Mixed_6b", Kind::C, 768, 128),
            ("Mixed_6c", Kind::C, 768, 160),
            ("Mixed_6d", Kind::C, 768, 160),
            ("Mixed_6e", Kind::C, 768, 192),
            ("Mixed_7a", Kind::D, 768, 0),
            ("Mixed_7b", Kind::E1, 1280, 0),
            ("Mixed_7c", Kind::E2, 2048, 0),
        ];
        let mut mixed = Vec::new();
        for (n, kind, cin, extra) in mixed_specs {
            mixed.push((n, Mixed::load(&wf, n, kind, cin, extra)?));
        }
        let fc = Linear::load(&wf, "fc", POOL3_DIM, LOGITS_DIM, true)?;
        Ok(Self { stem, mixed, fc })
    }

    /// Finds `pt_inception-2015-12-05-6726825d.pth` with [`find`] (in `dir` if given, then
    /// `$GDDCM_HOME/weights/` and the torch hub cache) and loads it. A missing file gives
    /// [`super::MetricsError::MissingWeights`], so the caller can skip FID/IS.
    pub fn from_weight_dirs(dir: Option<&Path>) -> Result<Self> {
        Self::load(find(WeightId::FidInception, dir)?)
    }

    /// Runs the network on `x`, `[B, 3, H, W]` `f32` RGB in `[0, 1]` (any size: it is resized
    /// to 299×299 first).
    pub fn forward(&self, x: &Tensor) -> Result<InceptionOutput> {
        self.forward_with_taps(x, &mut |_, _| Ok(()))
    }

    /// Like [`FidInception::forward`], calling `tap(name, activation)` after the resize
    /// (`"input"`, already `2x − 1`), each stem convolution, the two stem max pools
    /// (`"block0.out"`, `"block1.out"`) and each Mixed block.
    pub fn forward_with_taps(
        &self,
        x: &Tensor,
        tap: &mut dyn FnMut(&str, &Tensor) -> Result<()>,
    ) -> Result<InceptionOutput> {
        match x.dims() {
            [b, 3, h, w] if *b > 0 && *h > 0 && *w > 0 => {}
            d => return invalid(format!("Inception expects [B, 3, H, W] in [0, 1], got {d:?}")),
        }
        let x = resize_bilinear(x, INCEPTION_SIZE, INCEPTION_SIZE)?.affine(2.0, -1.0)?;
        tap("input", &x)?;
        let mut x = x;
        for (i, (n, c)) in self.stem.iter().enumerate() {
            x = c.forward(&x)?;
            tap(n, &x)?;
            if i == 2 {
                x = x.max_pool2d_with_stride(3, 2)?;
                tap("block0.out", &x)?;
            }
            if i == 4 {
                x = x.max_pool2d_with_stride(3, 2)?;
                tap("block1.out", &x)?;
            }
        }
        for (n, m) in &self.mixed {
            x = m.forward(&x)?;
            tap(n, &x)?;
        }
        let pool3 = x.mean((2, 3))?;
        let logits_unbiased = self.fc.forward_no_bias(&pool3)?;
        let logits = self.fc.forward(&pool3)?;
        Ok(InceptionOutput { pool3, logits, logits_unbiased })
    }

    /// Pool3 features and unbiased logits of 8-bit images (gray images are repeated to RGB),
    /// in batches of `batch`. Returns row-major `([n, 2048], [n, 1008])` in `f64`.
    ///
    /// Memory grows with the batch (about 25 MB of activations per image at 299×299); a batch
    /// of 8–16 is a good choice on the CPU.
    pub fn features_of_images(&self, images: &[ImageU8], batch: usize) -> Result<(Vec<f64>, Vec<f64>)> {
        let mut pool = Vec::with_capacity(images.len() * POOL3_DIM);
        let mut logits = Vec::with_capacity(images.len() * LOGITS_DIM);
        for chunk in images.chunks(batch.max(1)) {
            let rgb: Vec<ImageU8> = chunk
                .iter()
                .map(|im| match im.c {
                    3 => Ok(im.clone()),
                    1 => ImageU8::from_chw(3, im.h, im.w, im.data.repeat(3)),
                    c => invalid(format!("Inception needs gray or RGB images, got {c} channels")),
                })
                .collect::<Result<_>>()?;
            let x = images_to_tensor(&rgb, 0.0, 1.0, &Device::Cpu)?;
            let out = self.forward(&x)?;
            let to64 = |t: &Tensor| -> Result<Vec<f64>> {
                Ok(t.flatten_all()?.to_vec1::<f32>()?.into_iter().map(|v| v as f64).collect())
            };
            pool.extend(to64(&out.pool3)?);
            logits.extend(to64(&out.logits_unbiased)?);
        }
        Ok((pool, logits))
    }
}

/// Everything an evaluation needs from the Inception network, for one image set.
#[derive(Debug, Clone)]
pub struct InceptionStats {
    /// Mean and covariance of the pool3 features (the FID statistics).
    pub stats: FeatureStats,
    /// Inception Score mean and standard deviation over the splits (unbiased logits, all
    /// 1008 classes, as the original code and torch-fidelity).
    pub inception_score: (f64, f64),
}

impl FidInception {
    /// FID statistics and Inception Score of an image set (at least 2 images; the Inception
    /// Score uses `min(splits, n)` splits, pass 10 for the usual value).
    pub fn image_set_stats(&self, images: &[ImageU8], batch: usize, splits: usize) -> Result<InceptionStats> {
        let (pool, logits) = self.features_of_images(images, batch)?;
        let n = images.len();
        Ok(InceptionStats {
            stats: FeatureStats::from_features(&pool, n, POOL3_DIM)?,
            inception_score: inception_score(&logits, n, LOGITS_DIM, splits.min(n).max(1))?,
        })
    }

    /// FID between two image sets (each at least 2 images; use thousands for a meaningful
    /// value).
    pub fn fid_of_images(&self, a: &[ImageU8], b: &[ImageU8], batch: usize) -> Result<f64> {
        let (pa, _) = self.features_of_images(a, batch)?;
        let (pb, _) = self.features_of_images(b, batch)?;
        frechet_distance(
            &FeatureStats::from_features(&pa, a.len(), POOL3_DIM)?,
            &FeatureStats::from_features(&pb, b.len(), POOL3_DIM)?,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bilinear_rows_sum_to_one_and_identity() {
        let m = bilinear_matrix(32, 299);
        for r in m.chunks(32) {
            assert!((r.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        }
        let id = bilinear_matrix(5, 5);
        for i in 0..5 {
            for j in 0..5 {
                assert_eq!(id[i * 5 + j], if i == j { 1.0 } else { 0.0 });
            }
        }
    }

    #[test]
    fn avg_pool_excludes_padding() {
        let x = Tensor::ones((1, 1, 4, 5), DType::F32, &Device::Cpu).unwrap();
        let y = avg_pool_3x3_exclude_pad(&x).unwrap();
        let v: Vec<f32> = y.flatten_all().unwrap().to_vec1().unwrap();
        assert!(v.iter().all(|&a| (a - 1.0).abs() < 1e-6), "{v:?}");
    }
}
