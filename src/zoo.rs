//! Named models: the bundled Fashion-MNIST models and the paper's published checkpoints,
//! where their files are, and how each becomes a [`Denoiser`].
//!
//! Weights are looked up, in order, at an explicit `--weights PATH`, in `$GDDCM_HOME/<name>/`,
//! in the repository's `models/` folder (bundled models), and in the Hugging Face cache
//! (`$HF_HOME/hub` or `~/.cache/huggingface/hub`). A missing file is an error that says what
//! to download and where to put it.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::Device;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::family::{Denoiser, Family, Network, Precond, PrecondDenoiser, RegressionDenoiser};
use crate::marginal::{DdpmSchedule, Marginal};
use crate::nn::{RfWeights, SongUNet, UNet2DModel};

/// How a model's weights are stored and which architecture reads them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum WeightsKind {
    /// A diffusers folder: `config.json` + `diffusion_pytorch_model.{safetensors,bin}` for a
    /// `UNet2DModel` (the bundled models, google/ddpm-*, the diffusers CM ports).
    DiffusersUNet2D,
    /// An NVlabs EDM pickle exported by `tools/export_edm.py`: `<stem>.json` (SongUNet
    /// arguments) + `<stem>.safetensors` (keys `model.*`).
    EdmExport,
    /// A gnobitab/RectifiedFlow `checkpoint_*.pth` (EMA weights by parameter order) with the
    /// config `configs/<name>.json` shipped in this repository.
    RectifiedFlowCheckpoint,
    /// An openai/consistency_models_cifar10 flax msgpack checkpoint (`params_ema`) with the
    /// config `configs/<name>.json` shipped in this repository.
    ConsistencyFlax,
}

/// How the network's output becomes `(x0_hat, eps_hat)`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub enum Parameterization {
    /// ε-prediction on the linear DDPM schedule (T = 1000), with the \[D\] x0 clipping.
    DdpmEpsilon,
    /// A preconditioned denoiser on the `s = 1, σ = t` schedule (EDM, VP, VE, consistency).
    Preconditioned(Precond),
    /// Rectified-flow velocity, called with `999·t_rf`.
    Velocity,
}

/// One entry of the model zoo.
#[derive(Debug, Clone, Serialize)]
pub struct ModelEntry {
    /// The name used with `--model`.
    pub name: &'static str,
    pub family: Family,
    pub description: &'static str,
    pub weights: WeightsKind,
    pub parameterization: Parameterization,
    /// Channels and the network's input size.
    pub channels: usize,
    pub size: usize,
    /// Background padding added around input images (and cropped after decoding).
    pub pad: usize,
    /// Folder name under the repository's `models/` if bundled.
    pub bundled_dir: Option<&'static str>,
    /// Hugging Face repository whose cache holds the files, if any.
    pub hf_repo: Option<&'static str>,
    /// The files the loader needs, relative to the model folder.
    pub files: &'static [&'static str],
    /// Where a user gets the weights.
    pub download: &'static str,
}

