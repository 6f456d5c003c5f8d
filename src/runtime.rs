//! Process-wide settings for programs that run the networks (the CLI, the benches). The
//! library never calls these itself: the allocator and the global thread pool belong to the
//! program.

/// Prepares the process for long runs of network forwards. Call it first thing in `main`,
/// before anything uses rayon:
///
/// - fixes `RAYON_NUM_THREADS` (default: the available cores) and builds rayon's global pool
///   with it: candle otherwise asks the OS for the CPU count on every parallel op;
/// - stops candle's elementwise worker threads from spinning between ops (unless
///   `CANDLE_BARRIER_POOL_SPIN_LIMIT` is set): candle 0.11 runs large elementwise ops on a pool
///   of its own whose idle workers spin 25,000 times before they sleep, on the cores where
///   rayon's threads are running the convolutions. With two threads that made a full-size
///   SongUNet forward ~300 instead of ~240 ms at batch 1 and ~3% slower at batch 8
///   (BENCHMARKS.md);
/// - keeps f32 convolutions and matrix products in full f32 on NVIDIA GPUs (sets
///   `NVIDIA_TF32_OVERRIDE=0` unless it is set): cuDNN's default math mode runs f32
///   convolutions in TF32 (10-bit mantissas) on Ampere and later, which moves the network's
///   outputs far beyond float noise, so tokens chosen on the GPU would stop decoding on the CPU
///   to the same image (SPEC 5 G4). Set it to 1 to trade that for speed;
/// - on glibc, keeps freed memory in the process for reuse. By default glibc maps every
///   allocation above 128 KiB–32 MiB afresh and unmaps it when freed, so each op's output
///   costs page faults and the kernel's zeroing of its pages again on every forward (~3% of
///   the CPU time of a full-size UNet forward at batch 8, BENCHMARKS.md).
pub fn prepare_process() {
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        let n = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        std::env::set_var("RAYON_NUM_THREADS", n.to_string());
    }
    if std::env::var_os("CANDLE_BARRIER_POOL_SPIN_LIMIT").is_none() {
        std::env::set_var("CANDLE_BARRIER_POOL_SPIN_LIMIT", "0");
    }
    if std::env::var_os("NVIDIA_TF32_OVERRIDE").is_none() {
        std::env::set_var("NVIDIA_TF32_OVERRIDE", "0");
    }
    // Worker stacks as large as a main thread's: `on_pool` runs whole programs on one. An
    // error means the pool already exists, which only costs the larger stack.
    let _ = rayon::ThreadPoolBuilder::new().stack_size(8 << 20).build_global();
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator thresholds; it is called before other threads
    // allocate (the pool's workers are idle).
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
    }
}

/// Runs `f` on a thread of rayon's global pool. Parallel ops inside `f` then start from a pool
/// thread; called from the main thread instead, each of the hundreds of ops of a forward
/// wakes a worker and puts the caller to sleep until it is done (with one thread, all the
/// work runs on that worker anyway).
pub fn on_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    rayon::scope(|_| f())
}
