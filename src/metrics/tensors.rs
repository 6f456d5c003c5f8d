//! Reading weight files: safetensors (the fixture layout, with or without a `w.` prefix) and
//! PyTorch zip checkpoints (`.pth`, `.pt`, `.bin`) through `candle_core::pickle`.

use super::legacy_pth::LegacyPth;
use super::{MetricsError, Result};
use candle_core::{pickle::PthTensors, DType, Device, Tensor};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

enum Source {
    Safetensors(HashMap<String, Tensor>),
    Pth(Box<PthTensors>),
    LegacyPth(Box<LegacyPth>),
}

/// An opened weight file. Tensors are fetched by their PyTorch `state_dict` key and converted
/// to `f32` on the CPU; in safetensors files a `w.`-prefixed key (the fixture convention) is
/// accepted as well.
pub struct WeightFile {
    path: PathBuf,
    source: Source,
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
        let is_st = path.extension().map(|e| e.eq_ignore_ascii_case("safetensors")).unwrap_or(false);
        let source = if is_st {
            let map = candle_core::safetensors::load(&path, &Device::Cpu).map_err(|e| MetricsError::BadWeights {
                path: path.display().to_string(),
                msg: format!("cannot read safetensors: {e}"),
            })?;
            Source::Safetensors(map)
        } else if LegacyPth::is_legacy(&path) {
            let pth = LegacyPth::open(&path).map_err(|e| MetricsError::BadWeights {
                path: path.display().to_string(),
                msg: format!(
                    "cannot read legacy PyTorch checkpoint ({e}); convert it with \
                     torch.save(torch.load(f), f2) or to safetensors"
                ),
            })?;
            Source::LegacyPth(Box::new(pth))
        } else {
            let pth = PthTensors::new(&path, None).map_err(|e| MetricsError::BadWeights {
                path: path.display().to_string(),
                msg: format!(
                    "not a safetensors file, nor a PyTorch checkpoint in the zip or \
                     legacy format ({e})"
                ),
            })?;
            Source::Pth(Box::new(pth))
        };
        Ok(Self { path, source })
    }

    /// The file this was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The tensor stored under `key` (or `w.<key>`), if any, as `f32`.
    pub fn try_get(&self, key: &str) -> Result<Option<Tensor>> {
        let t = match &self.source {
            Source::Safetensors(m) => m.get(key).or_else(|| m.get(&format!("w.{key}"))).cloned(),
            Source::Pth(p) => p.get(key).map_err(|e| self.bad(format!("reading {key}: {e}")))?,
            Source::LegacyPth(p) => p.get(key).map_err(|e| self.bad(e))?,
        };
        match t {
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

    /// Applies the convolution to `[B, C, H, W]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = if self.pad.0 == self.pad.1 {
            x.conv2d(&self.weight, self.pad.0, self.stride, 1, 1)?
        } else {
            let xp = x.pad_with_zeros(2, self.pad.0, self.pad.0)?.pad_with_zeros(3, self.pad.1, self.pad.1)?;
            xp.conv2d(&self.weight, 0, self.stride, 1, 1)?
        };
        match &self.bias {
            Some(b) => {
                let c = b.dim(0)?;
                Ok(y.broadcast_add(&b.reshape((1, c, 1, 1))?)?)
            }
            None => Ok(y),
        }
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
