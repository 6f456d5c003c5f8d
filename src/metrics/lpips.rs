//! LPIPS v0.1 (Zhang et al. 2018, the `lpips` package with `lpips=True, spatial=False`).
//!
//! `d(x0, x1) = Σ_k mean_{h,w} Σ_c w_kc (n0_k − n1_k)²_c`, where `n_k` is the tap `k` of an
//! ImageNet trunk (AlexNet relu1..5 or VGG16 relu1_2..relu5_3) applied to the scaled input
//! `(x − shift) / scale`, unit-normalised over channels (`f / (‖f‖₂ + 1e-10)`), and `w_k` are
//! the learned non-negative linear heads. Inputs are RGB in `[-1, 1]`, any size large enough
//! for the trunk (AlexNet needs at least 31 pixels, VGG16 16).
//!
//! Weights: the trunk comes from torchvision's `alexnet-owt-7be5be79.pth` /
//! `vgg16-397923af.pth` (only `features.*` is read; `net.slice<k>.<i>.*` names from a whole
//! lpips `state_dict` are accepted too) and the heads from the lpips package's
//! `weights/v0.1/{alex,vgg}.pth` (`lin<k>.model.1.weight`). A single safetensors file holding
//! both (as the test fixtures do, optionally with a `w.` prefix) works as well.

use super::image::images_to_tensor;
use super::tensors::{Conv2d, WeightFile};
use super::weights::{find, WeightId};
use super::{invalid, ImageU8, MetricsError, Result};
use candle_core::{Device, Tensor, D};
use std::path::Path;

/// The LPIPS trunk network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LpipsNet {
    /// AlexNet (the lpips default, `net='alex'`).
    Alex,
    /// VGG16 (`net='vgg'`).
    Vgg,
}

impl LpipsNet {
    /// `(features index, in, out, kernel, stride, padding)` of every trunk convolution.
    fn convs(self) -> &'static [(usize, usize, usize, usize, usize, usize)] {
        match self {
            LpipsNet::Alex => &[
                (0, 3, 64, 11, 4, 2),
                (3, 64, 192, 5, 1, 2),
                (6, 192, 384, 3, 1, 1),
                (8, 384, 256, 3, 1, 1),
                (10, 256, 256, 3, 1, 1),
            ],
            LpipsNet::Vgg => &[
                (0, 3, 64, 3, 1, 1),
                (2, 64, 64, 3, 1, 1),
                (5, 64, 128, 3, 1, 1),
                (7, 128, 128, 3, 1, 1),
                (10, 128, 256, 3, 1, 1),
                (12, 256, 256, 3, 1, 1),
                (14, 256, 256, 3, 1, 1),
                (17, 256, 512, 3, 1, 1),
                (19, 512, 512, 3, 1, 1),
                (21, 512, 512, 3, 1, 1),
                (24, 512, 512, 3, 1, 1),
                (26, 512, 512, 3, 1, 1),
                (28, 512, 512, 3, 1, 1),
            ],
        }
    }

    /// Channels of the five taps.
    pub fn tap_channels(self) -> [usize; 5] {
        match self {
            LpipsNet::Alex => [64, 192, 384, 256, 256],
            LpipsNet::Vgg => [64, 128, 256, 512, 512],
        }
    }

    /// The trunk's and the heads' weight files.
    pub fn weight_ids(self) -> (WeightId, WeightId) {
        match self {
            LpipsNet::Alex => (WeightId::AlexNet, WeightId::LpipsLinAlex),
            LpipsNet::Vgg => (WeightId::Vgg16, WeightId::LpipsLinVgg),
        }
    }

    /// Smallest input side the trunk accepts.
    pub fn min_side(self) -> usize {
        match self {
            LpipsNet::Alex => 31,
            LpipsNet::Vgg => 16,
        }
    }
}

const SHIFT: [f32; 3] = [-0.030, -0.088, -0.188];
const SCALE: [f32; 3] = [0.458, 0.448, 0.450];

