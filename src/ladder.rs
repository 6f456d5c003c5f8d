//! A model's shipped operating points (issue 17): small stable ids → full tokenizer settings,
//! and what the compact container ([`crate::format::compact`]) needs from them.
//!
//! A model folder may hold [`REGISTRY_FILE`], a list of operating points:
//!
//! ```json
//! { "model": "fmnist-edm",
//!   "points": [ { "id": 0, "name": "p0-k256-n300", "settings": { "k": 256, "n": 300, ... } } ] }
//! ```
//!
//! `settings` is a profile ([`Settings`], the format of `profile.json` and of `gddcm search`).
//! An id must keep its meaning forever, since compact files name it: points may be added, never
//! changed (`tests/compact.rs` pins the procedure of every shipped point).
//!
//! Encoding: [`store`] writes the compact form when a file's procedure is exactly one of the
//! model's points, else the full header. Decoding: a [`Resolver`] finds the installed model
//! whose weights' SHA-256 starts with the file's fingerprint and expands the file with the
//! point its id names.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::codec;
use crate::format::compact::{fingerprint_of, CompactFile, Container, OperatingPoint};
use crate::format::{FormatError, ImageSpec, TokenFile};
use crate::profile::Settings;
use crate::tokenizer::Init;
use crate::zoo::{self, LoadedModel, ModelEntry};

/// The registry of a model's operating points, beside its weights.
pub const REGISTRY_FILE: &str = "operating_points.json";

/// The contents of [`REGISTRY_FILE`].
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Registry {
    /// The model (zoo name) the points belong to.
    pub model: String,
    /// The operating points, by id.
    pub points: Vec<PointSettings>,
    /// The point a run with no tokenizer settings uses (else the model's `profile.json`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<u32>,
}

/// One shipped operating point as written in the registry.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PointSettings {
    /// The stable id compact files carry.
    pub id: u32,
    /// A short human-readable name.
    pub name: String,
    /// Every setting of the point.
    pub settings: Settings,
    /// Whether rate control (`--bpp`, `--psnr`) may choose the point. A point another one
    /// beats at no larger file (e.g. Algorithm 2 at N = 300 beside Algorithm 1 at N = 300) is
    /// shipped with `false`: it still decodes and can be named with `--point`, and `table1`
    /// uses it as its algorithm's row, but a rate target never picks the worse of two points.
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub rate_control: bool,
}

fn yes() -> bool {
    true
}

fn is_true(b: &bool) -> bool {
    *b
}

/// The registry in `dir` if there is one and it belongs to `entry` (a `--weights` folder may
/// hold another model's).
pub fn registry(entry: &ModelEntry, dir: &Path) -> Result<Option<Registry>> {
    let path = dir.join(REGISTRY_FILE);
    // A model embedded in the binary (an empty `dir`, see `zoo::LoadedModel::dir`) ships its
    // registry embedded with it.
    let text = match entry.embedded() {
        Some(e) if dir.as_os_str().is_empty() => e.operating_points.to_string(),
        _ if !path.is_file() => return Ok(None),
        _ => std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?,
    };
    let reg: Registry = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a valid operating-point registry", path.display()))?;
    if reg.model != entry.name {
        return Ok(None);
    }
    if let Some(d) = reg.default.filter(|d| !reg.points.iter().any(|p| p.id == *d)) {
        bail!("{}: the default operating point {d} is not among the points", path.display());
    }
    let mut ids: Vec<u32> = reg.points.iter().map(|p| p.id).collect();
    ids.sort_unstable();
    if let Some(w) = ids.windows(2).find(|w| w[0] == w[1]) {
        bail!("{}: operating point id {} appears twice", path.display(), w[0]);
    }
    Ok(Some(reg))
}

/// The full procedures of the operating points `entry` ships in `dir` (weights hash `sha256`),
/// in registry order; empty when it ships none.
pub fn operating_points(entry: &ModelEntry, dir: &Path, sha256: [u8; 32]) -> Result<Vec<OperatingPoint>> {
    let Some(reg) = registry(entry, dir)? else { return Ok(vec![]) };
    let side = entry.native_side() as u32;
    let image = ImageSpec { channels: entry.channels as u8, height: side, width: side, lo: -1.0, hi: 1.0 };
    // A point may start from the model's training-set mean (SPEC 7), shipped beside it.
    let x_ref = if reg.points.iter().any(|p| p.settings.x_ref == crate::profile::XRefKind::Mean) {
        let weights = (!dir.as_os_str().is_empty()).then_some(dir);
        entry.reference(weights)?.image
    } else {
        None
    };
    reg.points
        .iter()
        .map(|p| {
            let cfg =
                p.settings.to_config_with(entry.family, &entry.marginal(), x_ref.as_ref()).with_context(|| {
                    format!("operating point {} ({}) of model '{}' is not valid", p.id, p.name, entry.name)
                })?;
            let j0 = matches!(cfg.init, Init::ClosestNoise { .. }).then_some(0);
            let procedure = codec::procedure(&cfg, entry.family, codec::clip_of_entry(entry), j0)?;
            Ok(OperatingPoint { id: p.id, model: codec::identity_of(entry, sha256), procedure, image })
        })
        .collect()
}

