//! Self-attention over `[B, C, H, W]` activations as one CPU op, in their channel-major layout.
//!
//! Written the usual way (candle's ops, [`crate::nn::layers::SelfAttention`] off the CPU) the block
//! transposes the activations to `[B·HW, C]`, splits and permutes q, k and v per head, and
//! transposes the result back: five copies of the activations, plus zeroed matmul outputs and
//! a scaling pass. Kept channel-major, every step is a GEMM whose operands are strided views
//! of the previous step's output (`gemm` packs them anyway), so nothing is copied:
//!
//! - `qkv [3C, HW] = W_qkv [3C, C] · h [C, HW] + b_qkv`
//! - per head (`d = C / heads` rows of q, k, v): `P = softmax(qᵀ k / √d) [HW, HW]`,
//!   `a [d, HW] = v · Pᵀ`
//! - `y [C, HW] = (x + b_o + W_o · a) / rescale`, written straight into the output.
//!
//! On the bundled Fashion-MNIST networks this made a forward 5–10% faster on one thread and
//! 20–25% faster on two, where the composite block's many small ops scaled poorly
//! (BENCHMARKS.md, sixth session).

use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::ops::{f32_slice, gemm_strided, Mat, MatMut};
use super::simd;

/// The weights of a self-attention block as host vectors, in PyTorch's `[out, in]` layout.
#[derive(Debug, Clone)]
pub(in crate::nn) struct AttentionWeights {
    /// q, k and v stacked, `[3C, C]`.
    pub qkv: Vec<f32>,
    /// `[3C]`.
    pub qkv_bias: Vec<f32>,
    /// The output projection, `[C, C]`.
    pub proj: Vec<f32>,
    /// `[C]`.
    pub proj_bias: Vec<f32>,
}

/// `(x + proj(attention(h))) / rescale` for `h` = the normalised `x`, both `[B, C, H, W]`.
pub(super) struct SelfAttentionOp<'a> {
    pub weights: &'a AttentionWeights,
    pub heads: usize,
    pub rescale: f64,
}

impl CustomOp2 for SelfAttentionOp<'_> {
    fn name(&self) -> &'static str {
        "self-attention"
    }

    fn cpu_fwd(&self, hs: &CpuStorage, hl: &Layout, xs: &CpuStorage, xl: &Layout) -> Result<(CpuStorage, Shape)> {
        let (h, x) = (f32_slice(hs, hl, "self_attention")?, f32_slice(xs, xl, "self_attention")?);
        let (b, c, hh, ww) = hl.shape().dims4()?;
        let w = self.weights;
        if xl.dims() != hl.dims()
            || self.heads == 0
            || c % self.heads != 0
            || w.qkv.len() != 3 * c * c
            || w.qkv_bias.len() != 3 * c
            || w.proj.len() != c * c
            || w.proj_bias.len() != c
        {
            candle_core::bail!(
                "self_attention: input {:?}, residual {:?}, {} heads, weights for {} channels",
                hl.dims(),
                xl.dims(),
                self.heads,
                w.proj_bias.len()
            );
        }
        let hw = hh * ww;
        if x.is_empty() {
            return Ok((CpuStorage::F32(Vec::new()), hl.shape().clone()));
        }
        let threads = rayon::current_num_threads();
        // Images in parallel when there are enough of them, else the GEMMs and heads are.
        let inner = if b < threads { gemm::Parallelism::Rayon(threads) } else { gemm::Parallelism::None };
        // The residual and the output bias first, then the projection accumulates onto them.
        let mut out = Vec::with_capacity(x.len());
        for (r, row) in x.chunks(hw).enumerate() {
            let bias = w.proj_bias[r % c];
            out.extend(row.iter().map(|&v| v + bias));
        }
        let one_image = |(y, hi): (&mut [f32], &[f32])| self.image(hi, y, c, hw, inner);
        if b >= threads {
            out.par_chunks_mut(c * hw).zip(h.par_chunks(c * hw)).for_each(one_image);
        } else {
            out.chunks_mut(c * hw).zip(h.chunks(c * hw)).for_each(one_image);
        }
        if self.rescale != 1.0 {
            // As candle's `Tensor / f64` does it: multiply by the f32 reciprocal.
            let inv = (1.0 / self.rescale) as f32;
            out.par_chunks_mut(1 << 14).for_each(|o| o.iter_mut().for_each(|v| *v *= inv));
        }
        Ok((CpuStorage::F32(out), hl.shape().clone()))
    }
}

impl SelfAttentionOp<'_> {
    /// One image: `h` `[C, HW]` normalised input, `y` `[C, HW]` holding `x + b_o`, to which
    /// `W_o · attention` is added.
    fn image(&self, h: &[f32], y: &mut [f32], c: usize, hw: usize, par: gemm::Parallelism) {
        let w = self.weights;
        let d = c / self.heads;
        let mut qkv = Vec::with_capacity(3 * c * hw);
        for &bias in &w.qkv_bias {
            qkv.extend(std::iter::repeat_n(bias, hw));
        }
        gemm_strided(3 * c, hw, c, MatMut::rows(&mut qkv, hw), true, Mat::rows(&w.qkv, c), Mat::rows(h, hw), 1.0, par);
        let mut attended = vec![0f32; c * hw];
        let head = |(j, a): (usize, &mut [f32]), par: gemm::Parallelism| {
            let row = |part: usize| &qkv[(part * c + j * d) * hw..][..d * hw];
            let (q, k, v) = (Mat::rows(row(0), hw), Mat::rows(row(1), hw), Mat::rows(row(2), hw));
            let mut p = vec![0f32; hw * hw];
            let scale = (1.0 / (d as f64).sqrt()) as f32;
            gemm_strided(hw, hw, d, MatMut::rows(&mut p, hw), false, q.t(), k, scale, par);
            simd::softmax_rows(&mut p, hw);
            gemm_strided(d, hw, hw, MatMut::rows(a, hw), false, v, Mat::rows(&p, hw).t(), 1.0, par);
        };
        if matches!(par, gemm::Parallelism::None) || self.heads == 1 {
            attended.chunks_mut(d * hw).enumerate().for_each(|ja| head(ja, par));
        } else {
            attended.par_chunks_mut(d * hw).enumerate().for_each(|ja| head(ja, gemm::Parallelism::None));
        }
        gemm_strided(c, hw, c, MatMut::rows(y, hw), true, Mat::rows(&w.proj, c), Mat::rows(&attended, hw), 1.0, par);
    }
}

/// `(x + proj(attention(h))) / rescale` on CPU f32 tensors `h`, `x` `[B, C, H, W]`, where `h`
/// is `x` normalised (or `x` itself for a block without norm).
pub(in crate::nn) fn self_attention(
    h: &Tensor,
    x: &Tensor,
    weights: &AttentionWeights,
    heads: usize,
    rescale: f64,
) -> Result<Tensor> {
    h.contiguous()?.apply_op2_no_bwd(&x.contiguous()?, &SelfAttentionOp { weights, heads, rescale })
}
