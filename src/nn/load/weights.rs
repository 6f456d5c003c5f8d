//! Weight files and strict name/shape checking.
//!
//! Every network in [`crate::nn`] is built by asking a [`WeightSource`] for each tensor it needs,
//! by its *own* state-dict name (diffusers `UNet2DModel` keys, or EDM `SongUNet` keys) and the
//! shape the architecture expects. A [`TensorStore`] holds the tensors of one file and remembers
//! which were consumed, so that after building, [`TensorStore::finish`] reports every key the
//! architecture did not use. Missing keys, wrong shapes and unused keys are errors that name the
//! file and the key — never panics.
//!
//! Checkpoints whose names or layouts differ from the architecture's (RectifiedFlow NCSNpp,
//! consistency-model flax NCSN++) go through a [`KeyMap`]: data, built by code from the config,
//! that says for each architecture key which source tensor(s) to read and how to re-lay them
//! out (NETWORKS.md §4 "Mapping rules").

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::Mutex;

use candle_core::{DType, Device, Tensor};

use super::legacy_pth::LegacyPth;

/// Errors of weight loading and model construction.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The architecture needs a tensor the file does not hold.
    #[error("{file}: missing tensor `{key}` (expected shape {expected:?})")]
    Missing {
        /// The file (or other origin) of the weights.
        file: String,
        /// The key as looked up in the file.
        key: String,
        /// The shape the architecture expects.
        expected: Vec<usize>,
    },
    /// A tensor has another shape than the architecture expects.
    #[error("{file}: tensor `{key}` has shape {found:?}, expected {expected:?}")]
    Shape {
        /// The file (or other origin) of the weights.
        file: String,
        /// The key as looked up in the file.
        key: String,
        /// The shape the architecture expects.
        expected: Vec<usize>,
        /// The shape in the file.
        found: Vec<usize>,
    },
    /// The file holds tensors the architecture did not use (usually a config mismatch).
    #[error("{file}: {} tensor(s) not used by the architecture: {}", keys.len(), preview(keys))]
    Unused {
        /// The file (or other origin) of the weights.
        file: String,
        /// The unused keys, sorted.
        keys: Vec<String>,
    },
    /// The file could not be parsed or does not have the expected structure.
    #[error("{file}: {msg}")]
    Format {
        /// The file.
        file: String,
        /// What is wrong.
        msg: String,
    },
    /// A configuration value the architecture does not support, or an invalid config file.
    #[error("config {file}: {msg}")]
    Config {
        /// The config file (or `<inline>`).
        file: String,
        /// What is wrong.
        msg: String,
    },
    /// A tensor operation failed while preparing weights.
    #[error("{file}: {source}")]
    Candle {
        /// The file (or other origin) of the weights.
        file: String,
        /// The underlying error.
        #[source]
        source: candle_core::Error,
    },
    /// The file could not be read.
    #[error("{file}: {source}")]
    Io {
        /// The file.
        file: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

fn preview(keys: &[String]) -> String {
    let mut s = keys.iter().take(8).map(|k| format!("`{k}`")).collect::<Vec<_>>().join(", ");
    if keys.len() > 8 {
        s.push_str(&format!(", … ({} more)", keys.len() - 8));
    }
    s
}

/// `Result` of the loaders.
pub type LoadResult<T> = std::result::Result<T, LoadError>;

/// Attaches a file name to a candle error.
pub(crate) trait WithFile<T> {
    fn with_file(self, file: &str) -> LoadResult<T>;
}

impl<T> WithFile<T> for candle_core::Result<T> {
    fn with_file(self, file: &str) -> LoadResult<T> {
        self.map_err(|source| LoadError::Candle { file: file.to_string(), source })
    }
}

/// Anything a network can be built from: answers "the tensor named `key`, of shape `shape`".
///
/// `key` is always the architecture's own name (diffusers or EDM `SongUNet` state-dict key).
pub trait WeightSource {
    /// Where the weights come from, for error messages.
    fn origin(&self) -> &str;
    /// The tensor `key` as f32, checked to have exactly `shape`.
    fn tensor(&self, key: &str, shape: &[usize]) -> LoadResult<Tensor>;
    /// Whether the source can provide `key` (used to pick between alternative namings).
    fn contains(&self, key: &str) -> bool;
    /// A buffer the architecture computes itself (EDM `resample_filter`): a source that stores
    /// it must hold it with this shape (it is consumed and its shape checked); a source that
    /// does not store it (mapped RF/CM checkpoints) accepts the call.
    fn fixed_buffer(&self, key: &str, shape: &[usize]) -> LoadResult<()>;
    /// The device the network is built on: [`VarPath::get`] moves every tensor there.
    fn device(&self) -> Device {
        Device::Cpu
    }
}

/// Named tensors of one weight file, with consumption tracking for strict loading.
pub struct TensorStore {
    origin: String,
    tensors: BTreeMap<String, Tensor>,
    used: Mutex<BTreeSet<String>>,
    /// Where networks built from this store live (the tensors are read to the CPU and moved
    /// as the architecture asks for them).
    device: Device,
}

impl std::fmt::Debug for TensorStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TensorStore").field("origin", &self.origin).field("len", &self.tensors.len()).finish()
    }
}

