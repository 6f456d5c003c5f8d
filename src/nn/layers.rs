//! Layers shared by the diffusers UNet and EDM's SongUNet (NETWORKS.md §1).

use candle_core::{DType, Result, Tensor};

use super::kernels::attention::{self, AttentionWeights};
use super::kernels::ops;
use super::load::weights::{LoadResult, VarPath, WithFile};

/// A 2-D convolution `[O, I, kh, kw]` with optional bias, symmetric zero padding and stride.
#[derive(Debug, Clone)]
pub struct Conv2d {
    weight: Tensor,
    bias: Tensor,
    /// Zero padding on every side.
    pub padding: usize,
    /// Stride in both directions.
    pub stride: usize,
    packed: ops::PackedWeights,
}

impl Conv2d {
    /// Loads `weight` `[o, i, k, k]` and `bias` `[o]` under `vb`.
    pub fn load(vb: &VarPath, i: usize, o: usize, k: usize, padding: usize, stride: usize) -> LoadResult<Self> {
        let weight = vb.get("weight", &[o, i, k, k])?;
        let bias = Some(vb.get("bias", &[o])?);
        Self::new(weight, bias, padding, stride).with_file(vb.origin())
    }

    /// A convolution from tensors (the weight is made contiguous).
    pub fn new(weight: Tensor, bias: Option<Tensor>, padding: usize, stride: usize) -> Result<Self> {
        let weight = weight.contiguous()?;
        let bias = match bias {
            Some(b) => b.contiguous()?,
            None => Tensor::zeros(weight.dim(0)?, weight.dtype(), weight.device())?,
        };
        Ok(Self { weight, bias, padding, stride, packed: Default::default() })
    }

    /// The weight `[O, I, kh, kw]`.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// Applies the convolution to `x` `[B, I, H, W]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        ops::conv2d_with(x, &self.weight, &self.bias, self.padding, self.stride, Some(&self.packed))
    }
}

/// GroupNorm with per-channel affine (NETWORKS.md §1: EDM/RF/CM use `min(32, C/4)` groups and
/// eps 1e-6; diffusers uses `norm_num_groups` and `norm_eps`).
#[derive(Debug, Clone)]
pub struct GroupNorm {
    groups: usize,
    eps: f64,
    weight: Vec<f32>,
    bias: Vec<f32>,
    /// The affine on the network's device when that is not the CPU.
    resident: Option<ops::ResidentAffine>,
}

impl GroupNorm {
    /// Loads `weight` and `bias` `[c]` under `vb`.
    pub fn load(vb: &VarPath, c: usize, groups: usize, eps: f64) -> LoadResult<Self> {
        let f = vb.origin().to_string();
        if groups == 0 || !c.is_multiple_of(groups) {
            return Err(super::load::weights::LoadError::Config {
                file: f,
                msg: format!("{}: {c} channels not divisible into {groups} groups", vb.key("")),
            });
        }
        let (w, b) = (vb.get("weight", &[c])?, vb.get("bias", &[c])?);
        let resident =
            if w.device().is_cpu() { None } else { Some(ops::ResidentAffine { weight: w.clone(), bias: b.clone() }) };
        let weight = w.to_vec1::<f32>().with_file(&f)?;
        let bias = b.to_vec1::<f32>().with_file(&f)?;
        Ok(Self { groups, eps, weight, bias, resident })
    }

    /// Normalises `x` `[B, C, H, W]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        ops::group_norm(x, self.groups, self.eps, &self.weight, &self.bias, false, self.resident.as_ref())
    }

    /// `silu(GroupNorm(x))`, fused.
    pub fn forward_silu(&self, x: &Tensor) -> Result<Tensor> {
        ops::group_norm(x, self.groups, self.eps, &self.weight, &self.bias, true, self.resident.as_ref())
    }
}

/// A fully connected layer `y = x Wᵀ + b` on 2-D inputs `[N, in]`. The weight is stored
/// transposed and contiguous, so the matmul never sees a transposed left operand broadcast
/// over a batch (candle issue 3744, docs/cpu-notes.md).
#[derive(Debug, Clone)]
pub struct Linear {
    wt: Tensor,
    bias: Option<Tensor>,
}

impl Linear {
    /// Loads `weight` `[o, i]` and (if `bias`) `bias` `[o]` under `vb`.
    pub fn load(vb: &VarPath, i: usize, o: usize, bias: bool) -> LoadResult<Self> {
        let w = vb.get("weight", &[o, i])?;
        let b = if bias { Some(vb.get("bias", &[o])?) } else { None };
        Self::new(&w, b).with_file(vb.origin())
    }

