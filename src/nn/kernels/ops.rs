//! CPU kernels written as candle custom ops: fused GroupNorm(+SiLU) and an im2col + GEMM
//! 2-D convolution.
//!
//! candle 0.11.1 has no fused GroupNorm; its composite version (reshape, mean, var, …) takes
//! ~15× longer than PyTorch's on CPU (docs/cpu-notes.md). [`group_norm`] does the whole
//! normalisation, the per-channel affine and optionally SiLU in one pass per group.
//! Statistics are accumulated in f64 with a two-pass variance, so the result is at least as
//! accurate as PyTorch's (NETWORKS.md §5).

use std::cell::RefCell;
use std::mem::MaybeUninit;
#[cfg(feature = "cuda")]
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use candle_core::{CpuStorage, CustomOp1, CustomOp3, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::simd;

/// Whether `GDDCM_NN_CANDLE_OPS=1` asks for candle's built-in conv2d, a composite GroupNorm
/// and attention by candle's ops instead of the kernels of this crate (for A/B timing and
/// debugging).
pub fn use_candle_ops() -> bool {
    static FLAG: OnceLock<bool> = OnceLock::new();
    env_flag(&FLAG, "GDDCM_NN_CANDLE_OPS", false)
}

/// Whether the direct convolution kernel is on (`GDDCM_NN_DIRECT_CONV=0` turns it off:
/// im2col + GEMM everywhere, for A/B timing).
fn direct_conv_enabled() -> bool {
    static FLAG: OnceLock<bool> = OnceLock::new();
    env_flag(&FLAG, "GDDCM_NN_DIRECT_CONV", true)
}

/// Whether CUDA convolutions go through [`super::cudnn_conv`] (feature `cudnn`) rather than
/// candle's own cuDNN path: `GDDCM_CUDNN_PLANS=1`. Off by default until it has been measured
/// and put through SPEC 5 G4 on a GPU (`tools/gpu/kernels.sh`; no GPU was at hand when it was
/// written).
#[cfg(feature = "cudnn")]
fn cudnn_plans_enabled() -> bool {
    static FLAG: OnceLock<bool> = OnceLock::new();
    env_flag(&FLAG, "GDDCM_CUDNN_PLANS", false)
}

/// Whether GroupNorm on CUDA runs [`super::cuda_kernels::GroupNorm`] rather than candle's
/// composite ops: `GDDCM_CUDA_GROUP_NORM=1`. Off by default until it has been measured and put
/// through SPEC 5 G4 on a GPU (`tools/gpu/kernels.sh`; no GPU was at hand when it was written).
#[cfg(feature = "cuda")]
fn cuda_group_norm_enabled() -> bool {
    static FLAG: OnceLock<bool> = OnceLock::new();
    env_flag(&FLAG, "GDDCM_CUDA_GROUP_NORM", false)
}

/// Runs a GPU fast path of ours unless it failed before. On its first error it warns once
/// and stays off for the process, and the caller takes candle's ops: a kernel that cannot
/// compile or a cuDNN without the algorithm must not stop a run that candle can do.
#[cfg(feature = "cuda")]
fn fast_path(failed: &AtomicBool, what: &str, f: impl FnOnce() -> Result<Tensor>) -> Option<Tensor> {
    if failed.load(Ordering::Relaxed) {
        return None;
    }
    f().map_err(|e| {
        if !failed.swap(true, Ordering::Relaxed) {
            eprintln!("warning: {what} failed ({e}); candle's ops take over");
        }
    })
    .ok()
}

/// An on/off environment switch read once: `1` is on, `0` off, unset or other the default.
fn env_flag(flag: &OnceLock<bool>, name: &str, default: bool) -> bool {
    *flag.get_or_init(|| match std::env::var(name).as_deref() {
        Ok("1") => true,
        Ok("0") => false,
        _ => default,
    })
}

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
        // Every value is written once below; zeroing the buffer first cost a memset pass
        // over the activations (~2% of the bundled network's forward).
        let mut out = Vec::with_capacity(x.len());
        out.spare_capacity_mut()[..x.len()].par_chunks_mut(n).zip(x.par_chunks(n)).enumerate().for_each(
            |(i, (o, xs))| {
                let gi = i % g;
                debug_assert!(i / g < b);
                let ch = gi * cg..(gi + 1) * cg;
                let (w, bias) = (&self.weight[ch.clone()], &self.bias[ch]);
                normalize_group(xs, o, hw, w, bias, self.eps, self.silu);
            },
        );
        // SAFETY: the chunks cover all `x.len()` values and `normalize_group` wrote each one.
        unsafe { out.set_len(x.len()) };
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }
}