/// Converts floating-point tensors to f32 (f16/bf16/f64 upcasts or rounds; f16→f32 is exact).
fn to_f32(t: Tensor) -> candle_core::Result<Tensor> {
    match t.dtype() {
        DType::F16 | DType::BF16 | DType::F64 => t.to_dtype(DType::F32),
        _ => Ok(t),
    }
}

impl TensorStore {
    /// A store over the given tensors; floating-point tensors are converted to f32.
    pub fn new(origin: impl Into<String>, tensors: impl IntoIterator<Item = (String, Tensor)>) -> LoadResult<Self> {
        let origin = origin.into();
        let mut map = BTreeMap::new();
        for (k, t) in tensors {
            let t = to_f32(t).with_file(&origin)?;
            map.insert(k, t);
        }
        Ok(Self { origin, tensors: map, used: Mutex::new(BTreeSet::new()), device: Device::Cpu })
    }

    /// A store whose tensors are all zeros of the given shapes (no memory per tensor: each is a
    /// broadcast scalar). Used to check that a full-size architecture accepts a key manifest.
    pub fn zeros_from_shapes<'a>(
        origin: impl Into<String>,
        shapes: impl IntoIterator<Item = (&'a str, &'a [usize])>,
    ) -> LoadResult<Self> {
        let origin = origin.into();
        let zero = Tensor::zeros((), DType::F32, &Device::Cpu).with_file(&origin)?;
        let mut v = Vec::new();
        for (k, s) in shapes {
            v.push((k.to_string(), zero.broadcast_as(s).with_file(&origin)?));
        }
        Self::new(origin, v)
    }

    /// Reads a `.safetensors` file (any float dtype is converted to f32; integer tensors are
    /// kept as they are).
    pub fn from_safetensors(path: impl AsRef<Path>) -> LoadResult<Self> {
        let path = path.as_ref();
        let origin = path.display().to_string();
        if !path.exists() {
            return Err(LoadError::Io {
                file: origin,
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "file not found"),
            });
        }
        let map = candle_core::safetensors::load(path, &Device::Cpu).with_file(&origin)?;
        Self::new(origin, map)
    }

    /// Reads a PyTorch zip checkpoint (`torch.save`, e.g. diffusers
    /// `diffusion_pytorch_model.bin`). With `key`, the state dict is taken from that entry of a
    /// top-level dict (e.g. `"model"`); tensors that are not direct dict values are ignored.
    pub fn from_pth(path: impl AsRef<Path>, key: Option<&str>) -> LoadResult<Self> {
        let path = path.as_ref();
        let origin = path.display().to_string();
        let tensors = candle_core::pickle::read_all_with_key(path, key).with_file(&origin)?;
        Self::new(origin, tensors)
    }

    /// Reads a PyTorch checkpoint in the legacy (pre-1.6, non-zip) `torch.save` format, which
    /// old released weights use (torchvision's VGG16, the pytorch-fid Inception).
    pub fn from_legacy_pth(path: impl AsRef<Path>) -> LoadResult<Self> {
        let path = path.as_ref();
        let origin = path.display().to_string();
        let format = |msg: String| LoadError::Format { file: origin.clone(), msg };
        let pth = LegacyPth::open(path).map_err(|e| format(format!("cannot read legacy PyTorch checkpoint: {e}")))?;
        let mut tensors = Vec::new();
        for name in pth.names() {
            if let Some(t) = pth.get(name).map_err(format)? {
                tensors.push((name.clone(), t));
            }
        }
        Self::new(origin, tensors)
    }

    /// Reads `.safetensors`, or a PyTorch checkpoint (zip or legacy format) for any other
    /// extension.
    pub fn from_file(path: impl AsRef<Path>) -> LoadResult<Self> {
        let path = path.as_ref();
        match path.extension().and_then(|e| e.to_str()) {
            Some(e) if e.eq_ignore_ascii_case("safetensors") => Self::from_safetensors(path),
            _ if LegacyPth::is_legacy(path) => Self::from_legacy_pth(path),
            _ => Self::from_pth(path, None),
        }
    }

    /// The keys that start with `prefix`, with the prefix removed (e.g. the `w.` weights of a
    /// fixture file, or the `model.` keys of an EDM export). Other keys are dropped.
    pub fn sub(&self, prefix: &str) -> Self {
        let origin = self.origin.clone();
        let tensors = self
            .tensors
            .iter()
            .filter_map(|(k, t)| k.strip_prefix(prefix).map(|s| (s.to_string(), t.clone())))
            .collect();
        Self { origin, tensors, used: Mutex::new(BTreeSet::new()), device: self.device.clone() }
    }

    /// Removes `prefix` from every key that has it (e.g. DataParallel's `module.`, EDM's
    /// `model.`); keys without it stay as they are.
    pub fn strip_prefix(self, prefix: &str) -> Self {
        let (origin, device) = (self.origin, self.device);
        let tensors = self
            .tensors
            .into_iter()
            .map(|(k, t)| match k.strip_prefix(prefix) {
                Some(s) => (s.to_string(), t),
                None => (k, t),
            })
            .collect();
        Self { origin, tensors, used: Mutex::new(BTreeSet::new()), device }
    }

    /// The same store, building networks on `device` (e.g. a CUDA GPU).
    pub fn on_device(mut self, device: &Device) -> Self {
        self.device = device.clone();
        self
    }

    /// The raw tensor `key` (not marked as used), if present.
    pub fn raw(&self, key: &str) -> Option<&Tensor> {
        self.tensors.get(key)
    }

    /// All keys, sorted.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(|s| s.as_str())
    }

    /// Takes `key` and checks its shape, marking it used.
    pub fn take(&self, key: &str, shape: &[usize]) -> LoadResult<Tensor> {
        let t = self.tensors.get(key).ok_or_else(|| LoadError::Missing {
            file: self.origin.clone(),
            key: key.to_string(),
            expected: shape.to_vec(),
        })?;
        if t.dims() != shape {
            return Err(LoadError::Shape {
                file: self.origin.clone(),
                key: key.to_string(),
                expected: shape.to_vec(),
                found: t.dims().to_vec(),
            });
        }
        self.mark_used(key);
        Ok(t.clone())
    }

    /// Marks `key` as consumed without using it (e.g. RectifiedFlow's unused `sigmas` buffer).
    /// Missing keys are fine.
    pub fn mark_used(&self, key: &str) {
        if self.tensors.contains_key(key) {
            self.used.lock().unwrap_or_else(|e| e.into_inner()).insert(key.to_string());
        }
    }

    /// Checks that every tensor of the file was consumed.
    pub fn finish(&self) -> LoadResult<()> {
        let used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        let unused: Vec<String> = self.tensors.keys().filter(|k| !used.contains(*k)).cloned().collect();
        if unused.is_empty() {
            Ok(())
        } else {
            Err(LoadError::Unused { file: self.origin.clone(), keys: unused })
        }
    }

    /// Number of tensors in the store.
    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    /// Whether the store is empty.
    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }
}