/// All known models; the first is the default.
pub fn entries() -> Vec<ModelEntry> {
    let bundled = |name, family, dir, parameterization, description| ModelEntry {
        name,
        family,
        description,
        weights: WeightsKind::DiffusersUNet2D,
        parameterization,
        channels: 1,
        size: 32,
        pad: 2,
        bundled_dir: Some(dir),
        hf_repo: None,
        files: &["config.json", "diffusion_pytorch_model.safetensors"],
        download: "bundled with gddcm in models/ (train again with tools/train/train.py)",
    };
    vec![
        bundled("fmnist-edm", Family::Edm, "edm", Parameterization::Preconditioned(Precond::EDM), "EDM model trained on Fashion-MNIST by this project (bundled)"),
        bundled("fmnist-ddpm", Family::Ddpm, "ddpm", Parameterization::DdpmEpsilon, "DDPM (ε, linear β, T=1000) trained on Fashion-MNIST by this project (bundled)"),
        bundled("fmnist-cm", Family::Cm, "cm", Parameterization::Preconditioned(Precond::CM_CIFAR10), "consistency model distilled from fmnist-edm by this project (bundled)"),
        bundled("fmnist-rf", Family::Rf, "rf", Parameterization::Velocity, "2-rectified flow trained on Fashion-MNIST by this project (bundled)"),
        ModelEntry {
            name: "ddpm-cifar10",
            family: Family::Ddpm,
            description: "google/ddpm-cifar10-32 (Ho et al. 2020), 35.7M parameters",
            weights: WeightsKind::DiffusersUNet2D,
            parameterization: Parameterization::DdpmEpsilon,
            channels: 3,
            size: 32,
            pad: 0,
            bundled_dir: None,
            hf_repo: Some("google/ddpm-cifar10-32"),
            files: &["config.json", "diffusion_pytorch_model.safetensors"],
            download: "https://huggingface.co/google/ddpm-cifar10-32 (config.json and diffusion_pytorch_model.safetensors or .bin)",
        },
        songunet(
            "edm-cifar10-vp",
            Family::Edm,
            "NVlabs EDM CIFAR-10 unconditional VP (DDPM++), 55.7M parameters",
            WeightsKind::EdmExport,
            Parameterization::Preconditioned(Precond::VP),
            &["edm-cifar10-32x32-uncond-vp.json", "edm-cifar10-32x32-uncond-vp.safetensors"],
            "https://nvlabs-fi-cdn.nvidia.com/edm/pretrained/edm-cifar10-32x32-uncond-vp.pkl, then run tools/export_edm.py on it (with the NVlabs/edm repository on PYTHONPATH)",
        ),
        songunet(
            "edm-cifar10-ve",
            Family::Edm,
            "NVlabs EDM CIFAR-10 unconditional VE (NCSN++), 56.4M parameters",
            WeightsKind::EdmExport,
            Parameterization::Preconditioned(Precond::Ve),
            &["edm-cifar10-32x32-uncond-ve.json", "edm-cifar10-32x32-uncond-ve.safetensors"],
            "https://nvlabs-fi-cdn.nvidia.com/edm/pretrained/edm-cifar10-32x32-uncond-ve.pkl, then run tools/export_edm.py on it (with the NVlabs/edm repository on PYTHONPATH)",
        ),
        songunet(
            "cm-cifar10-cd",
            Family::Cm,
            "OpenAI consistency model, CIFAR-10, consistency distillation (LPIPS), NCSN++ (flax), 56.4M parameters",
            WeightsKind::ConsistencyFlax,
            Parameterization::Preconditioned(Precond::CM_CIFAR10),
            &["checkpoint"],
            "the CD-LPIPS CIFAR-10 checkpoint listed in the README of https://github.com/openai/consistency_models_cifar10 (a flax msgpack file; save it as `checkpoint`)",
        ),
        songunet(
            "rf-cifar10",
            Family::Rf,
            "RectifiedFlow CIFAR-10 (gnobitab/RectifiedFlow), DDPM++ NCSNpp, 61.8M parameters",
            WeightsKind::RectifiedFlowCheckpoint,
            Parameterization::Velocity,
            &["checkpoint.pth"],
            "the CIFAR-10 rectified-flow checkpoint linked from https://github.com/gnobitab/RectifiedFlow (ImageGeneration README; a `checkpoint_*.pth`, save it as `checkpoint.pth`)",
        ),
        ModelEntry {
            name: "ddpm-bedroom-256",
            family: Family::Ddpm,
            description: "google/ddpm-ema-bedroom-256 (LSUN bedroom), diffusers UNet2DModel",
            weights: WeightsKind::DiffusersUNet2D,
            parameterization: Parameterization::DdpmEpsilon,
            channels: 3,
            size: 256,
            pad: 0,
            bundled_dir: None,
            hf_repo: Some("google/ddpm-ema-bedroom-256"),
            files: &["config.json", "diffusion_pytorch_model.safetensors"],
            download: "https://huggingface.co/google/ddpm-ema-bedroom-256 (the unet/ or root config.json and weights)",
        },
        ModelEntry {
            name: "cm-bedroom-256-lpips",
            family: Family::Cm,
            description: "openai/diffusers-cd_bedroom256_lpips: consistency distillation on LSUN bedroom, diffusers UNet2DModel port",
            weights: WeightsKind::DiffusersUNet2D,
            parameterization: Parameterization::Preconditioned(Precond::Consistency {
                sigma_data: 0.5,
                sigma_min: 0.002,
                noise_label: crate::family::CmNoiseLabel::Log250,
            }),
            channels: 3,
            size: 256,
            pad: 0,
            bundled_dir: None,
            hf_repo: Some("openai/diffusers-cd_bedroom256_lpips"),
            files: &["unet/config.json", "unet/diffusion_pytorch_model.safetensors"],
            download: "https://huggingface.co/openai/diffusers-cd_bedroom256_lpips (unet/config.json and unet/diffusion_pytorch_model.safetensors)",
        },
    ]
}