/// One group of GroupNorm: `xs` holds its `cg` channels of `hw` values each. Mean and
/// variance are accumulated in f64 (two passes) in independent lanes, so the loops
/// vectorise; then `y = x·a + b` per channel, optionally through SiLU, written to every
/// value of `out` (`xs.len()` values).
#[inline(always)]
fn normalize_group_body(
    xs: &[f32],
    out: &mut [MaybeUninit<f32>],
    hw: usize,
    weight: &[f32],
    bias: &[f32],
    eps: f64,
    silu: bool,
) {
    assert_eq!(out.len(), xs.len());
    let n = xs.len() as f64;
    let mean = simd::sum_f64(xs, 0.0) / n;
    let var = simd::sum_sq_dev_f64(xs, mean) / n;
    let rstd = 1.0 / (var + eps).sqrt();
    for (ci, (oo, xo)) in out.chunks_mut(hw).zip(xs.chunks(hw)).enumerate() {
        let a = (rstd * weight[ci] as f64) as f32;
        let b = (bias[ci] as f64 - mean * rstd * weight[ci] as f64) as f32;
        if silu {
            for (y, &v) in oo.iter_mut().zip(xo) {
                let t = v * a + b;
                y.write(t / (1.0 + simd::exp(-t)));
            }
        } else {
            for (y, &v) in oo.iter_mut().zip(xo) {
                y.write(v * a + b);
            }
        }
    }
}

/// A GroupNorm's affine `[C]` kept on a non-CPU device, for [`group_norm`]'s composite path.
#[derive(Debug, Clone)]
pub struct ResidentAffine {
    /// Per-channel scale `[C]`.
    pub weight: Tensor,
    /// Per-channel shift `[C]`.
    pub bias: Tensor,
}

simd::multiversion!(
    fn normalize_group(
        xs: &[f32],
        out: &mut [MaybeUninit<f32>],
        hw: usize,
        weight: &[f32],
        bias: &[f32],
        eps: f64,
        silu: bool
    ) =
        normalize_group_body
);

/// GroupNorm over `[B, C, …]` with `groups` groups and per-channel affine `weight`/`bias`
/// (`C` values each), optionally followed by SiLU. f32 only. On CPU this is one fused pass,
/// on CUDA with `GDDCM_CUDA_GROUP_NORM=1` one kernel of ours (`cuda_kernels.rs`); elsewhere the
/// composite candle ops, with the affine taken from `resident` when given (no
/// host-to-device copy, which on a GPU is a synchronising transfer per call).
pub fn group_norm(
    x: &Tensor,
    groups: usize,
    eps: f64,
    weight: &[f32],
    bias: &[f32],
    silu: bool,
    resident: Option<&ResidentAffine>,
) -> Result<Tensor> {
    let c = x.dim(1)?;
    if !c.is_multiple_of(groups) || weight.len() != c || bias.len() != c {
        candle_core::bail!(
            "group_norm: {c} channels, {groups} groups, {} weights, {} biases",
            weight.len(),
            bias.len()
        );
    }
    if x.device().is_cpu() && x.dtype() == DType::F32 && !use_candle_ops() {
        let op = GroupNormOp { groups, eps, weight, bias, silu };
        return x.contiguous()?.apply_op1_no_bwd(&op);
    }
    let affine = || -> Result<(Tensor, Tensor)> {
        match resident {
            Some(r) if r.weight.device().same_device(x.device()) => Ok((r.weight.clone(), r.bias.clone())),
            _ => Ok((Tensor::from_slice(weight, c, x.device())?, Tensor::from_slice(bias, c, x.device())?)),
        }
    };
    #[cfg(feature = "cuda")]
    if x.device().is_cuda() && x.dtype() == DType::F32 && cuda_group_norm_enabled() {
        static FAILED: AtomicBool = AtomicBool::new(false);
        let op = super::cuda_kernels::GroupNorm { groups, eps, silu };
        let fused = fast_path(&FAILED, "the CUDA GroupNorm kernel", || {
            let (w, b) = affine()?;
            x.contiguous()?.apply_op3_no_bwd(&w, &b, &op)
        });
        if let Some(y) = fused {
            return Ok(y);
        }
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
    let (w, bi) = affine()?;
    let y = xn.broadcast_mul(&w.reshape(bshape.as_slice())?)?.broadcast_add(&bi.reshape(bshape.as_slice())?)?;
    if silu {
        y.silu()
    } else {
        Ok(y)
    }
}

pub(super) fn f32_slice<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> Result<&'a [f32]> {
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
    /// docs/cpu-notes.md).
    static COL: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// `x [B, I, H, W]` ⊛ `w [O, I, kh, kw]` + `b [O]`, symmetric zero padding, equal strides.
struct Conv2dOp<'a> {
    padding: usize,
    stride: usize,
    /// Where the weights repacked for the direct kernel are kept between calls.
    packed: Option<&'a PackedWeights>,
}