impl WeightSource for TensorStore {
    fn origin(&self) -> &str {
        &self.origin
    }
    fn tensor(&self, key: &str, shape: &[usize]) -> LoadResult<Tensor> {
        self.take(key, shape)
    }
    fn contains(&self, key: &str) -> bool {
        self.tensors.contains_key(key)
    }
    fn fixed_buffer(&self, key: &str, shape: &[usize]) -> LoadResult<()> {
        self.take(key, shape).map(|_| ())
    }
    fn device(&self) -> Device {
        self.device.clone()
    }
}

/// How one architecture tensor is obtained from a checkpoint with other names/layouts
/// (NETWORKS.md §4 "Mapping rules").
#[derive(Debug, Clone, PartialEq)]
pub enum Rule {
    /// The source tensor as it is.
    Same(String),
    /// A 2-D `[in, out]` matrix (flax Dense kernel) transposed to `[out, in]`.
    Transpose(String),
    /// A flax conv kernel `[kh, kw, in, out]` permuted to OIHW (`permute(3,2,0,1)`).
    HwioToOihw(String),
    /// A NIN weight `W [in, out]` turned into a 1×1 conv `[out, in, 1, 1]`.
    NinToConv(String),
    /// EDM's interleaved `qkv.weight [3C, C, 1, 1]` from three NIN `W [C, C]` (q, k, v):
    /// row `3c+j` is column `c` of `W_j` (NETWORKS.md §1 self-attention).
    InterleaveQkvWeight([String; 3]),
    /// EDM's interleaved `qkv.bias [3C]`: entry `3c+j` is `b_j[c]`.
    InterleaveQkvBias([String; 3]),
    /// A buffer computed from the config (FIR `resample_filter`), absent from the source.
    Fixed,
}