/// A CIFAR-10 SongUNet-family checkpoint (3×32×32, no padding).
fn songunet(
    name: &'static str,
    family: Family,
    description: &'static str,
    weights: WeightsKind,
    parameterization: Parameterization,
    files: &'static [&'static str],
    download: &'static str,
) -> ModelEntry {
    ModelEntry {
        name,
        family,
        description,
        weights,
        parameterization,
        channels: 3,
        size: 32,
        pad: 0,
        bundled_dir: None,
        hf_repo: None,
        files,
        download,
    }
}

/// The repository's `configs/<name>.json` (architecture configs of checkpoints that ship none).
fn shipped_config(name: &str) -> Result<PathBuf> {
    let rel = format!("configs/{name}.json");
    [PathBuf::from(&rel), Path::new(env!("CARGO_MANIFEST_DIR")).join(&rel)]
        .into_iter()
        .find(|p| p.is_file())
        .with_context(|| format!("the architecture config {rel} of model '{name}' is missing from this installation"))
}

/// The model used when no `--model` is given.
pub fn default_model() -> &'static str {
    "fmnist-edm"
}

/// Looks a model up by name.
pub fn entry(name: &str) -> Result<ModelEntry> {
    entries().into_iter().find(|e| e.name == name).with_context(|| {
        let names: Vec<&str> = entries().iter().map(|e| e.name).collect();
        format!("unknown model '{name}'; known models: {}", names.join(", "))
    })
}

/// `$GDDCM_HOME`, else `~/.gddcm`.
pub fn gddcm_home() -> Option<PathBuf> {
    std::env::var_os("GDDCM_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".gddcm")))
}

/// The repository's `models/` folder: beside the working directory, or where this crate was
/// built from.
fn bundled_roots() -> Vec<PathBuf> {
    vec![PathBuf::from("models"), Path::new(env!("CARGO_MANIFEST_DIR")).join("models")]
}

fn hf_snapshots(repo: &str) -> Vec<PathBuf> {
    let hub = std::env::var_os("HF_HOME")
        .map(|h| Path::new(&h).join("hub"))
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache/huggingface/hub")));
    let Some(hub) = hub else { return vec![] };
    let dir = hub.join(format!("models--{}", repo.replace('/', "--"))).join("snapshots");
    std::fs::read_dir(dir).map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect()).unwrap_or_default()
}

impl ModelEntry {
    /// Folders where this model's files may be, in search order.
    pub fn candidate_dirs(&self, weights: Option<&Path>) -> Vec<PathBuf> {
        let mut dirs = Vec::new();
        if let Some(w) = weights {
            dirs.push(if w.is_file() { w.parent().unwrap_or(Path::new(".")).to_path_buf() } else { w.to_path_buf() });
        }
        if let Some(home) = gddcm_home() {
            dirs.push(home.join(self.name));
        }
        if let Some(dir) = self.bundled_dir {
            dirs.extend(bundled_roots().into_iter().map(|r| r.join(dir)));
        }
        if let Some(repo) = self.hf_repo {
            dirs.extend(hf_snapshots(repo));
        }
        dirs
    }

    /// The folder holding all of this model's files, or an error saying where to get them.
    pub fn locate(&self, weights: Option<&Path>) -> Result<PathBuf> {
        let dirs = self.candidate_dirs(weights);
        for dir in &dirs {
            if self.files.iter().all(|f| dir.join(f).is_file() || alt_bin(&dir.join(f)).is_some_and(|p| p.is_file())) {
                return Ok(dir.clone());
            }
        }
        let looked: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
        bail!(
            "the weights of model '{}' were not found.\n  needs: {}\n  get them from: {}\n  put them in: $GDDCM_HOME/{} (GDDCM_HOME defaults to ~/.gddcm), or pass --weights FOLDER\n  looked in: {}",
            self.name,
            self.files.join(", "),
            self.download,
            self.name,
            if looked.is_empty() { "(nowhere)".to_string() } else { looked.join(", ") }
        )
    }

    /// Whether the weights are present.
    pub fn available(&self, weights: Option<&Path>) -> bool {
        self.locate(weights).is_ok()
    }

