//! Named models: the bundled Fashion-MNIST models and the paper's published checkpoints,
//! where their files are, and how each becomes a [`Denoiser`].
//!
//! Where a model's files are found, first match wins ([`ModelEntry::find`]):
//!
//! 1. `--weights PATH` (a folder, or a file in it): only there. A path that does not exist or
//!    lacks the model's files is an error naming it; nothing else is tried.
//! 2. The copy embedded in the binary: the default model `fmnist-edm` (config, weights and
//!    profile, ~4 MB), so an installed `gddcm` works with no files beside it.
//! 3. Other bundled models: the `models/` folder of the source tree this binary was built from
//!    (skipped when `GDDCM_NO_SOURCE_TREE` is set, as if the clone had moved), then
//!    `$GDDCM_HOME/<name>/`.
//! 4. Published checkpoints: `$GDDCM_HOME/<name>/` (`GDDCM_HOME` defaults to `~/.gddcm`), then
//!    the Hugging Face cache (`$HF_HOME/hub` or `~/.cache/huggingface/hub`).
//!
//! So a stale `~/.gddcm/<name>` never shadows a bundled model; to run other weights under a
//! bundled model's name, pass `--weights`. A missing file is an error that says what to
//! download, where to put it, and every place searched.

use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use candle_core::Device;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::family::{Denoiser, Family, Network, Precond, PrecondDenoiser, RegressionDenoiser};
use crate::marginal::{DdpmSchedule, Marginal};
use crate::nn::{RfWeights, SongUNet, UNet2DModel};
use crate::reference::{RefImage, X_REF_FILE};

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
    let bundled = |name, family, dir, parameterization, description| {
        ModelEntry {
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
        download: "the models/ folder of the gddcm source tree: copy its model folder (edm, ddpm, cm or rf) to $GDDCM_HOME/<model name>, or train again with tools/train/train.py",
    }
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

/// The `models/` folder of the source tree this binary was built from, unless
/// `GDDCM_NO_SOURCE_TREE` is set (which makes a binary behave as if installed and the clone
/// moved away).
fn source_models() -> Option<PathBuf> {
    std::env::var_os("GDDCM_NO_SOURCE_TREE").is_none().then(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("models"))
}

/// A model compiled into the binary.
pub struct EmbeddedModel {
    /// The diffusers `config.json`.
    pub config: &'static str,
    /// `diffusion_pytorch_model.safetensors`.
    pub weights: &'static [u8],
    /// The shipped `profile.json`.
    pub profile: &'static str,
    /// The shipped operating points (`operating_points.json`, see [`crate::ladder`]).
    pub operating_points: &'static str,
    /// The training-set mean reference image ([`X_REF_FILE`], SPEC 7), so that the binary alone
    /// decodes files that start from it.
    pub x_ref: Option<&'static [u8]>,
}

impl EmbeddedModel {
    /// SHA-256 of the embedded weights (computed once).
    pub fn weights_sha256(&self) -> [u8; 32] {
        static SHA: std::sync::OnceLock<[u8; 32]> = std::sync::OnceLock::new();
        *SHA.get_or_init(|| Sha256::digest(self.weights).into())
    }
}

/// The default model, embedded so that an installed binary needs no files beside it.
static EMBEDDED_EDM: EmbeddedModel = EmbeddedModel {
    config: include_str!("../models/edm/config.json"),
    weights: include_bytes!("../models/edm/diffusion_pytorch_model.safetensors"),
    profile: include_str!("../models/edm/profile.json"),
    operating_points: include_str!("../models/edm/operating_points.json"),
    x_ref: Some(include_bytes!("../models/edm/x_ref.safetensors")),
};

/// Where a model's files were found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// Compiled into this binary.
    Embedded,
    /// A folder holding the model's files.
    Folder(PathBuf),
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Embedded => f.write_str("the copy embedded in this gddcm binary"),
            Source::Folder(p) => write!(f, "{}", p.display()),
        }
    }
}

