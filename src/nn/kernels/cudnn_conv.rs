//! 2-D convolutions through cuDNN with each shape's plan made once (cargo feature `cudnn`).
//!
//! candle 0.11's own cuDNN convolution rebuilds its descriptors, asks cuDNN's heuristic for an
//! algorithm and allocates and zeroes a workspace on every call: about 1 ms per call on an H200,
//! which made a batch-1 forward of the DDPM CIFAR-10 UNet 6× slower than candle's im2col path,
//! while batch 256 reached only 0.39× PyTorch's images/s (BENCHMARKS.md). Here each
//! (input shape, filter shape, padding, stride) gets its descriptors once, and the fastest
//! *deterministic* algorithm measured by `cudnnFindConvolutionForwardAlgorithm` (as PyTorch's
//! `cudnn.benchmark`), and one workspace per thread and device is kept and grown. f32 stays
//! f32 unless `NVIDIA_TF32_OVERRIDE` allows TF32 (see `gddcm::runtime`).
//!
//! Descriptors and handles live as long as the thread that made them (a handful per network).
//!
//! Used only with `GDDCM_CUDNN_PLANS=1` (`ops::conv2d_with`) until it has run on a GPU:
//! it was written in a session without one; `tools/gpu/kernels.sh` is the check to run.

use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::CStr;
use std::sync::Arc;

use candle_core::cuda_backend::cudarc::cudnn::sys;
use candle_core::cuda_backend::cudarc::driver::{CudaSlice, CudaStream, DevicePtr, DevicePtrMut};
use candle_core::cuda_backend::CudaStorage;
use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape};

use super::cuda_kernels::contiguous_f32;

fn check(status: sys::cudnnStatus_t, what: &str) -> Result<()> {
    if status == sys::cudnnStatus_t::CUDNN_STATUS_SUCCESS {
        return Ok(());
    }
    // SAFETY: cudnnGetErrorString returns a static NUL-terminated string for any status.
    let msg = unsafe { CStr::from_ptr(sys::cudnnGetErrorString(status)) }.to_string_lossy();
    candle_core::bail!("cuDNN {what}: {msg} ({status:?})")
}

/// Whether f32 convolutions may run in TF32 (only when the user set `NVIDIA_TF32_OVERRIDE`
/// to something other than 0; `gddcm::runtime` sets it to 0 otherwise).
fn tf32_allowed() -> bool {
    std::env::var("NVIDIA_TF32_OVERRIDE").is_ok_and(|v| v != "0")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    x: [usize; 4],
    w: [usize; 4],
    padding: usize,
    stride: usize,
}

impl Key {
    fn out(&self) -> [usize; 4] {
        let o = |i: usize, k: usize| (i + 2 * self.padding - k) / self.stride + 1;
        [self.x[0], self.w[0], o(self.x[2], self.w[2]), o(self.x[3], self.w[3])]
    }
}

/// The descriptors of one convolution shape and its chosen algorithm.
struct Plan {
    x: sys::cudnnTensorDescriptor_t,
    w: sys::cudnnFilterDescriptor_t,
    conv: sys::cudnnConvolutionDescriptor_t,
    y: sys::cudnnTensorDescriptor_t,
    bias: sys::cudnnTensorDescriptor_t,
    algo: sys::cudnnConvolutionFwdAlgo_t,
    workspace: usize,
}

/// One cuDNN handle bound to a device's stream, with its plans and workspace.
struct Context {
    handle: sys::cudnnHandle_t,
    plans: HashMap<Key, Plan>,
    workspace: Option<CudaSlice<u8>>,
    /// Keeps the stream, and with it the CUDA context, alive until the handle and descriptors
    /// are destroyed (a thread-local may be dropped after the last tensor at exit).
    _stream: Arc<CudaStream>,
}

fn tensor_desc(dims: [usize; 4]) -> Result<sys::cudnnTensorDescriptor_t> {
    let mut d = std::ptr::null_mut();
    let [n, c, h, w] = dims.map(|v| v as i32);
    // SAFETY: plain descriptor calls on a fresh descriptor.
    unsafe {
        check(sys::cudnnCreateTensorDescriptor(&mut d), "create tensor descriptor")?;
        check(
            sys::cudnnSetTensor4dDescriptor(
                d,
                sys::cudnnTensorFormat_t::CUDNN_TENSOR_NCHW,
                sys::cudnnDataType_t::CUDNN_DATA_FLOAT,
                n,
                c,
                h,
                w,
            ),
            "set tensor descriptor",
        )?;
    }
    Ok(d)
}