impl Rule {
    /// The source keys this rule reads.
    pub fn sources(&self) -> Vec<&str> {
        match self {
            Rule::Same(s) | Rule::Transpose(s) | Rule::HwioToOihw(s) | Rule::NinToConv(s) => {
                vec![s.as_str()]
            }
            Rule::InterleaveQkvWeight(v) | Rule::InterleaveQkvBias(v) => v.iter().map(|s| s.as_str()).collect(),
            Rule::Fixed => vec![],
        }
    }
}

/// An ordered map from architecture keys to [`Rule`]s (forward order of the architecture).
#[derive(Debug, Clone, Default)]
pub struct KeyMap {
    /// `(architecture key, rule)` in the order the entries were built.
    pub entries: Vec<(String, Rule)>,
}

impl KeyMap {
    /// Appends an entry.
    pub fn push(&mut self, key: impl Into<String>, rule: Rule) {
        self.entries.push((key.into(), rule));
    }

    /// Pairs the map with a store, giving a [`WeightSource`] in architecture names.
    pub fn over<'a>(&'a self, store: &'a TensorStore) -> MappedSource<'a> {
        MappedSource { store, rules: self.entries.iter().map(|(k, r)| (k.as_str(), r)).collect() }
    }
}

/// A [`TensorStore`] seen through a [`KeyMap`].
pub struct MappedSource<'a> {
    store: &'a TensorStore,
    rules: HashMap<&'a str, &'a Rule>,
}

impl MappedSource<'_> {
    fn rule(&self, key: &str) -> LoadResult<&Rule> {
        self.rules.get(key).copied().ok_or_else(|| LoadError::Format {
            file: self.store.origin.clone(),
            msg: format!("key map has no rule for architecture key `{key}`"),
        })
    }
}

