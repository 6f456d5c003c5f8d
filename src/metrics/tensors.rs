//! The metrics' view of a weight file (read by [`crate::nn::TensorStore`], which handles
//! safetensors and PyTorch checkpoints in the zip and legacy formats), and the two layer types
//! the metric networks need beyond those of [`crate::nn::layers`].

use super::{MetricsError, Result};
use crate::nn::TensorStore;
use candle_core::{DType, Tensor};
use std::path::{Path, PathBuf};

/// An opened weight file. Tensors are fetched by their PyTorch `state_dict` key as `f32`; in
/// safetensors files a `w.`-prefixed key (the fixture convention) is accepted as well.
pub struct WeightFile {
    path: PathBuf,
    store: TensorStore,
}

impl WeightFile {
    /// Opens `path`: files ending in `.safetensors` are read as safetensors, anything else as
    /// a PyTorch checkpoint, either in the zip format (torch >= 1.6 `torch.save`) or in the
    /// legacy format of older releases.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        if !path.is_file() {
            return Err(MetricsError::BadWeights { path: path.display().to_string(), msg: "no such file".into() });
        }
        let store = TensorStore::from_file(&path).map_err(|e| MetricsError::BadWeights {
            path: path.display().to_string(),
            msg: format!(
                "not a readable safetensors file or PyTorch checkpoint (zip or legacy format): {e}; \
                 convert it with torch.save(torch.load(f), f2) or to safetensors"
            ),
        })?;
        Ok(Self { path, store })
    }

    /// The file this was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The tensor stored under `key` (or `w.<key>`), if any, as `f32`.
    pub fn try_get(&self, key: &str) -> Result<Option<Tensor>> {
        match self.store.raw(key).or_else(|| self.store.raw(&format!("w.{key}"))) {
            Some(t) => Ok(Some(t.to_dtype(DType::F32)?.contiguous()?)),
            None => Ok(None),
        }
    }

    /// The tensor stored under `key` as `f32`, with an error naming the key and file if it is
    /// absent or if its shape is not `shape` (pass an empty slice to skip the shape check).
    pub fn get(&self, key: &str, shape: &[usize]) -> Result<Tensor> {
        let t = self.try_get(key)?.ok_or_else(|| self.bad(format!("missing tensor {key}")))?;
        if !shape.is_empty() && t.dims() != shape {
            return Err(self.bad(format!("tensor {key} has shape {:?}, expected {:?}", t.dims(), shape)));
        }
        Ok(t)
    }

    /// An [`MetricsError::BadWeights`] for this file.
    pub fn bad(&self, msg: impl Into<String>) -> MetricsError {
        MetricsError::BadWeights { path: self.path.display().to_string(), msg: msg.into() }
    }
}

/// A 2-D convolution (PyTorch `Conv2d` semantics) with optional bias and possibly different
/// paddings along height and width.
#[derive(Debug, Clone)]
pub struct Conv2d {
    /// Kernel `[out, in, kh, kw]`.
    pub weight: Tensor,
    /// Bias `[out]`.
    pub bias: Option<Tensor>,
    /// Stride (same along both axes).
    pub stride: usize,
    /// Zero padding `(along H, along W)`.
    pub pad: (usize, usize),
}

impl Conv2d {
    /// Loads `<prefix>.weight` (and `<prefix>.bias` if `bias`) checking the kernel shape.
    #[allow(clippy::too_many_arguments)]
    pub fn load(
        wf: &WeightFile,
        prefix: &str,
        c_in: usize,
        c_out: usize,
        k: (usize, usize),
        stride: usize,
        pad: (usize, usize),
        bias: bool,
    ) -> Result<Self> {
        let weight = wf.get(&format!("{prefix}.weight"), &[c_out, c_in, k.0, k.1])?;
        let bias = if bias { Some(wf.get(&format!("{prefix}.bias"), &[c_out])?) } else { None };
        Ok(Self { weight, bias, stride, pad })
    }

    /// Applies the convolution to `[B, C, H, W]` (through [`crate::nn::kernels::ops::conv2d`], which
    /// pads symmetrically: unequal paddings are applied to the input first).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let bias = match &self.bias {
            Some(b) => b.clone(),
            None => Tensor::zeros(self.weight.dim(0)?, DType::F32, self.weight.device())?,
        };
        if self.pad.0 == self.pad.1 {
            return Ok(crate::nn::kernels::ops::conv2d(x, &self.weight, &bias, self.pad.0, self.stride)?);
        }
        let xp = x.pad_with_zeros(2, self.pad.0, self.pad.0)?.pad_with_zeros(3, self.pad.1, self.pad.1)?;
        Ok(crate::nn::kernels::ops::conv2d(&xp, &self.weight, &bias, 0, self.stride)?)
    }
}

/// A fully connected layer `y = x Wᵀ + b` (PyTorch `Linear`).
#[derive(Debug, Clone)]
pub struct Linear {
    /// `Wᵀ`, `[in, out]`, stored contiguous.
    pub weight_t: Tensor,
    /// Bias `[out]`.
    pub bias: Option<Tensor>,
}

impl Linear {
    /// Loads `<prefix>.weight` `[out, in]` (and `<prefix>.bias` if `bias`).
    pub fn load(wf: &WeightFile, prefix: &str, d_in: usize, d_out: usize, bias: bool) -> Result<Self> {
        let w = wf.get(&format!("{prefix}.weight"), &[d_out, d_in])?;
        let bias = if bias { Some(wf.get(&format!("{prefix}.bias"), &[d_out])?) } else { None };
        Ok(Self { weight_t: w.t()?.contiguous()?, bias })
    }

    /// Applies the layer to `[B, in]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = x.contiguous()?.matmul(&self.weight_t)?;
        match &self.bias {
            Some(b) => Ok(y.broadcast_add(&b.unsqueeze(0)?)?),
            None => Ok(y),
        }
    }

    /// Applies the layer without its bias.
    pub fn forward_no_bias(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.contiguous()?.matmul(&self.weight_t)?)
    }
}
