//! Helpers shared by the subcommands: device, progress bar, model loading, file names.

use std::path::Path;

use anyhow::{bail, Context, Result};
use candle_core::Device;
use indicatif::{ProgressBar, ProgressStyle};

use gddcm::data::{write_atomic, Image};
use gddcm::metrics::image::ImageU8;
use gddcm::zoo::{self, LoadedModel};

use super::args::{ModelArgs, RunArgs};

/// The compute device named by `--device`. The CUDA device is made once per process: each
/// `Device::new_cuda` is a distinct device to candle (own id, kernel cache, cuBLAS handle), so
/// a model loaded on one and its inputs made on another would not share resident tensors.
pub fn device(name: &str) -> Result<Device> {
    static CUDA: std::sync::OnceLock<Device> = std::sync::OnceLock::new();
    match name {
        "cpu" => Ok(Device::Cpu),
        "cuda" => {
            if let Some(d) = CUDA.get() {
                return Ok(d.clone());
            }
            let d = Device::new_cuda(0)
                .context("no CUDA device (build with --features cuda on a machine with an NVIDIA GPU)")?;
            Ok(CUDA.get_or_init(|| d).clone())
        }
        other => bail!("unknown device '{other}' (cpu or cuda)"),
    }
}

pub fn progress(run: &RunArgs, total: u64, what: &str) -> Option<ProgressBar> {
    if run.quiet {
        return None;
    }
    let pb = ProgressBar::new(total);
    pb.set_style(
        ProgressStyle::with_template("{msg} [{elapsed_precise}] {wide_bar} {pos}/{len} NFE (eta {eta})").unwrap(),
    );
    pb.set_message(what.to_string());
    Some(pb)
}

pub fn load_model(args: &ModelArgs, run: &RunArgs) -> Result<LoadedModel> {
    zoo::load(args.model.as_deref().unwrap_or(zoo::default_model()), args.weights.as_deref(), &device(&run.device)?)
}

pub fn stem(path: &Path) -> String {
    path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "image".into())
}

/// Groups indices of same-sized items into batches of at most `batch`, keeping order.
pub fn batches<T>(items: &[T], key: impl Fn(&T) -> (u32, u32), batch: usize) -> Vec<Vec<usize>> {
    let mut groups: Vec<((u32, u32), Vec<usize>)> = Vec::new();
    for (i, it) in items.iter().enumerate() {
        let k = key(it);
        match groups.iter_mut().find(|(gk, g)| *gk == k && g.len() < batch.max(1)) {
            Some((_, g)) => g.push(i),
            None => groups.push((k, vec![i])),
        }
    }
    groups.into_iter().map(|(_, g)| g).collect()
}

pub fn hex_prefix(h: &[u8; 32]) -> String {
    h[..6].iter().map(|b| format!("{b:02x}")).collect()
}

pub fn to_metric(img: &Image) -> Result<ImageU8> {
    Ok(ImageU8::from_chw(img.channels, img.height, img.width, img.data.clone())?)
}

pub fn write_json(path: &Path, value: &serde_json::Value) -> Result<()> {
    write_atomic(path, serde_json::to_string_pretty(value)?.as_bytes())
}
