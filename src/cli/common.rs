//! Helpers shared by the subcommands: device, progress bar, model loading, file names.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
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
        ProgressStyle::with_template(
            "{msg} [{elapsed_precise}] {wide_bar} {pos}/{len} network evaluations (eta {eta})",
        )
        .unwrap(),
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

/// An error and its causes on one line, each cause once: a library error that repeats its
/// source in its own text (`No such file or directory (os error 2)` twice) is said once.
pub fn error_message(e: &anyhow::Error) -> String {
    let mut msg = String::new();
    for cause in e.chain() {
        let c = cause.to_string();
        if msg.contains(&c) {
            continue;
        }
        if !msg.is_empty() {
            msg.push_str(": ");
        }
        msg.push_str(&c);
    }
    msg
}

/// Text that may hold strings from a file (a model name in a token file) with every control
/// character but the line break, and the bidirectional overrides, written as `\u{..}` escapes:
/// a file must not be able to drive the terminal.
pub fn escape_untrusted(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        let bidi = matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
        if (c.is_control() && c != '\n') || bidi {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    out
}

/// The files a run is about to write, checked before any work: two inputs that would write one
/// output (same file name in different folders), and outputs that exist already (kept unless
/// `force`).
pub fn check_outputs(outputs: &[(PathBuf, &Path)], force: bool) -> Result<()> {
    let mut seen: HashMap<&Path, &Path> = HashMap::new();
    for (out, input) in outputs {
        if let Some(first) = seen.insert(out.as_path(), input) {
            bail!(
                "{} and {} would both be written to {} (same file name); give them different names or \
                 use separate output folders",
                first.display(),
                input.display(),
                out.display()
            );
        }
    }
    if !force {
        if let Some((out, _)) = outputs.iter().find(|(o, _)| o.exists()) {
            bail!("{} already exists; use --force to overwrite it", out.display());
        }
    }
    Ok(())
}

/// Checks before the work that a file can be written at `path`: its folder exists or can be
/// made, takes files, and `path` is not a folder. The folder is kept.
pub fn check_output_file(path: &Path) -> Result<()> {
    ensure!(!path.is_dir(), "{} is a folder; give a file name", path.display());
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    OutputDir::prepare(dir)?.keep();
    Ok(())
}

/// An output folder made ready before the work: created if missing and probed for writing.
/// Unless [`OutputDir::keep`] is called, the folders it created are removed again on drop when
/// they are still empty, so a failed run leaves no empty folder behind.
pub struct OutputDir {
    created: Vec<PathBuf>,
    keep: bool,
}

impl OutputDir {
    pub fn prepare(path: &Path) -> Result<Self> {
        let mut created = Vec::new();
        let mut p = Some(path);
        while let Some(d) = p.filter(|d| !d.as_os_str().is_empty() && !d.exists()) {
            created.push(d.to_path_buf());
            p = d.parent();
        }
        let dir = OutputDir { created, keep: false };
        std::fs::create_dir_all(path).with_context(|| format!("cannot create output folder {}", path.display()))?;
        ensure!(path.is_dir(), "output folder {} is not a folder", path.display());
        tempfile::Builder::new()
            .prefix(".gddcm-probe")
            .tempfile_in(path)
            .with_context(|| format!("cannot write in output folder {}", path.display()))?;
        Ok(dir)
    }

    /// The run succeeded: keep the folder.
    pub fn keep(mut self) {
        self.keep = true;
    }
}

impl Drop for OutputDir {
    fn drop(&mut self) {
        if !self.keep {
            for d in &self.created {
                let _ = std::fs::remove_dir(d); // only empty folders go
            }
        }
    }
}