impl WeightSource for MappedSource<'_> {
    fn origin(&self) -> &str {
        &self.store.origin
    }

    fn tensor(&self, key: &str, shape: &[usize]) -> LoadResult<Tensor> {
        let f = self.store.origin.as_str();
        let rule = self.rule(key)?;
        let t = match rule {
            Rule::Same(s) => self.store.take(s, shape)?,
            Rule::Transpose(s) => {
                let [o, i] = dims_n::<2>(f, key, shape)?;
                self.store.take(s, &[i, o])?.t().with_file(f)?
            }
            Rule::HwioToOihw(s) => {
                let [o, i, kh, kw] = dims_n::<4>(f, key, shape)?;
                self.store.take(s, &[kh, kw, i, o])?.permute((3, 2, 0, 1)).with_file(f)?
            }
            Rule::NinToConv(s) => {
                let [o, i, _, _] = dims_n::<4>(f, key, shape)?;
                self.store.take(s, &[i, o])?.t().and_then(|t| t.reshape((o, i, 1, 1))).with_file(f)?
            }
            Rule::InterleaveQkvWeight(srcs) => {
                let [o3, c, _, _] = dims_n::<4>(f, key, shape)?;
                let mut ts = Vec::new();
                for s in srcs {
                    // W_j [C_in, C_out] -> W_j^T [C_out, C_in]
                    ts.push(self.store.take(s, &[c, o3 / 3])?.t().with_file(f)?);
                }
                // stack on dim 1: [C_out, 3, C_in] -> rows 3c+j
                Tensor::stack(&ts, 1).and_then(|t| t.reshape((o3, c, 1, 1))).with_file(f)?
            }
            Rule::InterleaveQkvBias(srcs) => {
                let [o3] = dims_n::<1>(f, key, shape)?;
                let mut ts = Vec::new();
                for s in srcs {
                    ts.push(self.store.take(s, &[o3 / 3])?);
                }
                Tensor::stack(&ts, 1).and_then(|t| t.reshape(o3)).with_file(f)?
            }
            Rule::Fixed => {
                return Err(LoadError::Format {
                    file: f.to_string(),
                    msg: format!("`{key}` is a computed buffer, not a weight"),
                })
            }
        };
        Ok(t)
    }

    fn contains(&self, key: &str) -> bool {
        self.rules.contains_key(key)
    }

    fn fixed_buffer(&self, key: &str, _shape: &[usize]) -> LoadResult<()> {
        match self.rule(key)? {
            Rule::Fixed => Ok(()),
            r => Err(LoadError::Format {
                file: self.store.origin.clone(),
                msg: format!("`{key}` should be a computed buffer, key map says {r:?}"),
            }),
        }
    }
    fn device(&self) -> Device {
        self.store.device.clone()
    }
}

fn dims_n<const N: usize>(file: &str, key: &str, shape: &[usize]) -> LoadResult<[usize; N]> {
    shape.try_into().map_err(|_| LoadError::Format {
        file: file.to_string(),
        msg: format!("`{key}`: rule expects a rank-{N} tensor, architecture asks for {shape:?}"),
    })
}

/// A prefix path into a [`WeightSource`], like candle's `VarBuilder::pp`.
#[derive(Clone)]
pub struct VarPath<'a> {
    src: &'a dyn WeightSource,
    prefix: String,
}

impl<'a> VarPath<'a> {
    /// The root of `src`.
    pub fn new(src: &'a dyn WeightSource) -> Self {
        Self { src, prefix: String::new() }
    }
    /// The sub-path `prefix.name`.
    pub fn pp(&self, name: impl std::fmt::Display) -> Self {
        let prefix = if self.prefix.is_empty() { name.to_string() } else { format!("{}.{name}", self.prefix) };
        Self { src: self.src, prefix }
    }
    /// The full key of `name` under this path.
    pub fn key(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.prefix)
        }
    }
    /// The tensor `name` of shape `shape`.
    pub fn get(&self, name: &str, shape: &[usize]) -> LoadResult<Tensor> {
        let t = self.src.tensor(&self.key(name), shape)?;
        t.to_device(&self.src.device()).with_file(self.src.origin())
    }
    /// The device the network is built on.
    pub fn device(&self) -> Device {
        self.src.device()
    }
    /// Whether `name` exists under this path.
    pub fn contains(&self, name: &str) -> bool {
        self.src.contains(&self.key(name))
    }
    /// See [`WeightSource::fixed_buffer`].
    pub fn fixed_buffer(&self, name: &str, shape: &[usize]) -> LoadResult<()> {
        self.src.fixed_buffer(&self.key(name), shape)
    }
    /// The origin of the weights, for error messages.
    pub fn origin(&self) -> &str {
        self.src.origin()
    }
}
