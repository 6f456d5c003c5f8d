//! Where the pretrained metric networks' weight files are looked up.
//!
//! The real weights cannot be bundled or downloaded by this crate. [`find`] looks for a file
//! in, in order: an explicit path given by the caller (a file, or a folder holding the file),
//! `$GDDCM_HOME/weights/`, and the torch hub cache (`$TORCH_HOME/hub/checkpoints/`, default
//! `~/.cache/torch/hub/checkpoints/`). When the file is absent it returns
//! [`MetricsError::MissingWeights`], whose message names the file and says where to get it, so
//! that a caller can skip that metric and still compute the others.

use super::{MetricsError, Result};
use std::fmt;
use std::path::{Path, PathBuf};

/// A pretrained weight file used by a metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WeightId {
    /// pytorch-fid's FID Inception-v3, `pt_inception-2015-12-05-6726825d.pth`.
    FidInception,
    /// torchvision AlexNet, `alexnet-owt-7be5be79.pth` (LPIPS alex trunk).
    AlexNet,
    /// torchvision VGG16, `vgg16-397923af.pth` (LPIPS vgg trunk).
    Vgg16,
    /// The lpips package's linear heads for AlexNet, `lpips/weights/v0.1/alex.pth`.
    LpipsLinAlex,
    /// The lpips package's linear heads for VGG16, `lpips/weights/v0.1/vgg.pth`.
    LpipsLinVgg,
}

impl WeightId {
    /// Every known weight file.
    pub const ALL: [WeightId; 5] =
        [WeightId::FidInception, WeightId::AlexNet, WeightId::Vgg16, WeightId::LpipsLinAlex, WeightId::LpipsLinVgg];

    /// The canonical file name looked up in the weight folders.
    pub fn file_name(self) -> &'static str {
        match self {
            WeightId::FidInception => "pt_inception-2015-12-05-6726825d.pth",
            WeightId::AlexNet => "alexnet-owt-7be5be79.pth",
            WeightId::Vgg16 => "vgg16-397923af.pth",
            WeightId::LpipsLinAlex => "lpips_v0.1_alex.pth",
            WeightId::LpipsLinVgg => "lpips_v0.1_vgg.pth",
        }
    }

    /// Other names (relative paths) accepted inside a weight folder: the lpips wheel's own
    /// layout, and safetensors conversions (`<stem>.safetensors`) of every file.
    fn alt_names(self) -> &'static [&'static str] {
        match self {
            WeightId::FidInception => &["pt_inception-2015-12-05-6726825d.safetensors"],
            WeightId::AlexNet => &["alexnet-owt-7be5be79.safetensors"],
            WeightId::Vgg16 => &["vgg16-397923af.safetensors"],
            WeightId::LpipsLinAlex => &["lpips/weights/v0.1/alex.pth", "v0.1/alex.pth", "lpips_v0.1_alex.safetensors"],
            WeightId::LpipsLinVgg => &["lpips/weights/v0.1/vgg.pth", "v0.1/vgg.pth", "lpips_v0.1_vgg.safetensors"],
        }
    }

    /// What the file is for.
    pub fn description(self) -> &'static str {
        match self {
            WeightId::FidInception => "FID / Inception Score Inception-v3 (pytorch-fid)",
            WeightId::AlexNet => "LPIPS AlexNet trunk (torchvision)",
            WeightId::Vgg16 => "LPIPS VGG16 trunk (torchvision)",
            WeightId::LpipsLinAlex => "LPIPS v0.1 linear heads for AlexNet (lpips package)",
            WeightId::LpipsLinVgg => "LPIPS v0.1 linear heads for VGG16 (lpips package)",
        }
    }

    /// Where users get the file.
    pub fn source(self) -> &'static str {
        match self {
            WeightId::FidInception => "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth",
            WeightId::AlexNet => "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
            WeightId::Vgg16 => "https://download.pytorch.org/models/vgg16-397923af.pth",
            WeightId::LpipsLinAlex => "the `lpips` PyPI wheel (pip download lpips==0.1.4), file lpips/weights/v0.1/alex.pth inside it; save it as lpips_v0.1_alex.pth",
            WeightId::LpipsLinVgg => "the `lpips` PyPI wheel (pip download lpips==0.1.4), file lpips/weights/v0.1/vgg.pth inside it; save it as lpips_v0.1_vgg.pth",
        }
    }

    /// Parses a short name: `inception`, `alexnet`, `vgg16`, `lpips-alex`, `lpips-vgg`, or a
    /// canonical file name.
    pub fn from_name(name: &str) -> Option<Self> {
        let n = name.to_ascii_lowercase();
        Self::ALL.into_iter().find(|id| id.file_name() == n).or(match n.as_str() {
            "inception" | "fid-inception" | "fid_inception" | "pt_inception" => Some(WeightId::FidInception),
            "alex" | "alexnet" => Some(WeightId::AlexNet),
            "vgg" | "vgg16" => Some(WeightId::Vgg16),
            "lpips-alex" | "lpips_alex" => Some(WeightId::LpipsLinAlex),
            "lpips-vgg" | "lpips_vgg" => Some(WeightId::LpipsLinVgg),
            _ => None,
        })
    }
}