/// An LPIPS v0.1 model.
#[derive(Debug, Clone)]
pub struct Lpips {
    net: LpipsNet,
    convs: Vec<Conv2d>,
    /// Linear heads, each `[1, C_k, 1, 1]`.
    lins: Vec<Tensor>,
    shift: Tensor,
    scale: Tensor,
}

fn load_trunk(net: LpipsNet, wf: &WeightFile) -> Result<Vec<Conv2d>> {
    let mut convs = Vec::new();
    for &(i, cin, cout, k, s, p) in net.convs() {
        let mut prefix = format!("features.{i}");
        if wf.try_get(&format!("{prefix}.weight"))?.is_none() {
            if let Some(k) = (1..=5).find(|k| wf.try_get(&format!("net.slice{k}.{i}.weight")).ok().flatten().is_some())
            {
                prefix = format!("net.slice{k}.{i}");
            }
        }
        convs.push(Conv2d::load(wf, &prefix, cin, cout, (k, k), s, (p, p), true)?);
    }
    Ok(convs)
}

fn load_lins(net: LpipsNet, wf: &WeightFile) -> Result<Vec<Tensor>> {
    net.tap_channels()
        .iter()
        .enumerate()
        .map(|(k, &c)| {
            let w = wf.get(&format!("lin{k}.model.1.weight"), &[1, c, 1, 1])?;
            Ok(w)
        })
        .collect()
}

impl Lpips {
    /// Loads the trunk from `trunk_path` (torchvision checkpoint or safetensors) and the linear
    /// heads from `lin_path` (the lpips package's `v0.1/<net>.pth` or safetensors).
    pub fn load(net: LpipsNet, trunk_path: &Path, lin_path: &Path) -> Result<Self> {
        let trunk = WeightFile::open(trunk_path)?;
        let convs = load_trunk(net, &trunk)?;
        drop(trunk);
        let lins = load_lins(net, &WeightFile::open(lin_path)?)?;
        Self::new(net, convs, lins)
    }

    /// Loads trunk and heads from one file that holds both (e.g. the test fixtures).
    pub fn load_combined(net: LpipsNet, path: &Path) -> Result<Self> {
        let wf = WeightFile::open(path)?;
        Self::new(net, load_trunk(net, &wf)?, load_lins(net, &wf)?)
    }

    /// Finds both files with [`find`] (in `dir` if given, then `$GDDCM_HOME/weights/` and the
    /// torch hub cache) and loads them. If either is missing the error is
    /// [`MetricsError::MissingWeights`] naming it, so the caller can skip LPIPS.
    pub fn from_weight_dirs(net: LpipsNet, dir: Option<&Path>) -> Result<Self> {
        let (t, l) = net.weight_ids();
        let trunk = find(t, dir)?;
        let lin = find(l, dir)?;
        Self::load(net, &trunk, &lin)
    }

    fn new(net: LpipsNet, convs: Vec<Conv2d>, lins: Vec<Tensor>) -> Result<Self> {
        let dev = Device::Cpu;
        Ok(Self {
            net,
            convs,
            lins,
            shift: Tensor::new(&SHIFT, &dev)?.reshape((1, 3, 1, 1))?,
            scale: Tensor::new(&SCALE, &dev)?.reshape((1, 3, 1, 1))?,
        })
    }

    /// Which trunk this model uses.
    pub fn net(&self) -> LpipsNet {
        self.net
    }

    /// The five raw trunk taps (after ReLU) of already scaled inputs.
    fn taps(&self, x: &Tensor) -> Result<Vec<Tensor>> {
        let c = &self.convs;
        let mut taps = Vec::with_capacity(5);
        match self.net {
            LpipsNet::Alex => {
                let x = c[0].forward(x)?.relu()?;
                taps.push(x.clone());
                let x = c[1].forward(&x.max_pool2d_with_stride(3, 2)?)?.relu()?;
                taps.push(x.clone());
                let x = c[2].forward(&x.max_pool2d_with_stride(3, 2)?)?.relu()?;
                taps.push(x.clone());
                let x = c[3].forward(&x)?.relu()?;
                taps.push(x.clone());
                let x = c[4].forward(&x)?.relu()?;
                taps.push(x);
            }
            LpipsNet::Vgg => {
                let mut x = x.clone();
                let groups: [&[usize]; 5] = [&[0, 1], &[2, 3], &[4, 5, 6], &[7, 8, 9], &[10, 11, 12]];
                for (g, idx) in groups.iter().enumerate() {
                    if g > 0 {
                        x = x.max_pool2d_with_stride(2, 2)?;
                    }
                    for &i in idx.iter() {
                        x = c[i].forward(&x)?.relu()?;
                    }
                    taps.push(x.clone());
                }
            }
        }
        Ok(taps)
    }