    /// The file whose SHA-256 identifies the model (token files name it), in a folder found by
    /// [`ModelEntry::locate`].
    pub fn weights_file(&self, dir: &Path) -> PathBuf {
        match self.weights {
            WeightsKind::DiffusersUNet2D => {
                let w = dir.join(self.files[1]);
                if w.is_file() {
                    w
                } else {
                    alt_bin(&w).unwrap_or(w)
                }
            }
            WeightsKind::EdmExport => dir.join(self.files[1]),
            WeightsKind::RectifiedFlowCheckpoint | WeightsKind::ConsistencyFlax => dir.join(self.files[0]),
        }
    }

    /// The image side the model takes as is: its input size less the background padding
    /// (28 for the bundled Fashion-MNIST models, 32 for the CIFAR-10 checkpoints).
    pub fn native_side(&self) -> usize {
        self.size - 2 * self.pad
    }

    /// The marginal `s(t), Σ(t)` of the model's denoiser (SPEC 1), known without loading it.
    pub fn marginal(&self) -> Marginal {
        match self.parameterization {
            Parameterization::DdpmEpsilon => Marginal::Ddpm(DdpmSchedule::cifar10()),
            Parameterization::Preconditioned(_) => Marginal::Edm,
            Parameterization::Velocity => Marginal::RectifiedFlow,
        }
    }
}

/// `diffusion_pytorch_model.safetensors` may be shipped as `.bin` instead.
fn alt_bin(path: &Path) -> Option<PathBuf> {
    (path.extension()? == "safetensors").then(|| path.with_extension("bin"))
}

/// A model ready to tokenize with.
pub struct LoadedModel {
    pub entry: ModelEntry,
    pub denoiser: Box<dyn Denoiser>,
    /// SHA-256 of the weights file: token files name it, decoders check it.
    pub weights_sha256: [u8; 32],
    pub dir: PathBuf,
}

impl LoadedModel {
    /// The tuned settings shipped with the model (`profile.json` beside its weights, written
    /// by `gddcm search`), if any.
    pub fn profile(&self) -> Result<Option<crate::profile::Settings>> {
        let path = self.dir.join("profile.json");
        if path.is_file() {
            Ok(Some(crate::profile::Settings::load(&path)?))
        } else {
            Ok(None)
        }
    }

    /// The network input shape `[C, H, W]`.
    pub fn shape(&self) -> (usize, usize, usize) {
        (self.entry.channels, self.entry.size, self.entry.size)
    }
}

/// SHA-256 of a file, streamed.
pub fn sha256_file(path: &Path) -> Result<[u8; 32]> {
    let mut f = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(h.finalize().into())
}

/// Loads a model by name (weights from `weights` or the search path), building its network on
/// `device`.
pub fn load(name: &str, weights: Option<&Path>, device: &Device) -> Result<LoadedModel> {
    let entry = entry(name)?;
    let dir = entry.locate(weights)?;
    let (net, weights_file): (Box<dyn Network>, PathBuf) = match entry.weights {
        WeightsKind::DiffusersUNet2D => {
            let cfg_path = dir.join(entry.files[0]);
            let wpath = entry.weights_file(&dir);
            let cfg = crate::nn::unet2d::UNet2DConfig::from_file(&cfg_path)?;
            let model = UNet2DModel::load_files(&cfg, &wpath, device)?;
            (Box::new(model), wpath)
        }
        WeightsKind::EdmExport => {
            let (cfg, w) = (dir.join(entry.files[0]), dir.join(entry.files[1]));
            (Box::new(SongUNet::load_edm(&cfg, &w, device)?), w)
        }
        WeightsKind::RectifiedFlowCheckpoint => {
            let w = dir.join(entry.files[0]);
            (Box::new(SongUNet::load_rf(shipped_config(entry.name)?, &w, RfWeights::Ema, device)?), w)
        }
        WeightsKind::ConsistencyFlax => {
            let w = dir.join(entry.files[0]);
            (Box::new(SongUNet::load_cm(shipped_config(entry.name)?, &w, device)?), w)
        }
    };
    let denoiser: Box<dyn Denoiser> = match entry.parameterization {
        Parameterization::DdpmEpsilon => Box::new(RegressionDenoiser::ddpm(net, entry.marginal(), true)),
        Parameterization::Preconditioned(precond) => {
            Box::new(PrecondDenoiser { net, precond, marginal: entry.marginal() })
        }
        Parameterization::Velocity => Box::new(RegressionDenoiser::rectified_flow(net)),
    };
    let weights_sha256 = sha256_file(&weights_file)?;
    Ok(LoadedModel { entry, denoiser, weights_sha256, dir })
}