/// A convolution's weights repacked for the direct AVX-512 kernel, computed on the first
/// forward that uses them and kept with the layer (the repacking costs about as much as one
/// image's convolution on the 8×8 maps of the bundled models).
#[derive(Debug, Clone, Default)]
pub struct PackedWeights(OnceLock<Vec<f32>>);

/// Shapes of one convolution.
#[derive(Clone, Copy)]
struct ConvDims {
    ci: usize,
    h: usize,
    w: usize,
    co: usize,
    kh: usize,
    kw: usize,
    p: usize,
    s: usize,
    ho: usize,
    wo: usize,
}

impl ConvDims {
    fn n(&self) -> usize {
        self.ho * self.wo
    }
    fn k(&self) -> usize {
        self.ci * self.kh * self.kw
    }
    fn is_pointwise(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.p == 0 && self.s == 1
    }
}

/// Row `r` (input channel, tap y, tap x) of the im2col matrix of one image `x [I, H, W]`,
/// written into `dst` (`ho·wo` values).
fn im2col_row(x: &[f32], r: usize, dst: &mut [f32], d: &ConvDims) {
    if d.s == 1 && d.ho == d.h && d.wo == d.w {
        im2col_row_same(x, r, dst, d);
    } else {
        im2col_row_general(x, r, dst, d);
    }
}

/// [`im2col_row`] for a stride-1 "same" convolution: the row is the input plane shifted by
/// `(dy − p, dx − p)`, so it is one contiguous copy of the valid rows (off by the horizontal
/// shift) followed by zeroing the wrapped-around border columns. One `memcpy` per plane
/// instead of one per image row, which dominated on the 8–32 px feature maps of the bundled
/// models.
fn im2col_row_same(x: &[f32], r: usize, dst: &mut [f32], d: &ConvDims) {
    let (kh, kw, p, h, w) = (d.kh, d.kw, d.p as isize, d.h, d.w);
    let c = r / (kh * kw);
    let (sy, sx) = (((r / kw) % kh) as isize - p, (r % kw) as isize - p);
    let src = &x[c * h * w..(c + 1) * h * w];
    // Output rows whose input row oy + sy exists.
    let oy_lo = (-sy).clamp(0, h as isize) as usize;
    let oy_hi = (h as isize - sy).clamp(oy_lo as isize, h as isize) as usize;
    let (a, b) = (oy_lo * w, oy_hi * w);
    dst[..a].fill(0.0);
    dst[b..].fill(0.0);
    if a == b {
        return;
    }
    // dst[i] = src[i + shift] for i in a..b, where the source exists.
    let shift = sy * w as isize + sx;
    let first = ((-(a as isize + shift)).max(0) as usize).min(b - a);
    let last = (((b as isize + shift) - (h * w) as isize).max(0) as usize).min(b - a - first);
    dst[a..a + first].fill(0.0);
    dst[b - last..b].fill(0.0);
    if a + first < b - last {
        let (from, to) = ((a + first) as isize + shift, (b - last) as isize + shift);
        dst[a + first..b - last].copy_from_slice(&src[from as usize..to as usize]);
    }
    // Columns whose input column ox + sx falls outside picked up a neighbouring row's value.
    let cols = sx.unsigned_abs().min(w);
    if cols > 0 {
        for row in dst[a..b].chunks_exact_mut(w) {
            let border = if sx < 0 { &mut row[..cols] } else { &mut row[w - cols..] };
            border.fill(0.0);
        }
    }
}

/// [`im2col_row`] for any stride and padding, one output row at a time.
fn im2col_row_general(x: &[f32], r: usize, dst: &mut [f32], d: &ConvDims) {
    let (kh, kw, p, s, h, wd, ho, wo) = (d.kh, d.kw, d.p, d.s, d.h, d.w, d.ho, d.wo);
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
            for (ox, v) in drow.iter_mut().enumerate() {
                let ix = (ox * s + dx) as isize - p as isize;
                *v = if ix < 0 || ix >= wd as isize { 0.0 } else { srow[ix as usize] };
            }
        }
    }
}