impl Context {
    fn new(stream: Arc<CudaStream>) -> Result<Self> {
        let mut handle = std::ptr::null_mut();
        // SAFETY: creates a handle and binds it to candle's stream for this device, so that the
        // convolutions are ordered with candle's own kernels.
        unsafe {
            check(sys::cudnnCreate(&mut handle), "create handle")?;
            check(sys::cudnnSetStream(handle, stream.cu_stream() as sys::cudaStream_t), "set stream")?;
        }
        Ok(Self { handle, plans: HashMap::new(), workspace: None, _stream: stream })
    }

    fn plan(&mut self, key: Key) -> Result<&Plan> {
        if !self.plans.contains_key(&key) {
            let plan = self.make_plan(key)?;
            self.plans.insert(key, plan);
        }
        Ok(&self.plans[&key])
    }

    fn make_plan(&self, key: Key) -> Result<Plan> {
        let x = tensor_desc(key.x)?;
        let y = tensor_desc(key.out())?;
        let bias = tensor_desc([1, key.w[0], 1, 1])?;
        let (mut w, mut conv) = (std::ptr::null_mut(), std::ptr::null_mut());
        let [k, c, r, s] = key.w.map(|v| v as i32);
        let (p, st) = (key.padding as i32, key.stride as i32);
        let mut perf = [unsafe { std::mem::zeroed::<sys::cudnnConvolutionFwdAlgoPerf_t>() }; 8];
        let mut found = 0;
        // SAFETY: descriptor calls on fresh descriptors; Find allocates its own buffers and
        // writes at most 8 results.
        unsafe {
            check(sys::cudnnCreateFilterDescriptor(&mut w), "create filter descriptor")?;
            check(
                sys::cudnnSetFilter4dDescriptor(
                    w,
                    sys::cudnnDataType_t::CUDNN_DATA_FLOAT,
                    sys::cudnnTensorFormat_t::CUDNN_TENSOR_NCHW,
                    k,
                    c,
                    r,
                    s,
                ),
                "set filter descriptor",
            )?;
            check(sys::cudnnCreateConvolutionDescriptor(&mut conv), "create convolution descriptor")?;
            check(
                sys::cudnnSetConvolution2dDescriptor(
                    conv,
                    p,
                    p,
                    st,
                    st,
                    1,
                    1,
                    sys::cudnnConvolutionMode_t::CUDNN_CROSS_CORRELATION,
                    sys::cudnnDataType_t::CUDNN_DATA_FLOAT,
                ),
                "set convolution descriptor",
            )?;
            let math = if tf32_allowed() {
                sys::cudnnMathType_t::CUDNN_DEFAULT_MATH
            } else {
                sys::cudnnMathType_t::CUDNN_FMA_MATH
            };
            check(sys::cudnnSetConvolutionMathType(conv, math), "set math type")?;
            check(
                sys::cudnnFindConvolutionForwardAlgorithm(
                    self.handle,
                    x,
                    w,
                    conv,
                    y,
                    perf.len() as i32,
                    &mut found,
                    perf.as_mut_ptr(),
                ),
                "find convolution algorithm",
            )?;
        }
        // Results come fastest first. Deterministic ones only: the same algorithm on the
        // same shape gives the same bits run to run (and decodes stay reproducible).
        let best = perf[..found.max(0) as usize]
            .iter()
            .find(|p| {
                p.status == sys::cudnnStatus_t::CUDNN_STATUS_SUCCESS
                    && p.determinism == sys::cudnnDeterminism_t::CUDNN_DETERMINISTIC
            })
            .ok_or_else(|| {
                candle_core::Error::Msg(format!("cuDNN: no deterministic f32 algorithm for convolution {key:?}"))
            })?;
        // SAFETY: as above; the math type the measured algorithm ran with.
        unsafe { check(sys::cudnnSetConvolutionMathType(conv, best.mathType), "set math type")? };
        let mut workspace = 0;
        // SAFETY: as above.
        unsafe {
            check(
                sys::cudnnGetConvolutionForwardWorkspaceSize(self.handle, x, w, conv, y, best.algo, &mut workspace),
                "workspace size",
            )?;
        }
        Ok(Plan { x, w, conv, y, bias, algo: best.algo, workspace })
    }
}

impl Drop for Context {
    fn drop(&mut self) {
        // SAFETY: each descriptor and the handle were created by this context, destroyed once.
        unsafe {
            for p in self.plans.values() {
                sys::cudnnDestroyTensorDescriptor(p.x);
                sys::cudnnDestroyTensorDescriptor(p.y);
                sys::cudnnDestroyTensorDescriptor(p.bias);
                sys::cudnnDestroyFilterDescriptor(p.w);
                sys::cudnnDestroyConvolutionDescriptor(p.conv);
            }
            sys::cudnnDestroy(self.handle);
        }
    }
}