/// The bytes to store for `file`: the compact form when it was made with one of `points`
/// (exactly: every procedure field), else the full self-describing header.
pub fn store(file: &TokenFile, points: &[OperatingPoint]) -> Result<Vec<u8>> {
    for p in points {
        if let Some(c) = CompactFile::of(file, p)? {
            return Ok(c.to_bytes());
        }
    }
    Ok(file.to_bytes()?)
}

/// SHA-256 of a weights file, remembered per path, size and modification time.
pub(crate) fn weights_sha256(path: &Path) -> Result<[u8; 32]> {
    type Key = (PathBuf, u64, Option<std::time::SystemTime>);
    static CACHE: OnceLock<Mutex<HashMap<Key, [u8; 32]>>> = OnceLock::new();
    let meta = std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
    let key = (path.to_path_buf(), meta.len(), meta.modified().ok());
    let cache = CACHE.get_or_init(Default::default);
    if let Some(h) = cache.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
        return Ok(*h);
    }
    let h = zoo::sha256_file(path)?;
    cache.lock().unwrap_or_else(|e| e.into_inner()).insert(key, h);
    Ok(h)
}

/// Where `entry` is installed (its weights looked up as by `zoo::load`, with `weights` first)
/// and its weights' SHA-256, when it is installed with a registry of operating points. The
/// folder is empty for the model embedded in the binary.
pub fn locate(entry: &ModelEntry, weights: Option<&Path>) -> Result<Option<(PathBuf, [u8; 32])>> {
    let Ok(source) = entry.find(weights) else { return Ok(None) };
    let dir = match source {
        zoo::Source::Folder(dir) => dir,
        zoo::Source::Embedded => PathBuf::new(),
    };
    if registry(entry, &dir)?.is_none() {
        return Ok(None);
    }
    let sha256 = match entry.embedded() {
        Some(e) if dir.as_os_str().is_empty() => e.weights_sha256(),
        _ => weights_sha256(&entry.weights_file(&dir))?,
    };
    Ok(Some((dir, sha256)))
}

/// An installed model that ships operating points.
struct Installed {
    entry: ModelEntry,
    dir: PathBuf,
    sha256: [u8; 32],
}

/// Expands compact files: finds the installed model a fingerprint names and the point an id
/// names. Looks the installed models up once, on the first compact file.
pub struct Resolver {
    weights: Option<PathBuf>,
    installed: OnceLock<Vec<Installed>>,
}

/// A token file as stored: the file, its size on disk and, when it is compact, the raw
/// compact fields.
#[derive(Debug, Clone)]
pub struct Stored {
    pub file: TokenFile,
    /// Bytes of the stored file.
    pub bytes: u64,
    /// The compact fields, or `None` for a full-header file.
    pub compact: Option<CompactFile>,
}

impl Stored {
    /// File bits per pixel: the stored bytes over `H·W`.
    pub fn file_bpp(&self) -> f64 {
        self.file.file_bpp(self.bytes)
    }

    /// Bytes that are neither token payload nor I3 index.
    pub fn overhead_bytes(&self) -> u64 {
        match &self.compact {
            Some(c) => c.overhead_bytes() as u64,
            None => self.bytes - self.file.payload_bits().div_ceil(8),
        }
    }
}

impl Resolver {
    /// Resolves against every installed model (weights looked up as by `zoo::load`, with
    /// `weights` first).
    pub fn new(weights: Option<&Path>) -> Resolver {
        Resolver { weights: weights.map(Path::to_path_buf), installed: OnceLock::new() }
    }

    /// Resolves against one loaded model only (no hashing).
    pub fn for_model(model: &LoadedModel) -> Resolver {
        let installed = OnceLock::new();
        let _ = installed.set(vec![Installed {
            entry: model.entry.clone(),
            dir: model.dir.clone(),
            sha256: model.weights_sha256,
        }]);
        Resolver { weights: None, installed }
    }

    fn installed(&self) -> Result<&[Installed]> {
        if let Some(v) = self.installed.get() {
            return Ok(v);
        }
        let mut found = Vec::new();
        for entry in zoo::entries() {
            if let Some((dir, sha256)) = locate(&entry, self.weights.as_deref())? {
                found.push(Installed { entry, dir, sha256 });
            }
        }
        Ok(self.installed.get_or_init(|| found))
    }

