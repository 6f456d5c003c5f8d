//! CUDA kernels of our own (cargo feature `cuda`), compiled at run time by NVRTC once per
//! process: GroupNorm (+ SiLU) in one kernel.
//!
//! candle has no GroupNorm kernel: composed from its ops it makes about twelve passes over the
//! activations (mean, subtract, square, mean, divide, scale, shift, SiLU, each reading and most
//! writing the whole tensor). Here one block normalises one (image, group): the group's values
//! are contiguous in NCHW, it reads them for the mean, again for the centred variance (two
//! passes, as the CPU kernel, rather than E[x²] − E[x]², which cancels), and a third time to
//! write the output; a group of a CIFAR-size UNet is 16–32 KiB, so the re-reads hit the cache.
//!
//! Used only with `GDDCM_CUDA_GROUP_NORM=1` (`ops::group_norm`) until it has run on a GPU: it
//! was written in a session without one (the source compiles with nvcc 13.0 for compute_75);
//! `tools/gpu/kernels.sh` is the check to run.

use std::sync::OnceLock;

use candle_core::cuda_backend::cudarc::driver::{CudaView, LaunchConfig, PushKernelArg};
use candle_core::cuda_backend::cudarc::nvrtc;
use candle_core::cuda_backend::{CudaStorage, WrapErr};
use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape};

const SOURCE: &str = r#"
__device__ float block_sum(float v, float* red) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    __syncthreads();  // red[] may still be read from the previous call
    if (lane == 0) red[warp] = v;
    __syncthreads();
    int warps = (blockDim.x + 31) >> 5;
    if (warp == 0) {
        v = lane < warps ? red[lane] : 0.0f;
        for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
        if (lane == 0) red[0] = v;
    }
    __syncthreads();
    return red[0];
}

// One block per (image, group); x, y: [B, C, HW] contiguous; cpg channels per group.
extern "C" __global__ void gddcm_group_norm_f32(const float* x, const float* weight, const float* bias,
                                                float* y, int channels, int cpg, int hw, float eps, int silu) {
    __shared__ float red[32];
    long long n = (long long)cpg * hw;
    long long start = (long long)blockIdx.x * n;
    int c0 = (blockIdx.x % (channels / cpg)) * cpg;
    const float* xs = x + start;
    float* ys = y + start;
    float s = 0.0f;
    for (long long i = threadIdx.x; i < n; i += blockDim.x) s += xs[i];
    float mean = block_sum(s, red) / (float)n;
    float v = 0.0f;
    for (long long i = threadIdx.x; i < n; i += blockDim.x) { float d = xs[i] - mean; v += d * d; }
    float rstd = rsqrtf(block_sum(v, red) / (float)n + eps);
    for (long long i = threadIdx.x; i < n; i += blockDim.x) {
        int c = c0 + (int)(i / hw);
        float t = (xs[i] - mean) * rstd * weight[c] + bias[c];
        if (silu) t = t / (1.0f + expf(-t));
        ys[i] = t;
    }
}
"#;

const MODULE: &str = "gddcm_kernels";

/// The kernels' PTX, compiled once per process.
fn ptx() -> Result<&'static str> {
    static PTX: OnceLock<std::result::Result<String, String>> = OnceLock::new();
    PTX.get_or_init(|| nvrtc::compile_ptx(SOURCE).map(|p| p.to_src()).map_err(|e| format!("{e:?}")))
        .as_deref()
        .map_err(|e| candle_core::Error::Msg(format!("NVRTC could not compile gddcm's CUDA kernels: {e}")))
}

/// The f32 values of a contiguous operand of a custom op (`what` names it in errors).
pub(crate) fn contiguous_f32<'a>(s: &'a CudaStorage, l: &Layout, what: &str) -> Result<CudaView<'a, f32>> {
    let (a, b) = l.contiguous_offsets().ok_or_else(|| candle_core::Error::Msg(format!("{what} must be contiguous")))?;
    s.as_cuda_slice::<f32>()?
        .try_slice(a..b)
        .ok_or_else(|| candle_core::Error::Msg(format!("{what}: offsets {a}..{b} out of bounds")))
}

/// GroupNorm over `[B, C, …]` (f32, contiguous) with `groups` groups and the per-channel affine
/// `weight`, `bias` (`[C]` on the same device), then SiLU if asked.
pub(crate) struct GroupNorm {
    pub groups: usize,
    pub eps: f64,
    pub silu: bool,
}

impl CustomOp3 for GroupNorm {
    fn name(&self) -> &'static str {
        "group-norm-cuda"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        candle_core::bail!("group-norm-cuda runs on CUDA devices only")
    }

    fn cuda_fwd(
        &self,
        xs: &CudaStorage,
        xl: &Layout,
        ws: &CudaStorage,
        wl: &Layout,
        bs: &CudaStorage,
        bl: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let dims = xl.dims();
        if dims.len() < 2 {
            candle_core::bail!("group-norm-cuda: input must be [B, C, …], found shape {dims:?}");
        }
        let (b, c) = (dims[0], dims[1]);
        let hw: usize = dims[2..].iter().product();
        if !c.is_multiple_of(self.groups) || wl.dims() != [c] || bl.dims() != [c] {
            candle_core::bail!(
                "group-norm-cuda: {c} channels, {} groups, affine {:?}/{:?}",
                self.groups,
                wl.dims(),
                bl.dims()
            );
        }
        let what = |operand: &str| format!("group-norm-cuda: {operand}");
        let (x, w, bias) = (
            contiguous_f32(xs, xl, &what("input"))?,
            contiguous_f32(ws, wl, &what("weight"))?,
            contiguous_f32(bs, bl, &what("bias"))?,
        );
        let dev = &xs.device;
        let func = dev.get_or_load_custom_func("gddcm_group_norm_f32", MODULE, ptx()?)?;
        // SAFETY: the kernel writes every element.
        let mut y = unsafe { dev.alloc::<f32>(b * c * hw)? };
        let (channels, cpg, hw_i, eps, silu) =
            (c as i32, (c / self.groups) as i32, hw as i32, self.eps as f32, self.silu as i32);
        let cfg =
            LaunchConfig { grid_dim: ((b * self.groups) as u32, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 };
        let stream = dev.cuda_stream();
        let mut launch = stream.launch_builder(&func);
        launch.arg(&x).arg(&w).arg(&bias).arg(&mut y).arg(&channels).arg(&cpg).arg(&hw_i).arg(&eps).arg(&silu);
        // SAFETY: argument types match the kernel's signature; x and y hold b·c·hw values,
        // weight and bias c, and the grid covers b·groups blocks of cpg·hw values.
        unsafe { launch.launch(cfg) }.w()?;
        Ok((CudaStorage::wrap_cuda_slice(y, dev.clone()), xl.shape().clone()))
    }
}