    /// From a `[o, i]` weight and optional `[o]` bias.
    pub fn new(w: &Tensor, bias: Option<Tensor>) -> Result<Self> {
        Ok(Self { wt: w.t()?.contiguous()?, bias })
    }

    /// `x` `[N, in]` → `[N, out]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = x.contiguous()?.matmul(&self.wt)?;
        match &self.bias {
            Some(b) => y.broadcast_add(b),
            None => Ok(y),
        }
    }
}

/// Single- or multi-head self-attention over all `H·W` positions of `[B, C, H, W]`, with
/// residual connection: `out = (x + proj(attn(norm(x)))) / rescale` (NETWORKS.md §1; diffusers
/// `Attention` with `residual_connection=True`). On the CPU one fused op of ours
/// (`nn/kernels/attention.rs`), elsewhere candle's ops.
///
/// q, k, v are stored as one fused `[C, 3C]` matrix in q|k|v block order (EDM's interleaved
/// `qkv` is de-interleaved at load time).
#[derive(Debug, Clone)]
pub struct SelfAttention {
    norm: Option<GroupNorm>,
    qkv: Linear,
    proj: Linear,
    heads: usize,
    rescale: f64,
    /// The weights as host vectors for the fused CPU op, when they are f32 on the CPU.
    host: Option<AttentionWeights>,
}

impl SelfAttention {
    /// From q, k, v, out weights `[C, C]` (PyTorch `[out, in]`) and biases `[C]`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        norm: Option<GroupNorm>,
        wq: &Tensor,
        wk: &Tensor,
        wv: &Tensor,
        bq: &Tensor,
        bk: &Tensor,
        bv: &Tensor,
        wo: &Tensor,
        bo: &Tensor,
        heads: usize,
        rescale: f64,
    ) -> Result<Self> {
        let w = Tensor::cat(&[wq, wk, wv], 0)?;
        let b = Tensor::cat(&[bq, bk, bv], 0)?;
        let host = if w.device().is_cpu() && w.dtype() == DType::F32 {
            let flat = |t: &Tensor| t.flatten_all()?.to_vec1::<f32>();
            Some(AttentionWeights { qkv: flat(&w)?, qkv_bias: flat(&b)?, proj: flat(wo)?, proj_bias: flat(bo)? })
        } else {
            None
        };
        let (qkv, proj) = (Linear::new(&w, Some(b))?, Linear::new(wo, Some(bo.clone()))?);
        Ok(Self { norm, qkv, proj, heads, rescale, host })
    }

    /// Applies the block to `x` `[B, C, H, W]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = x.dims4()?;
        let hw = h * w;
        let nh = self.heads;
        let d = c / nh;
        let hn = match &self.norm {
            Some(n) => n.forward(x)?,
            None => x.clone(),
        };
        if let Some(w) = &self.host {
            if x.device().is_cpu() && x.dtype() == DType::F32 && !ops::use_candle_ops() {
                return attention::self_attention(&hn, x, w, nh, self.rescale);
            }
        }
        // [B, C, HW] -> [B*HW, C]
        let hs = hn.reshape((b, c, hw))?.transpose(1, 2)?.contiguous()?.reshape((b * hw, c))?;
        let qkv = self.qkv.forward(&hs)?.reshape((b, hw, 3, nh, d))?;
        let part = |j: usize| -> Result<Tensor> {
            qkv.narrow(2, j, 1)?.squeeze(2)?.permute((0, 2, 1, 3))?.contiguous()?.reshape((b * nh, hw, d))
        };
        let scale = 1.0 / (d as f64).sqrt();
        let q = (part(0)? * scale)?;
        let kt = part(1)?.transpose(1, 2)?.contiguous()?;
        let v = part(2)?;
        let logits = q.matmul(&kt)?;
        let wts = super::kernels::ops::softmax_last_dim(&logits)?;
        let a = wts.matmul(&v)?.reshape((b, nh, hw, d))?.permute((0, 2, 1, 3))?.contiguous()?.reshape((b * hw, c))?;
        let o = self.proj.forward(&a)?.reshape((b, hw, c))?.transpose(1, 2)?.contiguous()?.reshape((b, c, h, w))?;
        let y = (o + x)?;
        if self.rescale == 1.0 {
            Ok(y)
        } else {
            y / self.rescale
        }
    }
}

/// SiLU.
pub fn silu(x: &Tensor) -> Result<Tensor> {
    x.silu()
}