/// `dst [m, n] (row stride n) += lhs [m, k] · rhs [k, n]`, all row-major.
fn gemm_acc(m: usize, n: usize, k: usize, dst: &mut [f32], lhs: &[f32], rhs: &[f32], par: gemm::Parallelism) {
    let (dst, lhs, rhs) = (MatMut::rows(dst, n), Mat::rows(lhs, k), Mat::rows(rhs, n));
    gemm_strided(m, n, k, dst, true, lhs, rhs, 1.0, par);
}

/// A read-only matrix in a slice: element `(i, j)` at `data[i·row_stride + j·col_stride]`, so
/// a transposed operand is the same slice with the strides swapped.
#[derive(Clone, Copy)]
pub(super) struct Mat<'a> {
    pub data: &'a [f32],
    pub row_stride: usize,
    pub col_stride: usize,
}

impl<'a> Mat<'a> {
    /// Row-major with `cols` columns.
    pub fn rows(data: &'a [f32], cols: usize) -> Self {
        Self { data, row_stride: cols, col_stride: 1 }
    }

    /// The transpose of this matrix.
    pub fn t(self) -> Self {
        Self { row_stride: self.col_stride, col_stride: self.row_stride, ..self }
    }

    /// Whether every element of an `r × c` matrix lies in `data`.
    fn holds(&self, r: usize, c: usize) -> bool {
        r == 0 || c == 0 || (r - 1) * self.row_stride + (c - 1) * self.col_stride < self.data.len()
    }
}

/// A row-major destination matrix with row stride `row_stride`.
pub(super) struct MatMut<'a> {
    pub data: &'a mut [f32],
    pub row_stride: usize,
}

impl<'a> MatMut<'a> {
    /// Row-major with `cols` columns.
    pub fn rows(data: &'a mut [f32], cols: usize) -> Self {
        Self { data, row_stride: cols }
    }
}

/// `dst [m, n] = (dst if accumulate) + scale · lhs [m, k] · rhs [k, n]`, any strides, through
/// the `gemm` crate (which packs its operands, so transposed views cost nothing extra).
#[allow(clippy::too_many_arguments)]
pub(super) fn gemm_strided(
    m: usize,
    n: usize,
    k: usize,
    dst: MatMut,
    accumulate: bool,
    lhs: Mat,
    rhs: Mat,
    scale: f32,
    par: gemm::Parallelism,
) {
    let dst_ok = m == 0 || n == 0 || (m - 1) * dst.row_stride + n - 1 < dst.data.len();
    assert!(dst_ok && lhs.holds(m, k) && rhs.holds(k, n), "gemm_strided: operands too small for {m}×{k}·{k}×{n}");
    // SAFETY: the three matrices lie inside their slices (checked above), and `dst` is borrowed
    // mutably, so it overlaps neither operand.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.data.as_mut_ptr(),
            1,
            dst.row_stride as isize,
            accumulate,
            lhs.data.as_ptr(),
            lhs.col_stride as isize,
            lhs.row_stride as isize,
            rhs.data.as_ptr(),
            rhs.col_stride as isize,
            rhs.row_stride as isize,
            1.0f32,
            scale,
            false,
            false,
            false,
            par,
        )
    }
}

fn with_col<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    COL.with(|col| {
        let mut col = col.borrow_mut();
        if col.len() < len {
            col.resize(len, 0.0);
        }
        f(&mut col[..len])
    })
}

