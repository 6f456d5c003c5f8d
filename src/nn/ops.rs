//! CPU kernels written as candle custom ops: fused GroupNorm(+SiLU) and an im2col + GEMM
//! 2-D convolution.
//!
//! candle 0.11.1 has no fused GroupNorm; its composite version (reshape, mean, var, …) takes
//! ~15× longer than PyTorch's on CPU (notes/cpu.md). [`group_norm`] does the whole
//! normalisation, the per-channel affine and optionally SiLU in one pass per group.
//! Statistics are accumulated in f64 with a two-pass variance, so the result is at least as
//! accurate as PyTorch's (NETWORKS.md §5).

use std::cell::RefCell;

use candle_core::{CpuStorage, CustomOp1, CustomOp3, DType, Layout, Result, Shape, Tensor};
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
    if !c.is_multiple_of(groups) || weight.len() != c || bias.len() != c {
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

fn f32_slice<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> Result<&'a [f32]> {
    let v = match s {
        CpuStorage::F32(v) => v,
        _ => candle_core::bail!("{what}: only f32 is supported"),
    };
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&v[a..b]),
        None => candle_core::bail!("{what}: operand must be contiguous"),
    }
}

thread_local! {
    /// Per-thread im2col buffer, reused across calls (page faults are expensive here,
    /// notes/cpu.md).
    static COL: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// `x [B, I, H, W]` ⊛ `w [O, I, kh, kw]` + `b [O]`, symmetric zero padding, equal strides.
struct Conv2dOp {
    padding: usize,
    stride: usize,
}

impl Conv2dOp {
    #[allow(clippy::too_many_arguments)]
    fn one_image(
        &self,
        x: &[f32],
        w: &[f32],
        b: &[f32],
        out: &mut [f32],
        dims: (usize, usize, usize, usize, usize, usize, usize),
        par: gemm::Parallelism,
    ) {
        let (ci, h, wd, co, kh, kw, _) = dims;
        let (p, s) = (self.padding, self.stride);
        let ho = (h + 2 * p - kh) / s + 1;
        let wo = (wd + 2 * p - kw) / s + 1;
        let n = ho * wo;
        let k = ci * kh * kw;
        for (o, row) in out.chunks_mut(n).enumerate() {
            row.fill(b[o]);
        }
        let gemm_into = |rhs: &[f32], out: &mut [f32]| unsafe {
            gemm::gemm(
                co,
                n,
                k,
                out.as_mut_ptr(),
                1,
                n as isize,
                true,
                w.as_ptr(),
                1,
                k as isize,
                rhs.as_ptr(),
                1,
                n as isize,
                1.0f32,
                1.0f32,
                false,
                false,
                false,
                par,
            )
        };
        if kh == 1 && kw == 1 && p == 0 && s == 1 {
            gemm_into(x, out);
            return;
        }
        COL.with(|col| {
            let mut col = col.borrow_mut();
            if col.len() < k * n {
                col.resize(k * n, 0.0);
            }
            let col = &mut col[..k * n];
            let fill = |(r, dst): (usize, &mut [f32])| {
                let c = r / (kh * kw);
                let dy = (r / kw) % kh;
                let dx = r % kw;
                let src = &x[c * h * wd..(c + 1) * h * wd];
                for oy in 0..ho {
                    let iy = (oy * s + dy) as isize - p as isize;
                    let drow = &mut dst[oy * wo..(oy + 1) * wo];
                    if iy < 0 || iy >= h as isize {
                        drow.fill(0.0);
                        continue;
                    }
                    let srow = &src[iy as usize * wd..(iy as usize + 1) * wd];
                    if s == 1 {
                        // ix = ox + dx − p: copy the valid span, zero the borders.
                        let lo = p.saturating_sub(dx).min(wo);
                        let hi = (wd + p).saturating_sub(dx).min(wo).max(lo);
                        drow[..lo].fill(0.0);
                        drow[hi..].fill(0.0);
                        if hi > lo {
                            let a = lo + dx - p;
                            drow[lo..hi].copy_from_slice(&srow[a..a + (hi - lo)]);
                        }
                    } else {
                        for (ox, d) in drow.iter_mut().enumerate() {
                            let ix = (ox * s + dx) as isize - p as isize;
                            *d = if ix < 0 || ix >= wd as isize { 0.0 } else { srow[ix as usize] };
                        }
                    }
                }
            };
            if matches!(par, gemm::Parallelism::None) {
                col.chunks_mut(n).enumerate().for_each(fill);
            } else {
                col.par_chunks_mut(n).enumerate().for_each(fill);
            }
            gemm_into(col, out);
        });
    }
}

impl CustomOp3 for Conv2dOp {
    fn name(&self) -> &'static str {
        "conv2d-im2col-gemm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(s1, l1, "conv2d input")?;
        let w = f32_slice(s2, l2, "conv2d weight")?;
        let b = f32_slice(s3, l3, "conv2d bias")?;
        let (bs, ci, h, wd) = l1.shape().dims4()?;
        let (co, ci2, kh, kw) = l2.shape().dims4()?;
        if ci != ci2 || b.len() != co {
            candle_core::bail!("conv2d: input {:?}, weight {:?}", l1.dims(), l2.dims());
        }
        let (p, s) = (self.padding, self.stride);
        if h + 2 * p < kh || wd + 2 * p < kw || s == 0 {
            candle_core::bail!("conv2d: kernel larger than padded input");
        }
        let ho = (h + 2 * p - kh) / s + 1;
        let wo = (wd + 2 * p - kw) / s + 1;
        let per_out = co * ho * wo;
        let per_in = ci * h * wd;
        let mut out = vec![0f32; bs * per_out];
        let dims = (ci, h, wd, co, kh, kw, 0);
        let threads = rayon::current_num_threads();
        if bs >= threads && threads > 1 {
            out.par_chunks_mut(per_out)
                .zip(x.par_chunks(per_in))
                .for_each(|(o, xi)| self.one_image(xi, w, b, o, dims, gemm::Parallelism::None));
        } else {
            let par = if threads > 1 { gemm::Parallelism::Rayon(threads) } else { gemm::Parallelism::None };
            for (o, xi) in out.chunks_mut(per_out).zip(x.chunks(per_in)) {
                self.one_image(xi, w, b, o, dims, par);
            }
        }
        Ok((CpuStorage::F32(out), Shape::from((bs, co, ho, wo))))
    }
}

/// 2-D convolution (cross-correlation, like PyTorch) of `x [B, I, H, W]` with `w [O, I, kh, kw]`
/// plus `bias [O]`, zero padding `padding` on every side and stride `stride`. On CPU/f32 this
/// is im2col + one `gemm` call per image (images in parallel when the batch covers the
/// threads); elsewhere candle's `conv2d`.
pub fn conv2d(x: &Tensor, w: &Tensor, bias: &Tensor, padding: usize, stride: usize) -> Result<Tensor> {
    if x.device().is_cpu() && x.dtype() == DType::F32 && w.dtype() == DType::F32 {
        let op = Conv2dOp { padding, stride };
        return x.contiguous()?.apply_op3_no_bwd(&w.contiguous()?, &bias.contiguous()?, &op);
    }
    x.conv2d(w, padding, stride, 1, 1)?.broadcast_add(&bias.reshape((1, (), 1, 1))?)
}