    /// The LPIPS scaling layer, `(x − shift) / scale` per RGB channel.
    pub fn scale_input(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.broadcast_sub(&self.shift)?.broadcast_div(&self.scale)?)
    }

    /// Per-layer distances `[5][B]` between `x0` and `x1`, both `[B, 3, H, W]` `f32` in
    /// `[-1, 1]`.
    pub fn layer_distances(&self, x0: &Tensor, x1: &Tensor) -> Result<Vec<Vec<f32>>> {
        if x0.dims() != x1.dims() {
            return invalid(format!("LPIPS inputs differ in shape: {:?} vs {:?}", x0.dims(), x1.dims()));
        }
        let (b, c, h, w) = match x0.dims() {
            &[b, c, h, w] => (b, c, h, w),
            d => return invalid(format!("LPIPS expects [B, 3, H, W], got {d:?}")),
        };
        if c != 3 || b == 0 {
            return invalid(format!("LPIPS expects [B, 3, H, W] with B > 0, got {:?}", x0.dims()));
        }
        if h.min(w) < self.net.min_side() {
            return invalid(format!(
                "LPIPS-{:?} needs images of at least {} pixels per side, got {h}x{w}",
                self.net,
                self.net.min_side()
            ));
        }
        let x = Tensor::cat(&[x0, x1], 0)?.to_dtype(candle_core::DType::F32)?;
        let taps = self.taps(&self.scale_input(&x)?)?;
        let mut out = Vec::with_capacity(5);
        for (f, lin) in taps.iter().zip(&self.lins) {
            let norm = f.sqr()?.sum_keepdim(1)?.sqrt()?.affine(1.0, 1e-10)?;
            let n = f.broadcast_div(&norm)?;
            let diff = (n.narrow(0, 0, b)? - n.narrow(0, b, b)?)?.sqr()?;
            let weighted = diff.broadcast_mul(lin)?.sum(1)?; // [B, H, W]
            let res = weighted.flatten_from(1)?.mean(D::Minus1)?; // [B]
            out.push(res.to_vec1::<f32>()?);
        }
        Ok(out)
    }

    /// LPIPS distance for each pair, `x0`, `x1`: `[B, 3, H, W]` `f32` in `[-1, 1]`.
    pub fn forward(&self, x0: &Tensor, x1: &Tensor) -> Result<Vec<f32>> {
        let layers = self.layer_distances(x0, x1)?;
        let b = layers[0].len();
        Ok((0..b).map(|i| layers.iter().map(|l| l[i]).sum()).collect())
    }

    /// LPIPS distance for each pair of RGB 8-bit images (mapped to `[-1, 1]`), in batches.
    pub fn distance_images(&self, a: &[ImageU8], b: &[ImageU8], batch: usize) -> Result<Vec<f64>> {
        if a.len() != b.len() {
            return invalid(format!("{} images vs {} images", a.len(), b.len()));
        }
        if a.iter().chain(b).any(|im| im.c != 3) {
            return Err(MetricsError::InvalidInput("LPIPS needs RGB images (3 channels)".into()));
        }
        let mut out = Vec::with_capacity(a.len());
        let bs = batch.max(1);
        for (ca, cb) in a.chunks(bs).zip(b.chunks(bs)) {
            let x0 = images_to_tensor(ca, -1.0, 1.0, &Device::Cpu)?;
            let x1 = images_to_tensor(cb, -1.0, 1.0, &Device::Cpu)?;
            out.extend(self.forward(&x0, &x1)?.into_iter().map(|v| v as f64));
        }
        Ok(out)
    }
}