    /// The operating point a compact file names, or an error naming what is missing.
    pub fn point(&self, c: &CompactFile) -> Result<OperatingPoint> {
        let installed = self.installed()?;
        let unknown = |detail: String| FormatError::UnknownOperatingPoint {
            point: c.point,
            fingerprint: c.fingerprint_hex(),
            detail,
        };
        let matching: Vec<&Installed> =
            installed.iter().filter(|m| fingerprint_of(&m.sha256) == c.fingerprint).collect();
        let model = match matching.as_slice() {
            [m] => *m,
            [] => {
                let list: Vec<String> = installed
                    .iter()
                    .map(|m| format!("{} ({})", m.entry.name, hex(&fingerprint_of(&m.sha256))))
                    .collect();
                return Err(unknown(format!(
                    "no installed model matches (installed models with operating points: {})",
                    if list.is_empty() { "none".to_string() } else { list.join(", ") }
                ))
                .into());
            }
            several => {
                let names: Vec<&str> = several.iter().map(|m| m.entry.name).collect();
                return Err(unknown(format!(
                    "several installed models match ({}): their weights share the fingerprint; pass --weights \
                     FOLDER to choose one",
                    names.join(", ")
                ))
                .into());
            }
        };
        let points = operating_points(&model.entry, &model.dir, model.sha256)?;
        match points.into_iter().find(|p| p.id == c.point) {
            Some(p) => Ok(p),
            None => {
                let ids: Vec<String> = registry(&model.entry, &model.dir)?
                    .map(|r| r.points.iter().map(|p| p.id.to_string()).collect())
                    .unwrap_or_default();
                Err(unknown(format!(
                    "that is model '{}' ({}), which ships operating points {}: not this one (a newer gddcm or \
                     model registry made the file)",
                    model.entry.name,
                    model.dir.join(REGISTRY_FILE).display(),
                    ids.join(", ")
                ))
                .into())
            }
        }
    }

    /// Parses a stored file of either form, expanding a compact one.
    pub fn parse(&self, bytes: &[u8]) -> Result<Stored> {
        let (file, compact) = match Container::from_bytes(bytes)? {
            Container::Full(f) => (f, None),
            Container::Compact(c) => (c.expand(&self.point(&c)?)?, Some(c)),
        };
        Ok(Stored { file, bytes: bytes.len() as u64, compact })
    }

    /// Reads and parses a stored file ([`Resolver::parse`]).
    pub fn read(&self, path: &Path) -> Result<Stored> {
        self.parse(&read_bytes(path)?).with_context(|| format!("reading {}", path.display()))
    }
}

/// The bytes of a token file, refusing files larger than any valid one.
pub fn read_bytes(path: &Path) -> Result<Vec<u8>> {
    use std::io::Read;
    let file = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut bytes = Vec::new();
    file.take(crate::format::MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("cannot read {}", path.display()))?;
    if bytes.len() as u64 > crate::format::MAX_FILE_BYTES {
        return Err(FormatError::FileTooLarge { path: path.to_owned(), max: crate::format::MAX_FILE_BYTES }.into());
    }
    Ok(bytes)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What `gddcm inspect` says of a stored file's container: the form, its raw fields and the
/// overhead; `resolved` is the full file when it could be expanded (always for the full form).
pub fn describe(bytes: &[u8], resolver: &Resolver) -> Result<(String, serde_json::Value, Result<Stored>)> {
    let n = bytes.len();
    match Container::from_bytes(bytes)? {
        Container::Full(f) => {
            let payload = f.payload_bits().div_ceil(8);
            let text = format!(
                "container:  full header (format version {}), {n} bytes: {} bytes of tokens, overhead {} bytes \
                 (no shipped operating point has these settings)",
                f.version(),
                payload,
                n as u64 - payload
            );
            let json = serde_json::json!({
                "form": "full", "version": f.version(), "file_bytes": n,
                "overhead_bytes": n as u64 - payload,
            });
            Ok((text, json, Ok(Stored { file: f, bytes: n as u64, compact: None })))
        }
        Container::Compact(c) => {
            let size = match c.size {
                Some((h, w)) => format!("{h}×{w}"),
                None => "the model's native size".to_string(),
            };
            let resolved = resolver
                .point(&c)
                .and_then(|p| Ok(Stored { file: c.expand(&p)?, bytes: n as u64, compact: Some(c.clone()) }));
            let mut text = format!(
                "container:  compact v{}, {n} bytes: operating point {}, model fingerprint {} (weights sha256 \
                 prefix), image {size}, body {} bytes (I3 index if any, tokens), overhead {} bytes (header {} + CRC-16 {:#06x})",
                crate::format::compact::COMPACT_VERSION,
                c.point,
                c.fingerprint_hex(),
                c.body.len(),
                c.overhead_bytes(),
                c.header_bytes(),
                crate::format::compact::crc16(&bytes[..n - 2]),
            );
            if let Ok(s) = &resolved {
                text.push_str(&format!(
                    "\n            the full-header form of the same file would be {} bytes",
                    s.file.total_bits() / 8
                ));
            }
            let json = serde_json::json!({
                "form": "compact", "version": crate::format::compact::COMPACT_VERSION, "file_bytes": n,
                "overhead_bytes": c.overhead_bytes(), "operating_point": c.point,
                "fingerprint": c.fingerprint_hex(), "size": c.size, "body_bytes": c.body.len(),
            });
            Ok((text, json, resolved))
        }
    }
}
