//! CPU kernels written as candle custom ops: fused GroupNorm(+SiLU).
//!
//! candle 0.11.1 has no fused GroupNorm; its composite version (reshape, mean, var, …) takes
//! ~15× longer than PyTorch's on CPU (notes/cpu.md). [`group_norm`] does the whole
//! normalisation, the per-channel affine and optionally SiLU in one pass per group.
//! Statistics are accumulated in f64 with a two-pass variance, so the result is at least as
//! accurate as PyTorch's (NETWORKS.md §5).

use candle_core::{CpuStorage, CustomOp1, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

struct GroupNormOp<'a> {
    groups: usize,
    eps: f64,
    weight: &'a [f32],
    bias: &'a [f32],
    silu: bool,
}

impl CustomOp1 for GroupNormOp<'_> {
    fn name(&self) -> &'static str {
        "group-norm-silu"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = match storage {
            CpuStorage::F32(v) => v,
            _ => candle_core::bail!("group_norm: only f32 is supported"),
        };
        let (start, end) = match layout.contiguous_offsets() {
            Some(o) => o,
            None => candle_core::bail!("group_norm: input must be contiguous"),
        };
        let x = &x[start..end];
        let dims = layout.dims();
        let (b, c) = (dims[0], dims[1]);
        let hw: usize = dims[2..].iter().product();
        let g = self.groups;
        let cg = c / g;
        let n = cg * hw;
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(n).zip(x.par_chunks(n)).enumerate().for_each(|(i, (o, xs))| {
            let gi = i % g;
            debug_assert!(i / g < b);
            let mut s = 0f64;
            for &v in xs {
                s += v as f64;
            }
            let mean = s / n as f64;
            let mut s2 = 0f64;
            for &v in xs {
                let d = v as f64 - mean;
                s2 += d * d;
            }
            let rstd = 1.0 / (s2 / n as f64 + self.eps).sqrt();
            for ci in 0..cg {
                let ch = gi * cg + ci;
                let a = (rstd * self.weight[ch] as f64) as f32;
                let bb = (self.bias[ch] as f64 - mean * rstd * self.weight[ch] as f64) as f32;
                let xo = &xs[ci * hw..(ci + 1) * hw];
                let oo = &mut o[ci * hw..(ci + 1) * hw];
                if self.silu {
                    for (y, &v) in oo.iter_mut().zip(xo) {
                        let t = v * a + bb;
                        *y = t / (1.0 + (-t).exp());
                    }
                } else {
                    for (y, &v) in oo.iter_mut().zip(xo) {
                        *y = v * a + bb;
                    }
                }
            }
        });
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }
}

/// GroupNorm over `[B, C, …]` with `groups` groups and per-channel affine `weight`/`bias`
/// (`C` values each), optionally followed by SiLU. f32 only. On CPU this is one fused pass;
/// elsewhere the composite candle ops.
pub fn group_norm(x: &Tensor, groups: usize, eps: f64, weight: &[f32], bias: &[f32], silu: bool) -> Result<Tensor> {
    let c = x.dim(1)?;
    if c % groups != 0 || weight.len() != c || bias.len() != c {
        candle_core::bail!(
            "group_norm: {c} channels, {groups} groups, {} weights, {} biases",
            weight.len(),
            bias.len()
        );
    }
    if x.device().is_cpu() && x.dtype() == DType::F32 {
        let op = GroupNormOp { groups, eps, weight, bias, silu };
        return x.contiguous()?.apply_op1_no_bwd(&op);
    }
    let dims = x.dims().to_vec();
    let b = dims[0];
    let xg = x.reshape((b, groups, ()))?;
    let mean = xg.mean_keepdim(2)?;
    let xc = xg.broadcast_sub(&mean)?;
    let var = xc.sqr()?.mean_keepdim(2)?;
    let xn = xc.broadcast_div(&(var + eps)?.sqrt()?)?.reshape(dims.as_slice())?;
    let mut bshape = vec![1usize; dims.len()];
    bshape[1] = c;
    let w = Tensor::from_slice(weight, bshape.as_slice(), x.device())?;
    let bi = Tensor::from_slice(bias, bshape.as_slice(), x.device())?;
    let y = xn.broadcast_mul(&w)?.broadcast_add(&bi)?;
    if silu {
        y.silu()
    } else {
        Ok(y)
    }
}