impl Conv2dOp<'_> {
    /// One image: `out [O, ho·wo]` (holding the bias on entry) += W · im2col(x).
    fn one_image(&self, x: &[f32], w: &[f32], out: &mut [f32], d: &ConvDims, par: gemm::Parallelism) {
        let (n, k) = (d.n(), d.k());
        if d.is_pointwise() {
            gemm_acc(d.co, n, k, out, w, x, par);
            return;
        }
        with_col(k * n, |col| {
            let fill = |(r, dst): (usize, &mut [f32])| im2col_row(x, r, dst, d);
            if matches!(par, gemm::Parallelism::None) {
                col.chunks_mut(n).enumerate().for_each(fill);
            } else {
                col.par_chunks_mut(n).enumerate().for_each(fill);
            }
            gemm_acc(d.co, n, k, out, w, col, par);
        });
    }

    /// All images in one GEMM (`N = B·ho·wo`), for small feature maps where per-image GEMMs
    /// would be too thin: `tmp [O, B·n]`, then scattered to `out [B, O, n]`.
    fn batched(&self, x: &[f32], w: &[f32], b: &[f32], bs: usize, d: &ConvDims) -> Vec<f32> {
        let (n, k, co) = (d.n(), d.k(), d.co);
        let per_in = d.ci * d.h * d.w;
        let threads = rayon::current_num_threads();
        let par = if threads > 1 { gemm::Parallelism::Rayon(threads) } else { gemm::Parallelism::None };
        let mut tmp = bias_rows(b, 1, bs * n);
        with_col(k * bs * n, |col| {
            col.par_chunks_mut(bs * n).enumerate().for_each(|(r, row)| {
                for (bi, seg) in row.chunks_mut(n).enumerate() {
                    im2col_row(&x[bi * per_in..(bi + 1) * per_in], r, seg, d);
                }
            });
            gemm_acc(co, bs * n, k, &mut tmp, w, col, par);
        });
        let mut out = Vec::with_capacity(bs * co * n);
        for bi in 0..bs {
            for o in 0..co {
                let start = o * bs * n + bi * n;
                out.extend_from_slice(&tmp[start..start + n]);
            }
        }
        out
    }

    /// Whether the direct kernel takes this convolution: AVX-512, stride 1, channels in
    /// blocks of 16, not pointwise (a 1×1 convolution is a plain GEMM on the input).
    #[cfg(target_arch = "x86_64")]
    fn direct(&self, d: &ConvDims) -> bool {
        direct_conv_enabled()
            && super::direct_conv::available()
            && super::direct_conv::supports(d.ci, d.co, d.s)
            && !d.is_pointwise()
    }

    /// The convolution by [`super::direct_conv`]: images in parallel when the batch covers
    /// the threads, otherwise the output channel blocks of each image.
    #[cfg(target_arch = "x86_64")]
    fn run_direct(&self, x: &[f32], w: &[f32], b: &[f32], bs: usize, d: &ConvDims) -> Vec<f32> {
        use super::direct_conv::{conv_blocks, pack_input, pack_weights, Shape as DShape};
        let shape = DShape { ci: d.ci, h: d.h, w: d.w, co: d.co, kh: d.kh, kw: d.kw, pad: d.p };
        let local;
        let wp: &[f32] = match self.packed {
            Some(cache) => cache.0.get_or_init(|| pack_weights(w, &shape)),
            None => {
                local = pack_weights(w, &shape);
                &local
            }
        };
        let (per_in, per_out, per_block) = (d.ci * d.h * d.w, d.co * d.n(), 16 * d.n());
        let blocks = d.co / 16;
        let threads = rayon::current_num_threads();
        // Not zeroed first: `conv_blocks` writes every value (a memset pass over each
        // convolution's output was ~1.5% of the bundled network's forward).
        let mut out = Vec::with_capacity(bs * per_out);
        let image = |xi: &[f32], o: &mut [MaybeUninit<f32>], split: bool| {
            with_col(shape.packed_input_len(), |xp| {
                pack_input(xi, &shape, xp);
                if split {
                    o.par_chunks_mut(per_block)
                        .enumerate()
                        .for_each(|(k, ob)| conv_blocks(xp, wp, b, &shape, k..k + 1, ob));
                } else {
                    conv_blocks(xp, wp, b, &shape, 0..blocks, o);
                }
            })
        };
        let spare = &mut out.spare_capacity_mut()[..bs * per_out];
        if threads > 1 && bs >= threads {
            spare.par_chunks_mut(per_out).zip(x.par_chunks(per_in)).for_each(|(o, xi)| image(xi, o, false));
        } else {
            for (o, xi) in spare.chunks_mut(per_out).zip(x.chunks(per_in)) {
                image(xi, o, threads > 1);
            }
        }
        // SAFETY: every image's `blocks` channel blocks of `per_block` values, i.e. all
        // `per_out` values, were written by `conv_blocks`.
        unsafe { out.set_len(bs * per_out) };
        out
    }
}

/// `reps` copies of `[O, n]` rows each filled with its channel's bias (written once, rather
/// than zeroed and then filled).
fn bias_rows(bias: &[f32], reps: usize, n: usize) -> Vec<f32> {
    let mut v = Vec::with_capacity(reps * bias.len() * n);
    for _ in 0..reps {
        for &b in bias {
            v.resize(v.len() + n, b);
        }
    }
    v
}

