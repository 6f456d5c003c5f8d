//! Reading weight files: safetensors (the fixture layout, with or without a `w.` prefix) and
//! PyTorch zip checkpoints (`.pth`, `.pt`, `.bin`) through `candle_core::pickle`.

use super::{MetricsError, Result};
use candle_core::{pickle::PthTensors, DType, Device, Tensor};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

enum Source {
    Safetensors(HashMap<String, Tensor>),
    Pth(Box<PthTensors>),
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
    /// a PyTorch zip checkpoint (torch >= 1.6 `torch.save` format).
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        if !path.is_file() {
            return Err(MetricsError::BadWeights {
                path: path.display().to_string(),
                msg: "no such file".into(),
            });
        }
        let is_st = path
            .extension()
            .map(|e| e.eq_ignore_ascii_case("safetensors"))
            .unwrap_or(false);
        let source = if is_st {
            let map = candle_core::safetensors::load(&path, &Device::Cpu).map_err(|e| {
                MetricsError::BadWeights {
                    path: path.display().to_string(),
                    msg: format!("cannot read safetensors: {e}"),
                }
            })?;
            Source::Safetensors(map)
        } else {
            let pth = PthTensors::new(&path, None).map_err(|e| MetricsError::BadWeights {
                path: path.display().to_string(),
                msg: format!(
                    "cannot read as a PyTorch zip checkpoint ({e}); files written by \
                     torch < 1.6 must be re-saved with a current torch.save"
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
            Source::Pth(p) => p
                .get(key)
                .map_err(|e| self.bad(format!("reading {key}: {e}")))?,
        };
        match t {
            Some(t) => Ok(Some(t.to_dtype(DType::F32)?.contiguous()?)),
            None => Ok(None),
        }
    }

    /// The tensor stored under `key` as `f32`, with an error naming the key and file if it is
    /// absent or if its shape is not `shape` (pass an empty slice to skip the shape check).
    pub fn get(&self, key: &str, shape: &[usize]) -> Result<Tensor> {
        let t = self
            .try_get(key)?
            .ok_or_else(|| self.bad(format!("missing tensor {key}")))?;
        if !shape.is_empty() && t.dims() != shape {
            return Err(self.bad(format!(
                "tensor {key} has shape {:?}, expected {:?}",
                t.dims(),
                shape
            )));
        }
        Ok(t)
    }

    /// An [`MetricsError::BadWeights`] for this file.
    pub fn bad(&self, msg: impl Into<String>) -> MetricsError {
        MetricsError::BadWeights {
            path: self.path.display().to_string(),
            msg: msg.into(),
        }
    }
}