impl Serialize for Source {
    /// `"embedded"` or the folder.
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            Source::Embedded => s.serialize_str("embedded"),
            Source::Folder(p) => s.serialize_str(&p.display().to_string()),
        }
    }
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
    /// The copy of this model compiled into the binary, if any.
    pub fn embedded(&self) -> Option<&'static EmbeddedModel> {
        (self.name == "fmnist-edm").then_some(&EMBEDDED_EDM)
    }

    /// Folders where this model's files may be when neither `--weights` nor an embedded copy
    /// supplies them, in search order (see the module documentation).
    pub fn candidate_dirs(&self) -> Vec<PathBuf> {
        let mut dirs = Vec::new();
        if let (Some(dir), Some(root)) = (self.bundled_dir, source_models()) {
            dirs.push(root.join(dir));
        }
        if let Some(home) = gddcm_home() {
            dirs.push(home.join(self.name));
        }
        if let Some(repo) = self.hf_repo {
            dirs.extend(hf_snapshots(repo));
        }
        dirs
    }

    fn has_files(&self, dir: &Path) -> bool {
        self.files.iter().all(|f| dir.join(f).is_file() || alt_bin(&dir.join(f)).is_some_and(|p| p.is_file()))
    }

    /// Where this model's files are: `weights` if given (an error naming it if it does not hold
    /// them), else the embedded copy, else the first folder of [`Self::candidate_dirs`] that
    /// holds them; or an error saying where to get them and every place searched.
    pub fn find(&self, weights: Option<&Path>) -> Result<Source> {
        if let Some(w) = weights {
            ensure!(w.exists(), "--weights {}: no such file or folder", w.display());
            let dir = if w.is_file() { w.parent().unwrap_or(Path::new(".")).to_path_buf() } else { w.to_path_buf() };
            ensure!(
                self.has_files(&dir),
                "--weights {}: the files of model '{}' are not there.\n  needs: {}\n  get them from: {}",
                w.display(),
                self.name,
                self.files.join(", "),
                self.download
            );
            return Ok(Source::Folder(dir));
        }
        if self.embedded().is_some() {
            return Ok(Source::Embedded);
        }
        let dirs = self.candidate_dirs();
        if let Some(dir) = dirs.iter().find(|d| self.has_files(d)) {
            return Ok(Source::Folder(dir.clone()));
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

    /// The folder holding this model's files (not for an embedded model; see [`Self::find`]).
    pub fn locate(&self, weights: Option<&Path>) -> Result<PathBuf> {
        match self.find(weights)? {
            Source::Folder(dir) => Ok(dir),
            Source::Embedded => bail!("model '{}' is embedded in this binary, not in a folder", self.name),
        }
    }

    /// Whether the weights are present.
    pub fn available(&self, weights: Option<&Path>) -> bool {
        self.find(weights).is_ok()
    }

    /// The model's shipped profile (`profile.json` beside its weights, or embedded) and where
    /// it came from, if it has one.
    pub fn shipped_profile(&self, weights: Option<&Path>) -> Result<Option<(crate::profile::Settings, String)>> {
        match self.find(weights)? {
            Source::Embedded => {
                let text = self.embedded().map(|e| e.profile).unwrap_or_default();
                let s = serde_json::from_str(text).context("the embedded profile.json is not a valid settings file")?;
                Ok(Some((s, format!("profile.json embedded in this gddcm binary for {}", self.name))))
            }
            Source::Folder(dir) => {
                let path = dir.join("profile.json");
                if path.is_file() {
                    Ok(Some((crate::profile::Settings::load(&path)?, path.display().to_string())))
                } else {
                    Ok(None)
                }
            }
        }
    }

    /// The model's reference image `x_ref` (SPEC 7: its training-set mean, [`X_REF_FILE`] beside
    /// its weights or embedded with them), looked for where [`Self::find`] finds the weights.
    /// An unreadable file is an error naming it; a missing one is `image: None`.
    pub fn reference(&self, weights: Option<&Path>) -> Result<RefLookup> {
        match self.find(weights) {
            Ok(Source::Embedded) => {
                let place = format!("the copy of {} embedded in this gddcm binary", self.name);
                let image = match self.embedded().and_then(|e| e.x_ref) {
                    Some(bytes) => Some(RefImage::from_safetensors(bytes, &place)?),
                    None => None,
                };
                Ok(RefLookup { image, places: place })
            }
            Ok(Source::Folder(dir)) => {
                let path = dir.join(X_REF_FILE);
                let image = if path.is_file() { Some(RefImage::load(&path)?) } else { None };
                Ok(RefLookup { image, places: path.display().to_string() })
            }
            Err(_) => Ok(RefLookup {
                image: None,
                places: format!("nowhere: the files of model '{}' were not found", self.name),
            }),
        }
    }

    /// [`Self::description`] with the reference images the model provides where its files are
    /// found ([`Self::reference`]), so that [`crate::validate::check`] can refuse a file naming
    /// another one before anything is loaded.
    pub fn description_with_references(&self, weights: Option<&Path>) -> Result<crate::validate::ModelDescription> {
        let r = self.reference(weights)?;
        Ok(self.description().with_references(r.image.iter().map(|i| i.sha256).collect(), r.places))
    }

    /// What a token file made with this model needs, without loading it (SPEC 5 G3, 1).
    pub fn description(&self) -> crate::validate::ModelDescription {
        let (parameterization, schedule) = crate::codec::format_parameterization(self.parameterization);
        crate::validate::ModelDescription::new(
            self.name,
            crate::codec::family_tag(self.family),
            parameterization,
            schedule,
            self.channels as u8,
            self.size as u32,
        )
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

/// A model's reference image and where it was looked for ([`ModelEntry::reference`]).
#[derive(Debug, Clone)]
pub struct RefLookup {
    /// The image, if the model provides one.
    pub image: Option<RefImage>,
    /// Where it was looked for (a file, or the embedded copy), for messages.
    pub places: String,
}

/// A model ready to tokenize with.
pub struct LoadedModel {
    pub entry: ModelEntry,
    pub denoiser: Box<dyn Denoiser>,
    /// SHA-256 of the weights file: token files name it, decoders check it.
    pub weights_sha256: [u8; 32],
    /// The folder the files came from (empty for an embedded model).
    pub dir: PathBuf,
    /// Where the weights came from.
    pub source: Source,
    /// The training-set mean reference image `x_ref` the model ships, if any, and where it was
    /// looked for (SPEC 7; [`ModelEntry::reference`]).
    pub x_ref: RefLookup,
}

impl LoadedModel {
    /// The tuned settings shipped with the model (`profile.json` beside its weights or
    /// embedded with them, written by `gddcm search`), if any.
    pub fn profile(&self) -> Result<Option<crate::profile::Settings>> {
        Ok(self.profile_with_origin()?.map(|(s, _)| s))
    }

    /// [`Self::profile`] and where it came from.
    pub fn profile_with_origin(&self) -> Result<Option<(crate::profile::Settings, String)>> {
        match &self.source {
            Source::Embedded => self.entry.shipped_profile(None),
            Source::Folder(dir) => self.entry.shipped_profile(Some(dir)),
        }
    }

    /// The weights this model was loaded from, for messages: the file, or "embedded".
    pub fn weights_origin(&self) -> String {
        match &self.source {
            Source::Embedded => format!("the copy of {} embedded in this gddcm binary", self.entry.name),
            Source::Folder(dir) => {
                let w = self.entry.files.get(1).or(self.entry.files.first()).map(|f| dir.join(f));
                match w {
                    Some(w) if !w.is_file() => alt_bin(&w).unwrap_or(w).display().to_string(),
                    Some(w) => w.display().to_string(),
                    None => dir.display().to_string(),
                }
            }
        }
    }

    /// The network input shape `[C, H, W]`.
    pub fn shape(&self) -> (usize, usize, usize) {
        (self.entry.channels, self.entry.size, self.entry.size)
    }

    /// The [`crate::tokenizer::Config`] `settings` select for this model (its reference image
    /// for `x_ref: "mean"`).
    pub fn config(&self, settings: &crate::profile::Settings) -> Result<crate::tokenizer::Config> {
        settings.to_config_with(self.entry.family, self.denoiser.marginal(), self.x_ref.image.as_ref())
    }

    /// [`ModelEntry::description`] with this model's reference image.
    pub fn description(&self) -> crate::validate::ModelDescription {
        self.entry
            .description()
            .with_references(self.x_ref.image.iter().map(|i| i.sha256).collect(), self.x_ref.places.clone())
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
    let source = entry.find(weights)?;
    let dir = match &source {
        Source::Folder(dir) => dir.clone(),
        Source::Embedded => {
            let e = entry.embedded().context("no embedded copy")?;
            let origin = format!("{} (embedded)", entry.name);
            let cfg = crate::nn::arch::unet2d::UNet2DConfig::from_json_str(e.config, &origin)?;
            let tensors = candle_core::safetensors::load_buffer(e.weights, &Device::Cpu)
                .with_context(|| format!("the embedded weights of {}", entry.name))?;
            let store = crate::nn::TensorStore::new(origin, tensors)?.on_device(device);
            let net: Box<dyn Network> = Box::new(UNet2DModel::from_store(&cfg, &store)?);
            let weights_sha256 = e.weights_sha256();
            let denoiser = denoiser(&entry, net);
            let x_ref = entry.reference(weights)?;
            return Ok(LoadedModel { entry, denoiser, weights_sha256, dir: PathBuf::new(), source, x_ref });
        }
    };
    let (net, weights_file): (Box<dyn Network>, PathBuf) = match entry.weights {
        WeightsKind::DiffusersUNet2D => {
            let cfg_path = dir.join(entry.files[0]);
            let wpath = entry.weights_file(&dir);
            let cfg = crate::nn::arch::unet2d::UNet2DConfig::from_file(&cfg_path)?;
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
    let denoiser = denoiser(&entry, net);
    let weights_sha256 = sha256_file(&weights_file)?;
    let x_ref = entry.reference(Some(&dir))?;
    Ok(LoadedModel { entry, denoiser, weights_sha256, dir, source, x_ref })
}

/// The network wrapped by the model's parameterisation.
fn denoiser(entry: &ModelEntry, net: Box<dyn Network>) -> Box<dyn Denoiser> {
    match entry.parameterization {
        Parameterization::DdpmEpsilon => Box::new(RegressionDenoiser::ddpm(net, entry.marginal(), true)),
        Parameterization::Preconditioned(precond) => {
            Box::new(PrecondDenoiser { net, precond, marginal: entry.marginal() })
        }
        Parameterization::Velocity => Box::new(RegressionDenoiser::rectified_flow(net)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The candle-free copies in `validate` (used by the fuzz target) agree with the zoo.
    #[test]
    fn descriptions_agree_with_validate() {
        let zoo: Vec<_> = entries().iter().map(ModelEntry::description).collect();
        assert_eq!(zoo, crate::validate::known_descriptions());
    }

    /// The validation's evaluation count is the tokenizer's, for each family's defaults.
    #[test]
    fn nfe_matches_the_tokenizer() {
        use crate::profile::Settings;
        let mut checked = 0;
        for e in entries().into_iter().take(4) {
            let marginal = e.marginal();
            for p in [0.0, 0.5] {
                for steps in [None, Some(0), Some(1), Some(3)] {
                    let s = Settings { p, n: 7, sampler_steps: steps, ..Settings::default() };
                    let Ok(cfg) = s.to_config(e.family, &marginal) else { continue };
                    let denoiser = crate::family::analytic::exact_denoiser(
                        e.family,
                        &crate::family::analytic::Gmm::random(2, 4, 0.5, 0.1, 1),
                    );
                    let tok = crate::tokenizer::Tokenizer::new(denoiser.as_ref(), &cfg, (1, 2, 2));
                    let pr = crate::codec::procedure(&cfg, e.family, e.description().clip_x0, Some(0)).unwrap();
                    let file = crate::format::TokenFile {
                        model: crate::format::ModelIdentity {
                            name: e.name.into(),
                            weights_sha256: [0; 32],
                            family: crate::codec::family_tag(e.family),
                            parameterization: e.description().parameterization,
                            schedule: e.description().schedule,
                        },
                        procedure: pr,
                        image: crate::format::ImageSpec { channels: 1, height: 28, width: 28, lo: -1.0, hi: 1.0 },
                        tokens: vec![0; 7],
                        fit: None,
                    };
                    let n = crate::validate::check(&e.description(), &file, None)
                        .unwrap_or_else(|err| panic!("{} p = {p} steps {steps:?}: {err}", e.name));
                    assert_eq!(n, tok.nfe() as u64, "{} p = {p} steps {steps:?}", e.name);
                    checked += 1;
                }
            }
        }
        assert!(checked >= 24, "only {checked} settings checked");
    }
}