impl CustomOp3 for Conv2dOp<'_> {
    fn name(&self) -> &'static str {
        "conv2d-direct-or-im2col-gemm"
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
        let d = ConvDims { ci, h, w: wd, co, kh, kw, p, s, ho, wo };
        let per_out = co * ho * wo;
        let per_in = ci * h * wd;
        let threads = rayon::current_num_threads();
        #[cfg(target_arch = "x86_64")]
        if self.direct(&d) {
            let out = self.run_direct(x, w, b, bs, &d);
            return Ok((CpuStorage::F32(out), Shape::from((bs, co, ho, wo))));
        }
        let out = if bs > 1 && d.n() <= 256 && !d.is_pointwise() {
            self.batched(x, w, b, bs, &d)
        } else {
            let mut out = bias_rows(b, bs, d.n());
            if bs >= threads && threads > 1 {
                out.par_chunks_mut(per_out)
                    .zip(x.par_chunks(per_in))
                    .for_each(|(o, xi)| self.one_image(xi, w, o, &d, gemm::Parallelism::None));
            } else {
                let par = if threads > 1 { gemm::Parallelism::Rayon(threads) } else { gemm::Parallelism::None };
                for (o, xi) in out.chunks_mut(per_out).zip(x.chunks(per_in)) {
                    self.one_image(xi, w, o, &d, par);
                }
            }
            out
        };
        Ok((CpuStorage::F32(out), Shape::from((bs, co, ho, wo))))
    }
}

/// 2-D convolution (cross-correlation, like PyTorch) of `x [B, I, H, W]` with `w [O, I, kh, kw]`
/// plus `bias [O]`, zero padding `padding` on every side and stride `stride`. On CPU/f32 this
/// is the direct AVX-512 kernel (`nn/kernels/direct_conv.rs`) where it applies, otherwise im2col +
/// one `gemm` call per image (images in parallel when the batch covers the threads);
/// elsewhere candle's `conv2d`.
pub fn conv2d(x: &Tensor, w: &Tensor, bias: &Tensor, padding: usize, stride: usize) -> Result<Tensor> {
    conv2d_with(x, w, bias, padding, stride, None)
}

/// [`conv2d`] keeping the weights repacked for the direct kernel in `packed` (for a layer
/// whose weights never change).
pub fn conv2d_with(
    x: &Tensor,
    w: &Tensor,
    bias: &Tensor,
    padding: usize,
    stride: usize,
    packed: Option<&PackedWeights>,
) -> Result<Tensor> {
    if x.device().is_cpu() && x.dtype() == DType::F32 && w.dtype() == DType::F32 && !use_candle_ops() {
        let op = Conv2dOp { padding, stride, packed };
        return x.contiguous()?.apply_op3_no_bwd(&w.contiguous()?, &bias.contiguous()?, &op);
    }
    #[cfg(feature = "cudnn")]
    if x.device().is_cuda() && x.dtype() == DType::F32 && w.dtype() == DType::F32 && cudnn_plans_enabled() {
        static FAILED: AtomicBool = AtomicBool::new(false);
        let op = super::cudnn_conv::Conv2d { padding, stride };
        let planned = fast_path(&FAILED, "the planned cuDNN convolution", || {
            x.contiguous()?.apply_op3_no_bwd(&w.contiguous()?, &bias.contiguous()?, &op)
        });
        if let Some(y) = planned {
            return Ok(y);
        }
    }
    x.conv2d(w, padding, stride, 1, 1)?.broadcast_add(&bias.reshape((1, (), 1, 1))?)
}

struct SoftmaxLastDim;

impl CustomOp1 for SoftmaxLastDim {
    fn name(&self) -> &'static str {
        "softmax-last-dim"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(storage, layout, "softmax")?;
        let d = layout.dims().last().copied().unwrap_or(1).max(1);
        let mut out = x.to_vec();
        // Rows in parallel, a few per task: a row is only 64–1024 values here.
        out.par_chunks_mut(d * 16).for_each(|rows| {
            simd::softmax_rows(rows, d);
        });
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }
}

/// Softmax over the last dimension. On CPU/f32 one vectorised pass per row (candle's calls
/// libm's `expf` per value, which made it the costliest op of the attention blocks);
/// elsewhere candle's.
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    if x.device().is_cpu() && x.dtype() == DType::F32 && !use_candle_ops() {
        return x.contiguous()?.apply_op1_no_bwd(&SoftmaxLastDim);
    }
    candle_nn::ops::softmax_last_dim(x)
}