thread_local! {
    /// cuDNN handles are not thread-safe: one context per thread and stream (device).
    static CONTEXTS: RefCell<HashMap<usize, Context>> = RefCell::new(HashMap::new());
}

/// `x [N, C, H, W]` ⊛ `w [K, C, R, S]` + `b [K]` on a CUDA device, symmetric zero padding,
/// equal strides, f32.
pub(crate) struct Conv2d {
    pub padding: usize,
    pub stride: usize,
}

fn dims4(l: &Layout, what: &str) -> Result<[usize; 4]> {
    match l.dims() {
        &[a, b, c, d] => Ok([a, b, c, d]),
        d => candle_core::bail!("cudnn conv2d: {what} must be 4-D, found shape {d:?}"),
    }
}

impl CustomOp3 for Conv2d {
    fn name(&self) -> &'static str {
        "conv2d-cudnn-planned"
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
        candle_core::bail!("conv2d-cudnn-planned runs on CUDA devices only")
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
        let key = Key { x: dims4(xl, "input")?, w: dims4(wl, "weight")?, padding: self.padding, stride: self.stride };
        let fits = |i: usize| key.x[i] + 2 * key.padding >= key.w[i];
        if key.x[1] != key.w[1] || bl.dims() != [key.w[0]] || key.stride == 0 || !fits(2) || !fits(3) {
            candle_core::bail!(
                "cudnn conv2d: input {:?}, weight {:?}, bias {:?}, padding {}, stride {} do not fit",
                key.x,
                key.w,
                bl.dims(),
                key.padding,
                key.stride
            );
        }
        let (x, w, b) = (
            contiguous_f32(xs, xl, "cudnn conv2d: input")?,
            contiguous_f32(ws, wl, "cudnn conv2d: weight")?,
            contiguous_f32(bs, bl, "cudnn conv2d: bias")?,
        );
        let dev = &xs.device;
        let stream = dev.cuda_stream();
        let out = key.out();
        // SAFETY: every element is written by the convolution before anything reads it.
        let mut y = unsafe { dev.alloc::<f32>(out.iter().product())? };
        CONTEXTS.with(|contexts| -> Result<()> {
            let mut contexts = contexts.borrow_mut();
            let cu_stream = stream.cu_stream() as usize;
            let ctx = match contexts.entry(cu_stream) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(e) => e.insert(Context::new(stream.clone())?),
            };
            let need = ctx.plan(key)?.workspace;
            if ctx.workspace.as_ref().is_none_or(|ws| ws.len() < need) {
                ctx.workspace = Some(stream.alloc_zeros::<u8>(need.max(1)).map_err(candle_core::Error::wrap)?);
            }
            let plan = &ctx.plans[&key];
            let workspace = ctx.workspace.as_mut().expect("allocated above");
            let (one, zero) = (1.0f32, 0.0f32);
            let (xp, _gx) = x.device_ptr(&stream);
            let (wp, _gw) = w.device_ptr(&stream);
            let (bp, _gb) = b.device_ptr(&stream);
            let (yp, _gy) = y.device_ptr_mut(&stream);
            let (wsp, _gws) = workspace.device_ptr_mut(&stream);
            // SAFETY: the pointers are live device buffers of the sizes the descriptors give
            // (shapes checked above), all used on the stream the handle is bound to; the
            // guards keep cudarc's stream bookkeeping until the calls are enqueued.
            unsafe {
                check(
                    sys::cudnnConvolutionForward(
                        ctx.handle,
                        (&one as *const f32).cast(),
                        plan.x,
                        xp as *const _,
                        plan.w,
                        wp as *const _,
                        plan.conv,
                        plan.algo,
                        wsp as *mut _,
                        plan.workspace,
                        (&zero as *const f32).cast(),
                        plan.y,
                        yp as *mut _,
                    ),
                    "convolution forward",
                )?;
                check(
                    sys::cudnnAddTensor(
                        ctx.handle,
                        (&one as *const f32).cast(),
                        plan.bias,
                        bp as *const _,
                        (&one as *const f32).cast(),
                        plan.y,
                        yp as *mut _,
                    ),
                    "add bias",
                )?;
            }
            Ok(())
        })?;
        Ok((CudaStorage::wrap_cuda_slice(y, dev.clone()), Shape::from(out.to_vec())))
    }
}