/// The error payload when a weight file is not found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingWeights {
    /// Which file.
    pub id: WeightId,
    /// Every path that was tried.
    pub searched: Vec<PathBuf>,
}

impl fmt::Display for MissingWeights {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "missing weight file `{}` ({}). Get it from {} and put it in $GDDCM_HOME/weights/ \
             or ~/.cache/torch/hub/checkpoints/, or pass its path explicitly. Looked in: ",
            self.id.file_name(),
            self.id.description(),
            self.id.source()
        )?;
        if self.searched.is_empty() {
            write!(f, "(nowhere: no explicit path, GDDCM_HOME or home folder)")?;
        }
        for (i, p) in self.searched.iter().enumerate() {
            if i > 0 {
                write!(f, ", ")?;
            }
            write!(f, "{}", p.display())?;
        }
        Ok(())
    }
}

/// Folders searched by [`find`], from the environment: `$GDDCM_HOME/weights` and the torch hub
/// cache (`$TORCH_HOME/hub/checkpoints` or `$XDG_CACHE_HOME/torch/hub/checkpoints` or
/// `$HOME/.cache/torch/hub/checkpoints`).
pub fn default_dirs() -> Vec<PathBuf> {
    let env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    let mut dirs = Vec::new();
    if let Some(h) = env("GDDCM_HOME") {
        dirs.push(h.join("weights"));
    }
    if let Some(t) = env("TORCH_HOME") {
        dirs.push(t.join("hub").join("checkpoints"));
    } else if let Some(x) = env("XDG_CACHE_HOME") {
        dirs.push(x.join("torch").join("hub").join("checkpoints"));
    } else if let Some(home) = env("HOME") {
        dirs.push(home.join(".cache").join("torch").join("hub").join("checkpoints"));
    }
    dirs
}

/// Finds the file for `id`: `explicit` first (a file is used as is; a folder is searched),
/// then [`default_dirs`]. Returns [`MetricsError::MissingWeights`] if nothing is found.
pub fn find(id: WeightId, explicit: Option<&Path>) -> Result<PathBuf> {
    find_in(id, explicit, &default_dirs())
}

/// Like [`find`] with an explicit list of folders instead of the environment.
pub fn find_in(id: WeightId, explicit: Option<&Path>, dirs: &[PathBuf]) -> Result<PathBuf> {
    let mut searched = Vec::new();
    let mut folders: Vec<PathBuf> = Vec::new();
    if let Some(p) = explicit {
        if p.is_file() {
            return Ok(p.to_path_buf());
        }
        if p.is_dir() {
            folders.push(p.to_path_buf());
        } else {
            searched.push(p.to_path_buf());
        }
    }
    folders.extend(dirs.iter().cloned());
    for d in folders {
        for name in std::iter::once(id.file_name()).chain(id.alt_names().iter().copied()) {
            let p = d.join(name);
            if p.is_file() {
                return Ok(p);
            }
            searched.push(p);
        }
    }
    Err(MetricsError::MissingWeights(MissingWeights { id, searched }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_file_message_names_file_and_url() {
        let dir = tempfile::tempdir().unwrap();
        let err = find_in(WeightId::FidInception, None, &[dir.path().to_path_buf()]).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("pt_inception-2015-12-05-6726825d.pth"), "{msg}");
        assert!(msg.contains("https://github.com/mseitzer/pytorch-fid/releases"), "{msg}");
        assert!(msg.contains(&dir.path().display().to_string()), "{msg}");
        assert!(matches!(err, MetricsError::MissingWeights(_)));
    }

    #[test]
    fn finds_files_in_folders_and_explicit_paths() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("lpips/weights/v0.1");
        std::fs::create_dir_all(&sub).unwrap();
        std::fs::write(sub.join("alex.pth"), b"x").unwrap();
        let found = find_in(WeightId::LpipsLinAlex, Some(dir.path()), &[]).unwrap();
        assert_eq!(found, sub.join("alex.pth"));
        let f = dir.path().join("anything.pth");
        std::fs::write(&f, b"x").unwrap();
        assert_eq!(find_in(WeightId::Vgg16, Some(&f), &[]).unwrap(), f);
        assert_eq!(WeightId::from_name("vgg16"), Some(WeightId::Vgg16));
        assert_eq!(WeightId::from_name("alexnet-owt-7be5be79.pth"), Some(WeightId::AlexNet));
    }
}
