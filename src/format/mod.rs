//! The `.gddcm` token file: one tokenized image, self-describing and versioned
//! (SPEC 5 G3 for the header, SPEC 6 for the payload, SPEC 2.5–2.7 and 7 for the procedure).
//!
//! A decoder needs nothing but this file and the model weights it names: every discrete
//! decision (grid, Algorithm-2 schedule, init index) is stored as integers or exact floats
//! (SPEC 5 G2), so the decoder never has to round a float to pick an index.
//!
//! # Layout, version 1
//! All integers and floats are little-endian; floats are IEEE-754 bit patterns.
//!
//! | field | encoding |
//! |---|---|
//! | magic | 6 bytes `GDDCM\0` |
//! | version | u16 = 1 |
//! | model name | u8 length, then that many UTF-8 bytes (≤ 255) |
//! | weights SHA-256 | 32 bytes |
//! | family | u8: 0 DDPM, 1 EDM, 2 CM, 3 RF |
//! | parameterization | u8: 0 Eps, 1 EdmPrecond, 2 VpPrecond, 3 VePrecond, 4 Consistency, 5 Velocity |
//! | schedule | u8: 0 DdpmLinear (then u32 T), 1 EdmSigma, 2 EdmVp, 3 RfTau |
//! | codebook generator | u8: 1 Philox4x32-10 + Box–Muller f64 → f32 (SPEC 5) |
//! | seed | u64 |
//! | K | u32, `2..=2^24` |
//! | N | u32, `1..=2^20` |
//! | p | f64, `[0, 1)` |
//! | mixing | u8: 0 Σ-mix (eq. 21), 1 σ-mix (SPEC 2.2) |
//! | clip_x0 | u8: 0 or 1 |
//! | algorithm | u8: 1 Algorithm 1 (p > 0): f64 T_r, f64 T_t, f64 ρ; 2 Algorithm 2 (p = 0): f64 T_s, u32 count, count × (f64 Δ, u32 repeats) |
//! | init | u8: 1 I1; 2 I2: x_ref; 3 I3: x_ref, u32 K0, u32 j0 (SPEC 7) |
//! | x_ref (inside init) | u8: 0 zeros; 1 "dataset mean" (unnamed, refused by every decoder: it does not say which mean); 2 a reference image named by its values: 32 bytes SHA-256 of its `f32` values, little-endian, in the model's `[C, H, W]` layout ([`crate::reference`]) |
//! | final sampler | u8: 0 DDIM, 1 Heun, 2 one step, 3 Euler; u32 steps; f64 ρ (SPEC 2.7) |
//! | compute dtype | u8: 0 f32, 1 f16, 2 bf16 |
//! | image | u8 channels (1 or 3), u32 height, u32 width, f32 lo, f32 hi |
//! | fit (version 2) | u8 mode: 0 crop, 1 pad, 2 resize; u32 width, u32 height of the original image |
//! | fit (version 3) | u8 flag: 0 no fit, 1 the version-2 fit block follows |
//! | extensions (version 3 only) | u8 count (≥ 1), then count records `u8 tag, u16 length, length bytes`, tags strictly increasing |
//! | tokens | `⌈B/8⌉` bytes, `B = ⌈N·log2 K⌉`: the integer `Σ t_i K^i` little-endian, zero padded ([`packed_bits`]) |
//! | checksum | u32 CRC-32 (IEEE) of every byte before it |
//!
//! Version 2 is version 1 with the `fit` block after the image: the image was fitted to the
//! model's size from an original of another size ([`Fit`]), which the decoder restores. A file
//! without a fit is written as version 1, so files of earlier releases and files written now
//! without `--fit` are the same bytes.
//!
//! Version 3 is version 2 with the fit block behind a flag, followed by extension records: the
//! way to add a procedure option without another version. A reader refuses a record it does not
//! know (the procedure would not be fully described otherwise), so a record is only written when
//! its option differs from the version-1 behaviour, and a file without records is written as
//! version 1 or 2, byte for byte as before. Records:
//!
//! | tag | option | body |
//! |---|---|---|
//! | 1 | the atom rule: several atoms per step (SPEC 2.4a; payload: `N` steps of whole-bit fields, SPEC 6) | u8 kind (1 top-M, 2 pursuit), u8 M, and for the pursuit u8 C |
//! | 2 | eq. 14 scores only the image ([`ScoreRegion::Image`], SPEC 2.4) | u8 mode = 1: the image's `H × W` centred in the model's input; the background margin around a smaller image, `(input side − H)/2` on each side, is not scored |
//!
//! The encoding is canonical: [`TokenFile::from_bytes`] accepts exactly the byte strings that
//! [`TokenFile::to_bytes`] produces, so re-serialising a parsed file gives the same bytes.
//!
//! # The compact form
//! A file made with one of a model's shipped operating points is stored in the compact
//! container of [`compact`] instead (first byte `0xD2`/`0xD3`, 8 bytes of overhead): operating
//! point id, model fingerprint, the size when it is not the native one, the same token payload
//! and a CRC-16. [`Container::from_bytes`] reads either form; [`TokenFile::from_bytes`] reads
//! the full form only and refuses a compact file with an error naming its operating point.

#![warn(missing_docs)]

mod atoms;
pub mod compact;
mod error;
mod pack;

use std::fmt;
use std::io::Read;
use std::path::Path;

use serde::{Deserialize, Serialize};

pub use crate::atoms::AtomRule;
pub use compact::{CompactFile, Container, OperatingPoint};
pub use error::FormatError;
pub use pack::packed_bits;

/// Magic bytes that open every token file (SPEC 5 G3).
pub const MAGIC: [u8; 6] = *b"GDDCM\0";
/// The format version this crate writes and reads (SPEC 5 G3: "format version").
pub const FORMAT_VERSION: u16 = 1;
/// The version of a file that records a [`Fit`] (version 1 plus the fit block).
pub const FORMAT_VERSION_FIT: u16 = 2;
/// The version of a file with extension records (version 2 with an optional fit block, then
/// the records; see the module docs).
pub const FORMAT_VERSION_EXT: u16 = 3;
/// Extension record tag of the atom rule (several atoms per step, SPEC 2.4a).
pub const EXT_ATOM_RULE: u8 = 1;
/// Extension record tag of the score region ([`ScoreRegion`]).
pub const EXT_SCORE_REGION: u8 = 2;
/// Longest model name, in UTF-8 bytes (SPEC 5 G3, model identity).
pub const MAX_NAME_LEN: usize = 255;
/// Smallest codebook size K (one bit per token, SPEC 6).
pub const MIN_K: u32 = 2;
/// Largest codebook size K, `2^24` (SPEC 6).
pub const MAX_K: u32 = 1 << 24;
/// Largest token count N, `2^20` (SPEC 6: paper uses N = 300).
pub const MAX_N: u32 = 1 << 20;
/// Largest payload, in bits, when K is not a power of two: its base conversion is quadratic,
/// so the size is capped at `2^20` bits (128 KiB, e.g. N = 43 690 tokens at K = 2^24 − 1;
/// SPEC 6).
pub const MAX_MIXED_RADIX_BITS: u64 = 1 << 20;
/// Largest image height or width (SPEC 0).
pub const MAX_SIDE: u32 = 8192;
/// Largest number of image elements `C·H·W`, `2^28` (SPEC 0; implied by [`MAX_SIDE`] for
/// C ≤ 3, kept as an explicit check).
pub const MAX_ELEMENTS: u64 = 1 << 28;
/// Largest number of `(Δ, repeats)` entries in an Algorithm-2 schedule (SPEC 2.6).
pub const MAX_SCHEDULE_ENTRIES: u32 = 1 << 16;
/// Largest DDPM training-step count T in [`MarginalSchedule::DdpmLinear`] (SPEC 1.1).
pub const MAX_DDPM_STEPS: u32 = 1 << 20;
/// Largest step count of the final sampler (SPEC 2.7).
pub const MAX_SAMPLER_STEPS: u32 = 1 << 16;
/// Largest size of a valid token file, in bytes (SPEC 6; used by [`TokenFile::read`]): the
/// fixed fields (at most 192 bytes: an I3 init with a hashed x_ref, a version-3 fit block and
/// the score-region record included), the longest name, the longest Algorithm-2 schedule and
/// the largest payload (N = 2^20 tokens of 24 bits).
pub const MAX_FILE_BYTES: u64 =
    192 + MAX_NAME_LEN as u64 + 12 * MAX_SCHEDULE_ENTRIES as u64 + (MAX_N as u64 * 24).div_ceil(8);

/// Diffusion model family (SPEC 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Family {
    /// DDPM, integer time (SPEC 1.1).
    Ddpm,
    /// EDM (SPEC 1.2).
    Edm,
    /// Consistency model (SPEC 1.3).
    Cm,
    /// Rectified flow (SPEC 1.4).
    Rf,
}

/// What the network regresses and how it is preconditioned (SPEC 1, eq. 15).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Parameterization {
    /// ε-prediction (DDPM, SPEC 1.1).
    Eps,
    /// EDM preconditioning (SPEC 1.2).
    EdmPrecond,
    /// VP preconditioning (SPEC 1.2).
    VpPrecond,
    /// VE preconditioning (SPEC 1.2).
    VePrecond,
    /// Consistency-model output `f(x, σ)` (SPEC 1.3).
    Consistency,
    /// Velocity prediction (rectified flow, SPEC 1.4).
    Velocity,
}

/// The marginal / time schedule `s(t), Σ(t)` (SPEC 1 table).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MarginalSchedule {
    /// DDPM linear β schedule over `t` training steps (SPEC 1.1).
    DdpmLinear {
        /// Number of training steps T (1000 for google/ddpm-cifar10-32).
        t: u32,
    },
    /// EDM `s = 1, σ = t` (SPEC 1.2, also CM).
    EdmSigma,
    /// EDM's VP schedule (SPEC 1 table).
    EdmVp,
    /// Rectified flow in `τ = 1 − t_rf` (SPEC 1.4).
    RfTau,
}

/// Which pretrained model made the tokens (SPEC 5 G3: "a hash of the model weights plus its
/// parameterization").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelIdentity {
    /// Model name, UTF-8, at most [`MAX_NAME_LEN`] bytes (informative; the hash decides).
    pub name: String,
    /// SHA-256 of the weights file (hex string in JSON).
    #[serde(with = "hex32")]
    pub weights_sha256: [u8; 32],
    /// Model family.
    pub family: Family,
    /// Network parameterization / preconditioning.
    pub parameterization: Parameterization,
    /// Marginal / time schedule.
    pub schedule: MarginalSchedule,
}

/// Codebook generator (SPEC 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CodebookGenerator {
    /// Id 1: Philox4x32-10 with counter `(e>>2, j, i, stream)`, key = seed, Box–Muller in f64
    /// rounded to f32 (SPEC 5).
    Philox4x32BoxMuller,
}

impl CodebookGenerator {
    /// The generator's id in the file (SPEC 5 G3).
    pub fn id(self) -> u8 {
        match self {
            CodebookGenerator::Philox4x32BoxMuller => 1,
        }
    }
}

/// Noise mixing of the continuous step (SPEC 2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Mixing {
    /// Σ-mix, `A = Σ(t_ode)`, as eq. 21 is written (default).
    SigmaBig,
    /// σ-mix, `A = s(t_new)·σ(t_ode)` ("ODE step then true forward transition").
    SigmaSmall,
}

/// One interval of the Algorithm-2 schedule (SPEC 2.6).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ScheduleEntry {
    /// Step size Δ (an integer value for DDPM).
    pub delta: f64,
    /// How many tokens use this Δ.
    pub repeats: u32,
}

/// Algorithm-specific data (SPEC 2.5 for `p > 0`, SPEC 2.6–2.7 for `p = 0`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Algorithm {
    /// Algorithm 1 (`0 < p < 1`): grid `t_0 = T_r > … > t_N = T_t` (SPEC 2.5).
    Alg1 {
        /// Start time `T_r`.
        t_r: f64,
        /// End time `T_t`, `0 ≤ T_t < T_r`.
        t_t: f64,
        /// Grid ρ (7 for EDM/CM; unused for RF and DDPM grids).
        rho: f64,
    },
    /// Algorithm 2 (`p = 0`): fixed time `T_s` and the `(Δ, repeats)` schedule (SPEC 2.6–2.7),
    /// visited in the stored order; repeats sum to N.
    Alg2 {
        /// The fixed time `T_s`.
        t_s: f64,
        /// The intervals in visiting order.
        schedule: Vec<ScheduleEntry>,
    },
}

/// Reference image `x_ref` of the I2/I3 initial points (SPEC 7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum XRef {
    /// All zeros (mid-gray), the default (tag 0).
    Zeros,
    /// "The training-set mean image" without saying which (tag 1): kept so that such files
    /// parse, but no decoder can run them, since the bits of the mean are not pinned.
    DatasetMean,
    /// A reference image both sides hold, named by the SHA-256 of its `f32` values (tag 2; the
    /// bundled models ship their training-set mean, [`crate::reference`]).
    Image {
        /// SHA-256 of the values, little-endian, in the model's `[C, H, W]` layout.
        #[serde(with = "hex32")]
        sha256: [u8; 32],
    },
}

/// Which elements of the residual `x_tgt − x0h` eq. 14 scores (SPEC 2.4). The codewords are the
/// same either way; only the encoder's choice differs, so a decoder needs the option only to
/// describe the procedure fully (SPEC 5 G3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum ScoreRegion {
    /// Every element of the model's input, as the paper writes eq. 14 (no extension record).
    #[default]
    Input,
    /// Only the image: its `H × W` centred in the model's input, not the background margin of a
    /// smaller image (extension record 2, format version 3).
    Image,
}

impl ScoreRegion {
    /// Whether this is the default (for `skip_serializing_if`).
    pub fn is_input(&self) -> bool {
        *self == ScoreRegion::Input
    }
}

/// Initial point strategy (SPEC 7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum InitStrategy {
    /// I1: scaled noise `λ·z`.
    I1,
    /// I2: `s(T)·x_ref + Σ(T)·z`.
    I2 {
        /// The reference image.
        x_ref: XRef,
    },
    /// I3: closest of `K0` noises, index `j0` (costs `log2 K0` bits).
    I3 {
        /// The reference image.
        x_ref: XRef,
        /// Number of candidates, `1..=2^24`.
        k0: u32,
        /// The chosen candidate, `< K0`.
        j0: u32,
    },
}

/// Kind of the final deterministic sampler `SAMPLE` (SPEC 2.7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SamplerKind {
    /// DDIM with η = 0 (DDPM default).
    Ddim,
    /// Heun on a ρ grid (EDM default).
    Heun,
    /// One network call `f(x, T_s)` (CM default).
    OneStep,
    /// Euler in τ (RF default).
    Euler,
}

/// The final sampler `SAMPLE` of Algorithm 2 (SPEC 2.7); Algorithm 1 also records it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FinalSampler {
    /// Which sampler.
    pub kind: SamplerKind,
    /// Number of steps, `1..=2^16`.
    pub steps: u32,
    /// Grid ρ (> 0).
    pub rho: f64,
}

/// Dtype the network ran in (SPEC 5 G3 / G4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ComputeDtype {
    /// IEEE single precision.
    F32,
    /// IEEE half precision.
    F16,
    /// bfloat16.
    BF16,
}

/// Everything the decoder must replay (SPEC 5 G3).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Procedure {
    /// Codebook generator (SPEC 5).
    pub codebook_generator: CodebookGenerator,
    /// Codebook seed (SPEC 5).
    pub seed: u64,
    /// Codebook size K, `2..=2^24`.
    pub k: u32,
    /// Number of tokens N, `1..=2^20`.
    pub n: u32,
    /// `p ∈ [0, 1)` (SPEC 2.1).
    pub p: f64,
    /// Σ-mix or σ-mix (SPEC 2.2).
    pub mixing: Mixing,
    /// Whether `x0h` is clipped to the value range (SPEC 10 item 9).
    pub clip_x0: bool,
    /// Algorithm 1 or 2 data; must match `p`.
    pub algorithm: Algorithm,
    /// Initial point (SPEC 7).
    pub init: InitStrategy,
    /// Final sampler (SPEC 2.7).
    pub sampler: FinalSampler,
    /// Compute dtype.
    pub dtype: ComputeDtype,
    /// Atoms per step (SPEC 2.4a); one unless an extension record says otherwise (and then
    /// left out of JSON, so descriptions of one-atom procedures read as before).
    #[serde(default, skip_serializing_if = "AtomRule::is_single")]
    pub atoms: AtomRule,
    /// Which elements eq. 14 scores (SPEC 2.4; a version-3 extension record when not the
    /// default).
    #[serde(default, skip_serializing_if = "ScoreRegion::is_input")]
    pub score_region: ScoreRegion,
}

/// Shape and value range of the image (SPEC 0).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ImageSpec {
    /// 1 or 3.
    pub channels: u8,
    /// `1..=8192`.
    pub height: u32,
    /// `1..=8192`.
    pub width: u32,
    /// Pixel value of 0 in u8 (−1 for every reference checkpoint).
    pub lo: f32,
    /// Pixel value of 255 in u8 (1 for every reference checkpoint).
    pub hi: f32,
}

/// How an image of another size than the model's was made to fit it (`gddcm encode --fit`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FitMode {
    /// Scaled so the shorter side fills the model's size, the centre cut out.
    Crop,
    /// Scaled so the longer side fills the model's size, the rest filled with the background.
    Pad,
    /// Scaled to the model's size, aspect ratio not kept.
    Resize,
}

/// The original size of a fitted image and how it was fitted (format version 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fit {
    /// How the image was fitted.
    pub mode: FitMode,
    /// Width of the original image, `1..=MAX_SIDE`.
    pub width: u32,
    /// Height of the original image, `1..=MAX_SIDE`.
    pub height: u32,
}

/// One tokenized image: model identity, procedure, image spec and the `N` tokens
/// (SPEC 5 G3, SPEC 6).
///
/// ```
/// use gddcm::format::*;
///
/// // The DDCM baseline of SPEC 4: DDPM, p = ½, T_r = 999, T_t = 0, N = 300, K = 1000.
/// let file = TokenFile {
///     model: ModelIdentity {
///         name: "google/ddpm-cifar10-32".into(),
///         weights_sha256: [0u8; 32], // sha2::Sha256::digest(weights) in real use
///         family: Family::Ddpm,
///         parameterization: Parameterization::Eps,
///         schedule: MarginalSchedule::DdpmLinear { t: 1000 },
///     },
///     procedure: Procedure {
///         codebook_generator: CodebookGenerator::Philox4x32BoxMuller,
///         seed: 0x0123_4567_89ab_cdef,
///         k: 1000,
///         n: 300,
///         p: 0.5,
///         mixing: Mixing::SigmaBig,
///         clip_x0: true,
///         algorithm: Algorithm::Alg1 { t_r: 999.0, t_t: 0.0, rho: 1.0 },
///         init: InitStrategy::I1,
///         sampler: FinalSampler { kind: SamplerKind::Ddim, steps: 1, rho: 1.0 },
///         dtype: ComputeDtype::F32,
///         atoms: AtomRule::Single,
///         score_region: ScoreRegion::Input,
///     },
///     image: ImageSpec { channels: 3, height: 32, width: 32, lo: -1.0, hi: 1.0 },
///     tokens: (0..300).map(|i| (i * 7) % 1000).collect(),
///     fit: None,
/// };
/// let bytes = file.to_bytes()?;
/// assert_eq!(file.payload_bits(), 2990); // ⌈300·log2 1000⌉, mixed radix
/// assert_eq!(bytes.len() as u64 * 8, file.total_bits());
/// assert_eq!(TokenFile::from_bytes(&bytes)?, file);
/// println!("{file}"); // the `gddcm inspect` summary
/// # Ok::<(), FormatError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenFile {
    /// The model (SPEC 5 G3).
    pub model: ModelIdentity,
    /// The procedure (SPEC 5 G3).
    pub procedure: Procedure,
    /// The image.
    pub image: ImageSpec,
    /// `N` indices, each `< K`, in token-counter order `i = 0..N−1` (SPEC 5).
    pub tokens: Vec<u32>,
    /// The original size, when the image was fitted to the model's (format version 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fit: Option<Fit>,
}

mod hex32 {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::hex(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let s = String::deserialize(d)?;
        let bytes = s.as_bytes();
        if bytes.len() != 64 {
            return Err(serde::de::Error::custom(format!("expected 64 hex digits, found {} characters", bytes.len())));
        }
        let digit = |c: u8| -> Result<u8, D::Error> {
            (c as char)
                .to_digit(16)
                .map(|d| d as u8)
                .ok_or_else(|| serde::de::Error::custom(format!("invalid hex digit {:?}", c as char)))
        };
        let mut out = [0u8; 32];
        for (i, o) in out.iter_mut().enumerate() {
            *o = (digit(bytes[2 * i])? << 4) | digit(bytes[2 * i + 1])?;
        }
        Ok(out)
    }
}

/// Lower-case hex of some bytes.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The error a decoder reports when the loaded model is not the one a token file needs
/// (SPEC 5 G3): names both models and the first 16 hex digits of both weight hashes.
pub fn model_mismatch_error(
    needed_name: &str,
    needed_sha256: &[u8; 32],
    found_name: &str,
    found_sha256: &[u8; 32],
) -> FormatError {
    FormatError::ModelMismatch {
        needed_name: needed_name.to_owned(),
        needed_sha: hex(&needed_sha256[..8]),
        found_name: found_name.to_owned(),
        found_sha: hex(&found_sha256[..8]),
    }
}

fn out_of_range(field: &'static str, expected: impl Into<String>, found: impl fmt::Display) -> FormatError {
    FormatError::OutOfRange { field, expected: expected.into(), found: found.to_string() }
}

fn check_finite(field: &'static str, v: f64) -> Result<(), FormatError> {
    if v.is_finite() {
        Ok(())
    } else {
        Err(out_of_range(field, "a finite number", v))
    }
}

fn check_positive(field: &'static str, v: f64) -> Result<(), FormatError> {
    if v.is_finite() && v > 0.0 {
        Ok(())
    } else {
        Err(out_of_range(field, "a finite number > 0", v))
    }
}

fn check_k(k: u32) -> Result<(), FormatError> {
    if (MIN_K..=MAX_K).contains(&k) {
        Ok(())
    } else {
        Err(out_of_range("procedure.k", format!("{MIN_K}..={MAX_K}"), k))
    }
}

fn check_n(n: u32) -> Result<(), FormatError> {
    if (1..=MAX_N).contains(&n) {
        Ok(())
    } else {
        Err(out_of_range("procedure.n", format!("1..={MAX_N}"), n))
    }
}

/// The atom rule against K (SPEC 2.4a limits), and its payload against the largest one-atom
/// payload (`2^20` tokens of 24 bits), which bounds every file ([`MAX_FILE_BYTES`]).
fn check_atoms(rule: AtomRule, k: u32, n: u32) -> Result<(), FormatError> {
    rule.check(k).map_err(|why| out_of_range("procedure.atoms", "a rule within its limits", why))?;
    let bits = atoms::payload_bits(rule, k, n);
    let max = u64::from(MAX_N) * 24;
    if rule != AtomRule::Single && bits > max {
        return Err(out_of_range(
            "procedure.n",
            format!("a payload of at most {max} bits"),
            format!("N = {n} steps of {rule} ({bits} bits)"),
        ));
    }
    Ok(())
}

impl Procedure {
    /// Bits of the token payload: `⌈N·log2 K⌉` with one atom per step (SPEC 6), `N` whole
    /// steps of [`AtomRule::step_bits`] with several (SPEC 2.4a).
    pub fn payload_bits(&self) -> u64 {
        match self.atoms {
            AtomRule::Single => packed_bits(self.k, self.n),
            rule => atoms::payload_bits(rule, self.k, self.n),
        }
    }

    /// The payload of validated `tokens`.
    fn pack(&self, tokens: &[u32]) -> Vec<u8> {
        match self.atoms {
            AtomRule::Single => pack::pack(tokens, self.k, self.payload_bits()),
            rule => atoms::pack(rule, self.k, tokens),
        }
    }

    /// The tokens of a payload of exactly [`pack::bytes_for_bits`] of [`Procedure::payload_bits`]
    /// bytes, checked as [`TokenFile::validate`] checks them.
    fn unpack(&self, payload: &[u8]) -> Result<Vec<u32>, FormatError> {
        let bits = self.payload_bits();
        match self.atoms {
            AtomRule::Single => pack::unpack(payload, self.k, self.n, bits),
            rule => {
                pack::check_padding(payload, bits)?;
                atoms::unpack(rule, self.k, self.n, payload)
            }
        }
    }
}

/// K and N together: the mixed-radix payload cap.
fn check_payload_size(k: u32, n: u32) -> Result<u64, FormatError> {
    let bits = packed_bits(k, n);
    if !k.is_power_of_two() && bits > MAX_MIXED_RADIX_BITS {
        return Err(out_of_range(
            "procedure.n",
            format!("N·log2 K ≤ {MAX_MIXED_RADIX_BITS} bits when K is not a power of two (K = {k})"),
            format!("N = {n} ({bits} bits)"),
        ));
    }
    Ok(bits)
}

fn check_p(p: f64) -> Result<(), FormatError> {
    if (0.0..1.0).contains(&p) {
        Ok(())
    } else {
        Err(out_of_range("procedure.p", "a number in [0, 1)", p))
    }
}

fn check_ddpm_steps(t: u32) -> Result<(), FormatError> {
    if (1..=MAX_DDPM_STEPS).contains(&t) {
        Ok(())
    } else {
        Err(out_of_range("model.schedule.t", format!("1..={MAX_DDPM_STEPS}"), t))
    }
}

fn check_alg1(t_r: f64, t_t: f64, rho: f64) -> Result<(), FormatError> {
    check_finite("procedure.algorithm.t_r", t_r)?;
    if !(t_t.is_finite() && t_t >= 0.0 && t_t < t_r) {
        return Err(out_of_range("procedure.algorithm.t_t", format!("a number in [0, T_r = {t_r})"), t_t));
    }
    check_positive("procedure.algorithm.rho", rho)
}

fn check_schedule_len(len: u32) -> Result<(), FormatError> {
    if len <= MAX_SCHEDULE_ENTRIES {
        Ok(())
    } else {
        Err(out_of_range("procedure.algorithm.schedule.len", format!("0..={MAX_SCHEDULE_ENTRIES} entries"), len))
    }
}

fn check_schedule(n: u32, schedule: &[ScheduleEntry]) -> Result<(), FormatError> {
    check_schedule_len(u32::try_from(schedule.len()).unwrap_or(u32::MAX))?;
    for e in schedule {
        check_positive("procedure.algorithm.schedule.delta", e.delta)?;
    }
    let sum: u64 = schedule.iter().map(|e| u64::from(e.repeats)).sum();
    if sum != u64::from(n) {
        return Err(FormatError::ScheduleSum { n, sum });
    }
    Ok(())
}

fn check_algorithm_matches_p(p: f64, is_alg1: bool) -> Result<(), FormatError> {
    match (p > 0.0, is_alg1) {
        (true, true) | (false, false) => Ok(()),
        (true, false) => Err(FormatError::Inconsistent {
            field: "procedure.algorithm",
            reason: format!("p = {p} > 0 needs Algorithm 1 data, found Algorithm 2 data"),
        }),
        (false, true) => Err(FormatError::Inconsistent {
            field: "procedure.algorithm",
            reason: "p = 0 needs Algorithm 2 data, found Algorithm 1 data".to_owned(),
        }),
    }
}

fn check_init(init: &InitStrategy) -> Result<(), FormatError> {
    if let InitStrategy::I3 { k0, j0, .. } = *init {
        if !(1..=MAX_K).contains(&k0) {
            return Err(out_of_range("procedure.init.k0", format!("1..={MAX_K}"), k0));
        }
        if j0 >= k0 {
            return Err(out_of_range("procedure.init.j0", format!("< K0 = {k0}"), j0));
        }
    }
    Ok(())
}

fn check_sampler(s: &FinalSampler) -> Result<(), FormatError> {
    if !(1..=MAX_SAMPLER_STEPS).contains(&s.steps) {
        return Err(out_of_range("procedure.sampler.steps", format!("1..={MAX_SAMPLER_STEPS}"), s.steps));
    }
    check_positive("procedure.sampler.rho", s.rho)
}

fn check_side(field: &'static str, v: u32) -> Result<(), FormatError> {
    if (1..=MAX_SIDE).contains(&v) {
        Ok(())
    } else {
        Err(out_of_range(field, format!("1..={MAX_SIDE}"), v))
    }
}

fn check_image(img: &ImageSpec) -> Result<(), FormatError> {
    if img.channels != 1 && img.channels != 3 {
        return Err(out_of_range("image.channels", "1 or 3", img.channels));
    }
    check_side("image.height", img.height)?;
    check_side("image.width", img.width)?;
    let elements = u64::from(img.channels) * u64::from(img.height) * u64::from(img.width);
    if elements > MAX_ELEMENTS {
        return Err(out_of_range(
            "image.shape",
            format!("C·H·W ≤ {MAX_ELEMENTS}"),
            format!("{}×{}×{} = {elements}", img.channels, img.height, img.width),
        ));
    }
    if !img.lo.is_finite() {
        return Err(out_of_range("image.lo", "a finite number", img.lo));
    }
    if !(img.hi.is_finite() && img.hi > img.lo) {
        return Err(out_of_range("image.hi", format!("a finite number > lo = {}", img.lo), img.hi));
    }
    Ok(())
}

impl TokenFile {
    /// Checks every field against the ranges of the format (values deserialised from JSON are
    /// only checked here, in `to_bytes` and in `write_atomic`; these are the same checks
    /// [`TokenFile::from_bytes`] applies), including `tokens.len() == N`, every token `< K` and
    /// the Algorithm-2 repeats summing to N (SPEC 2.6, 5 G3, 6).
    pub fn validate(&self) -> Result<(), FormatError> {
        let m = &self.model;
        if m.name.len() > MAX_NAME_LEN {
            return Err(out_of_range(
                "model.name",
                format!("at most {MAX_NAME_LEN} UTF-8 bytes"),
                format!("{} bytes", m.name.len()),
            ));
        }
        if let MarginalSchedule::DdpmLinear { t } = m.schedule {
            check_ddpm_steps(t)?;
        }
        let pr = &self.procedure;
        check_k(pr.k)?;
        check_n(pr.n)?;
        check_atoms(pr.atoms, pr.k, pr.n)?;
        check_payload_size(pr.k, pr.n)?;
        check_p(pr.p)?;
        match &pr.algorithm {
            Algorithm::Alg1 { t_r, t_t, rho } => {
                check_algorithm_matches_p(pr.p, true)?;
                check_alg1(*t_r, *t_t, *rho)?;
            }
            Algorithm::Alg2 { t_s, schedule } => {
                check_algorithm_matches_p(pr.p, false)?;
                check_positive("procedure.algorithm.t_s", *t_s)?;
                check_schedule(pr.n, schedule)?;
            }
        }
        check_init(&pr.init)?;
        check_sampler(&pr.sampler)?;
        check_image(&self.image)?;
        if let Some(fit) = &self.fit {
            check_side("fit.width", fit.width)?;
            check_side("fit.height", fit.height)?;
        }
        let per = pr.atoms.symbols_per_step();
        if self.tokens.len() != pr.n as usize * per {
            let each = if per > 1 { format!(" of {per} symbols ({})", pr.atoms) } else { String::new() };
            return Err(FormatError::Inconsistent {
                field: "tokens",
                reason: format!("N = {} steps{each} but {} symbols are given", pr.n, self.tokens.len()),
            });
        }
        if pr.atoms == AtomRule::Single {
            if let Some((index, &t)) = self.tokens.iter().enumerate().find(|(_, &t)| t >= pr.k) {
                return Err(FormatError::TokenOutOfRange { index, value: u64::from(t), k: pr.k });
            }
        } else {
            for (step, sym) in self.tokens.chunks_exact(per).enumerate() {
                pr.atoms.check_step(pr.k, sym).map_err(|why| FormatError::Inconsistent {
                    field: "tokens",
                    reason: format!("step {step}: {why}"),
                })?;
            }
        }
        Ok(())
    }

    /// Bits of the token payload: `⌈N·log2 K⌉` (SPEC 6), not counting header, padding to a
    /// whole byte, or the `log2 K0` of an I3 init index.
    pub fn payload_bits(&self) -> u64 {
        self.procedure.payload_bits()
    }

    /// Bits of the I3 init index `j0`, `⌈log2 K0⌉` (SPEC 6, SPEC 7), or 0 for I1/I2. It is
    /// stored in the header as a u32.
    pub fn init_index_bits(&self) -> u64 {
        match self.procedure.init {
            InitStrategy::I3 { k0, .. } if k0 > 1 => u64::from(32 - (k0 - 1).leading_zeros()),
            _ => 0,
        }
    }

    /// Bytes of everything before the payload.
    pub fn header_bytes(&self) -> u64 {
        let mut w = Vec::new();
        self.write_header(&mut w);
        w.len() as u64
    }

    /// Bits of the whole file: header, byte-padded payload and checksum (SPEC 6:
    /// `bits/image = payload + header`).
    pub fn total_bits(&self) -> u64 {
        8 * (self.header_bytes() + self.payload_bits().div_ceil(8) + 4)
    }

    /// Payload bits per pixel (`H·W`, SPEC 6).
    pub fn payload_bpp(&self) -> f64 {
        self.payload_bits() as f64 / self.pixels()
    }

    /// The rate as SPEC 6 counts it, in bits per pixel: the token payload plus the I3 init
    /// index when there is one (`(⌈N·log2 K⌉ + ⌈log2 K0⌉) / (H·W)`), without the header,
    /// which a fixed profile reduces to an id.
    pub fn rate_bpp(&self) -> f64 {
        (self.payload_bits() + self.init_index_bits()) as f64 / self.pixels()
    }

    /// File bits per pixel (`H·W`, SPEC 6).
    pub fn total_bpp(&self) -> f64 {
        self.total_bits() as f64 / self.pixels()
    }

    /// Bits per pixel (`H·W`) of a stored file of `file_bytes` bytes, in whichever form it was
    /// written (compact or full): the rate that counts (SPEC 6, issue 17).
    pub fn file_bpp(&self, file_bytes: u64) -> f64 {
        (8 * file_bytes) as f64 / self.pixels()
    }

    fn pixels(&self) -> f64 {
        (f64::from(self.image.height) * f64::from(self.image.width)).max(1.0)
    }

    /// Errors with [`FormatError::ModelMismatch`] unless `sha256` is the weights hash the file
    /// needs (SPEC 5 G3). The name is only reported: the hash identifies the model.
    pub fn check_model(&self, name: &str, sha256: &[u8; 32]) -> Result<(), FormatError> {
        if &self.model.weights_sha256 == sha256 {
            Ok(())
        } else {
            Err(model_mismatch_error(&self.model.name, &self.model.weights_sha256, name, sha256))
        }
    }

    /// The extension records the procedure needs, by increasing tag (format version 3): one
    /// per option that differs from the version-1 behaviour.
    fn extensions(&self) -> Vec<(u8, Vec<u8>)> {
        let mut ext = Vec::new();
        if let Some(body) = atoms::record(self.procedure.atoms) {
            ext.push((EXT_ATOM_RULE, body));
        }
        if self.procedure.score_region == ScoreRegion::Image {
            ext.push((EXT_SCORE_REGION, vec![1]));
        }
        ext
    }

    /// The format version this file is written in: 3 with extension records, else 2 with a
    /// fit, else 1 (so files without the newer options keep their earlier bytes).
    pub fn version(&self) -> u16 {
        if !self.extensions().is_empty() {
            FORMAT_VERSION_EXT
        } else if self.fit.is_some() {
            FORMAT_VERSION_FIT
        } else {
            FORMAT_VERSION
        }
    }

    fn write_header(&self, w: &mut Vec<u8>) {
        let m = &self.model;
        w.extend_from_slice(&MAGIC);
        let version = self.version();
        w.extend_from_slice(&version.to_le_bytes());
        let name = m.name.as_bytes();
        w.push(name.len().min(MAX_NAME_LEN) as u8);
        w.extend_from_slice(&name[..name.len().min(MAX_NAME_LEN)]);
        w.extend_from_slice(&m.weights_sha256);
        w.push(match m.family {
            Family::Ddpm => 0,
            Family::Edm => 1,
            Family::Cm => 2,
            Family::Rf => 3,
        });
        w.push(match m.parameterization {
            Parameterization::Eps => 0,
            Parameterization::EdmPrecond => 1,
            Parameterization::VpPrecond => 2,
            Parameterization::VePrecond => 3,
            Parameterization::Consistency => 4,
            Parameterization::Velocity => 5,
        });
        match m.schedule {
            MarginalSchedule::DdpmLinear { t } => {
                w.push(0);
                w.extend_from_slice(&t.to_le_bytes());
            }
            MarginalSchedule::EdmSigma => w.push(1),
            MarginalSchedule::EdmVp => w.push(2),
            MarginalSchedule::RfTau => w.push(3),
        }
        let pr = &self.procedure;
        w.push(pr.codebook_generator.id());
        w.extend_from_slice(&pr.seed.to_le_bytes());
        w.extend_from_slice(&pr.k.to_le_bytes());
        w.extend_from_slice(&pr.n.to_le_bytes());
        w.extend_from_slice(&pr.p.to_le_bytes());
        w.push(match pr.mixing {
            Mixing::SigmaBig => 0,
            Mixing::SigmaSmall => 1,
        });
        w.push(u8::from(pr.clip_x0));
        match &pr.algorithm {
            Algorithm::Alg1 { t_r, t_t, rho } => {
                w.push(1);
                for v in [t_r, t_t, rho] {
                    w.extend_from_slice(&v.to_le_bytes());
                }
            }
            Algorithm::Alg2 { t_s, schedule } => {
                w.push(2);
                w.extend_from_slice(&t_s.to_le_bytes());
                w.extend_from_slice(&(schedule.len() as u32).to_le_bytes());
                for e in schedule {
                    w.extend_from_slice(&e.delta.to_le_bytes());
                    w.extend_from_slice(&e.repeats.to_le_bytes());
                }
            }
        }
        let write_xref = |w: &mut Vec<u8>, x: XRef| match x {
            XRef::Zeros => w.push(0),
            XRef::DatasetMean => w.push(1),
            XRef::Image { sha256 } => {
                w.push(2);
                w.extend_from_slice(&sha256);
            }
        };
        match pr.init {
            InitStrategy::I1 => w.push(1),
            InitStrategy::I2 { x_ref } => {
                w.push(2);
                write_xref(w, x_ref);
            }
            InitStrategy::I3 { x_ref, k0, j0 } => {
                w.push(3);
                write_xref(w, x_ref);
                w.extend_from_slice(&k0.to_le_bytes());
                w.extend_from_slice(&j0.to_le_bytes());
            }
        }
        w.push(match pr.sampler.kind {
            SamplerKind::Ddim => 0,
            SamplerKind::Heun => 1,
            SamplerKind::OneStep => 2,
            SamplerKind::Euler => 3,
        });
        w.extend_from_slice(&pr.sampler.steps.to_le_bytes());
        w.extend_from_slice(&pr.sampler.rho.to_le_bytes());
        w.push(match pr.dtype {
            ComputeDtype::F32 => 0,
            ComputeDtype::F16 => 1,
            ComputeDtype::BF16 => 2,
        });
        let img = &self.image;
        w.push(img.channels);
        w.extend_from_slice(&img.height.to_le_bytes());
        w.extend_from_slice(&img.width.to_le_bytes());
        w.extend_from_slice(&img.lo.to_le_bytes());
        w.extend_from_slice(&img.hi.to_le_bytes());
        if version == FORMAT_VERSION_EXT {
            w.push(u8::from(self.fit.is_some()));
        }
        if let Some(fit) = &self.fit {
            w.push(match fit.mode {
                FitMode::Crop => 0,
                FitMode::Pad => 1,
                FitMode::Resize => 2,
            });
            w.extend_from_slice(&fit.width.to_le_bytes());
            w.extend_from_slice(&fit.height.to_le_bytes());
        }
        if version == FORMAT_VERSION_EXT {
            let ext = self.extensions();
            w.push(ext.len() as u8);
            for (tag, body) in ext {
                w.push(tag);
                w.extend_from_slice(&(body.len() as u16).to_le_bytes());
                w.extend_from_slice(&body);
            }
        }
    }

    /// Serialises the file (layout in the module docs; SPEC 5 G3, SPEC 6). Validates first
    /// ([`TokenFile::validate`]), so the result always parses back to `self`.
    pub fn to_bytes(&self) -> Result<Vec<u8>, FormatError> {
        self.validate()?;
        let bits = self.payload_bits();
        let mut w = Vec::with_capacity(160 + self.model.name.len() + bits.div_ceil(8) as usize);
        self.write_header(&mut w);
        w.extend_from_slice(&self.procedure.pack(&self.tokens));
        let crc = crc32fast::hash(&w);
        w.extend_from_slice(&crc.to_le_bytes());
        Ok(w)
    }

    /// Parses and validates a token file (SPEC 5 G3, SPEC 6).
    ///
    /// Never panics. Lengths are checked against the remaining bytes before anything is
    /// allocated, so memory stays proportional to the input (at most 32 bytes of tokens per
    /// payload byte, at K = 2). Errors name the field: bad magic, unsupported version,
    /// truncation, invalid enum tags, out-of-range values, checksum mismatch (checked after
    /// the header is parsed, before the payload is decoded), bad token payload, trailing bytes,
    /// and a compact file ([`compact`]), which needs its operating point to be read.
    pub fn from_bytes(bytes: &[u8]) -> Result<TokenFile, FormatError> {
        if compact::is_compact(bytes) {
            let c = CompactFile::from_bytes(bytes)?;
            return Err(FormatError::CompactNeedsOperatingPoint { point: c.point, fingerprint: c.fingerprint_hex() });
        }
        let mut r = Reader { buf: bytes, pos: 0 };
        let magic: [u8; 6] = r.array("magic")?;
        if magic != MAGIC {
            return Err(FormatError::BadMagic { found: magic, expected: MAGIC });
        }
        let version = r.u16("version")?;
        if !(FORMAT_VERSION..=FORMAT_VERSION_EXT).contains(&version) {
            return Err(FormatError::UnsupportedVersion { found: version, supported: FORMAT_VERSION_EXT });
        }

        // Model identity.
        let name_len = r.u8("model.name.len")?;
        let name_bytes = r.take(u64::from(name_len), "model.name")?;
        let name = std::str::from_utf8(name_bytes)
            .map_err(|source| FormatError::InvalidUtf8 { field: "model.name", source })?
            .to_owned();
        let weights_sha256: [u8; 32] = r.array("model.weights_sha256")?;
        let family = match r.u8("model.family")? {
            0 => Family::Ddpm,
            1 => Family::Edm,
            2 => Family::Cm,
            3 => Family::Rf,
            tag => return Err(invalid_tag("model.family", tag, "0 (DDPM), 1 (EDM), 2 (CM), 3 (RF)")),
        };
        let parameterization = match r.u8("model.parameterization")? {
            0 => Parameterization::Eps,
            1 => Parameterization::EdmPrecond,
            2 => Parameterization::VpPrecond,
            3 => Parameterization::VePrecond,
            4 => Parameterization::Consistency,
            5 => Parameterization::Velocity,
            tag => {
                return Err(invalid_tag(
                    "model.parameterization",
                    tag,
                    "0 (Eps), 1 (EdmPrecond), 2 (VpPrecond), 3 (VePrecond), 4 (Consistency), 5 (Velocity)",
                ))
            }
        };
        let schedule = match r.u8("model.schedule")? {
            0 => {
                let t = r.u32("model.schedule.t")?;
                check_ddpm_steps(t)?;
                MarginalSchedule::DdpmLinear { t }
            }
            1 => MarginalSchedule::EdmSigma,
            2 => MarginalSchedule::EdmVp,
            3 => MarginalSchedule::RfTau,
            tag => {
                return Err(invalid_tag("model.schedule", tag, "0 (DdpmLinear), 1 (EdmSigma), 2 (EdmVp), 3 (RfTau)"))
            }
        };
        let model = ModelIdentity { name, weights_sha256, family, parameterization, schedule };

        // Procedure.
        let codebook_generator = match r.u8("procedure.codebook_generator")? {
            1 => CodebookGenerator::Philox4x32BoxMuller,
            tag => return Err(invalid_tag("procedure.codebook_generator", tag, "1 (Philox4x32-10 + Box–Muller)")),
        };
        let seed = r.u64("procedure.seed")?;
        let k = r.u32("procedure.k")?;
        check_k(k)?;
        let n = r.u32("procedure.n")?;
        check_n(n)?;
        check_payload_size(k, n)?;
        let p = r.f64("procedure.p")?;
        check_p(p)?;
        let mixing = match r.u8("procedure.mixing")? {
            0 => Mixing::SigmaBig,
            1 => Mixing::SigmaSmall,
            tag => return Err(invalid_tag("procedure.mixing", tag, "0 (Σ-mix), 1 (σ-mix)")),
        };
        let clip_x0 = match r.u8("procedure.clip_x0")? {
            0 => false,
            1 => true,
            tag => return Err(invalid_tag("procedure.clip_x0", tag, "0 (false), 1 (true)")),
        };
        let algorithm = match r.u8("procedure.algorithm")? {
            1 => {
                check_algorithm_matches_p(p, true)?;
                let t_r = r.f64("procedure.algorithm.t_r")?;
                let t_t = r.f64("procedure.algorithm.t_t")?;
                let rho = r.f64("procedure.algorithm.rho")?;
                check_alg1(t_r, t_t, rho)?;
                Algorithm::Alg1 { t_r, t_t, rho }
            }
            2 => {
                check_algorithm_matches_p(p, false)?;
                let t_s = r.f64("procedure.algorithm.t_s")?;
                check_positive("procedure.algorithm.t_s", t_s)?;
                let len = r.u32("procedure.algorithm.schedule.len")?;
                check_schedule_len(len)?;
                // Check the bytes are there before allocating.
                r.need(12 * u64::from(len), "procedure.algorithm.schedule")?;
                let mut schedule = Vec::with_capacity(len as usize);
                for _ in 0..len {
                    let delta = r.f64("procedure.algorithm.schedule.delta")?;
                    let repeats = r.u32("procedure.algorithm.schedule.repeats")?;
                    schedule.push(ScheduleEntry { delta, repeats });
                }
                check_schedule(n, &schedule)?;
                Algorithm::Alg2 { t_s, schedule }
            }
            tag => {
                return Err(invalid_tag("procedure.algorithm", tag, "1 (Algorithm 1, p > 0), 2 (Algorithm 2, p = 0)"))
            }
        };
        let xref = |r: &mut Reader| -> Result<XRef, FormatError> {
            match r.u8("procedure.init.x_ref")? {
                0 => Ok(XRef::Zeros),
                1 => Ok(XRef::DatasetMean),
                2 => Ok(XRef::Image { sha256: r.array("procedure.init.x_ref.sha256")? }),
                tag => Err(invalid_tag(
                    "procedure.init.x_ref",
                    tag,
                    "0 (zeros), 1 (dataset mean, unnamed), 2 (reference image named by SHA-256)",
                )),
            }
        };
        let init = match r.u8("procedure.init")? {
            1 => InitStrategy::I1,
            2 => InitStrategy::I2 { x_ref: xref(&mut r)? },
            3 => {
                let x_ref = xref(&mut r)?;
                let k0 = r.u32("procedure.init.k0")?;
                let j0 = r.u32("procedure.init.j0")?;
                InitStrategy::I3 { x_ref, k0, j0 }
            }
            tag => return Err(invalid_tag("procedure.init", tag, "1 (I1), 2 (I2), 3 (I3)")),
        };
        check_init(&init)?;
        let kind = match r.u8("procedure.sampler.kind")? {
            0 => SamplerKind::Ddim,
            1 => SamplerKind::Heun,
            2 => SamplerKind::OneStep,
            3 => SamplerKind::Euler,
            tag => {
                return Err(invalid_tag("procedure.sampler.kind", tag, "0 (DDIM), 1 (Heun), 2 (one step), 3 (Euler)"))
            }
        };
        let steps = r.u32("procedure.sampler.steps")?;
        let rho = r.f64("procedure.sampler.rho")?;
        let sampler = FinalSampler { kind, steps, rho };
        check_sampler(&sampler)?;
        let dtype = match r.u8("procedure.dtype")? {
            0 => ComputeDtype::F32,
            1 => ComputeDtype::F16,
            2 => ComputeDtype::BF16,
            tag => return Err(invalid_tag("procedure.dtype", tag, "0 (f32), 1 (f16), 2 (bf16)")),
        };
        // The score region comes from an extension record (version 3), read after the image.
        let mut procedure = Procedure {
            codebook_generator,
            seed,
            k,
            n,
            p,
            mixing,
            clip_x0,
            algorithm,
            init,
            sampler,
            dtype,
            atoms: AtomRule::Single,
            score_region: ScoreRegion::Input,
        };

        // Image.
        let image = ImageSpec {
            channels: r.u8("image.channels")?,
            height: r.u32("image.height")?,
            width: r.u32("image.width")?,
            lo: r.f32("image.lo")?,
            hi: r.f32("image.hi")?,
        };
        check_image(&image)?;
        let has_fit = match version {
            FORMAT_VERSION_FIT => true,
            FORMAT_VERSION_EXT => match r.u8("fit.present")? {
                0 => false,
                1 => true,
                tag => return Err(invalid_tag("fit.present", tag, "0 (no fit block), 1 (a fit block follows)")),
            },
            _ => false,
        };
        let fit = if has_fit {
            let mode = match r.u8("fit.mode")? {
                0 => FitMode::Crop,
                1 => FitMode::Pad,
                2 => FitMode::Resize,
                tag => return Err(invalid_tag("fit.mode", tag, "0 (crop), 1 (pad), 2 (resize)")),
            };
            let fit = Fit { mode, width: r.u32("fit.width")?, height: r.u32("fit.height")? };
            check_side("fit.width", fit.width)?;
            check_side("fit.height", fit.height)?;
            Some(fit)
        } else {
            None
        };
        if version == FORMAT_VERSION_EXT {
            read_extensions(&mut r, &mut procedure)?;
        }

        // Payload, checksum, nothing else.
        let bits = procedure.payload_bits();
        let payload = r.take(pack::bytes_for_bits(bits), "tokens")?;
        let body_len = r.pos;
        let stored = r.u32("checksum")?;
        let computed = crc32fast::hash(&bytes[..body_len]);
        if stored != computed {
            return Err(FormatError::ChecksumMismatch { stored, computed });
        }
        if r.pos != bytes.len() {
            return Err(FormatError::TrailingBytes { offset: r.pos, count: bytes.len() - r.pos });
        }
        let tokens = procedure.unpack(payload)?;
        Ok(TokenFile { model, procedure, image, tokens, fit })
    }

    /// Writes the file atomically: to a temporary file in the same directory, synced, then
    /// renamed over `path` (mode 0644 on Unix), so readers never see a partial file (SPEC 5 G3).
    /// Validates first; an invalid file is not written.
    pub fn write_atomic(&self, path: impl AsRef<Path>) -> Result<(), FormatError> {
        let path = path.as_ref();
        let bytes = self.to_bytes()?;
        crate::atomic::write(path, &bytes).map_err(|source| FormatError::Io { path: path.to_owned(), source })
    }

    /// Reads and parses a token file ([`TokenFile::from_bytes`]); refuses to read more than
    /// [`MAX_FILE_BYTES`].
    pub fn read(path: impl AsRef<Path>) -> Result<TokenFile, FormatError> {
        let path = path.as_ref();
        let io = |source| FormatError::Io { path: path.to_owned(), source };
        let file = std::fs::File::open(path).map_err(io)?;
        let mut bytes = Vec::new();
        file.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes).map_err(io)?;
        if bytes.len() as u64 > MAX_FILE_BYTES {
            return Err(FormatError::FileTooLarge { path: path.to_owned(), max: MAX_FILE_BYTES });
        }
        TokenFile::from_bytes(&bytes)
    }
}

/// Reads the extension records of a version-3 file into `procedure` (module docs). Canonical:
/// at least one record (a file without is version 1 or 2), tags strictly increasing, each body
/// exactly as long as its tag defines, and no record that states the default.
fn read_extensions(r: &mut Reader, procedure: &mut Procedure) -> Result<(), FormatError> {
    let count = r.u8("extensions.count")?;
    if count == 0 {
        return Err(out_of_range(
            "extensions.count",
            "at least 1 in a version-3 file (a file without extension records is written as version 1 or 2)",
            0,
        ));
    }
    let mut last: Option<u8> = None;
    for _ in 0..count {
        let tag = r.u8("extensions.tag")?;
        let len = r.u16("extensions.length")?;
        let body = r.take(u64::from(len), "extensions.body")?;
        if let Some(prev) = last.filter(|&p| tag <= p) {
            return Err(FormatError::Inconsistent {
                field: "extensions.tag",
                reason: format!("record {tag} follows record {prev}: records must have strictly increasing tags"),
            });
        }
        last = Some(tag);
        match tag {
            EXT_ATOM_RULE => {
                procedure.atoms = atoms::parse_record(body, procedure.k)?;
                check_atoms(procedure.atoms, procedure.k, procedure.n)?;
            }
            EXT_SCORE_REGION => {
                if body.len() != 1 {
                    return Err(out_of_range("extensions.score_region.length", "1 byte", format!("{len} bytes")));
                }
                procedure.score_region = match body[0] {
                    1 => ScoreRegion::Image,
                    mode => {
                        return Err(invalid_tag(
                            "extensions.score_region.mode",
                            mode,
                            "1 (the image only; the whole input is the default and has no record)",
                        ))
                    }
                };
            }
            _ => {
                return Err(FormatError::UnsupportedExtension {
                    tag,
                    detail: format!(
                        "this reader knows records {EXT_ATOM_RULE} (atom rule) and {EXT_SCORE_REGION} (score region); a newer gddcm wrote this file"
                    ),
                })
            }
        }
    }
    Ok(())
}

fn invalid_tag(field: &'static str, tag: u8, expected: &'static str) -> FormatError {
    FormatError::InvalidTag { field, tag, expected }
}

/// Bounds-checked little-endian reader.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn need(&self, n: u64, field: &'static str) -> Result<(), FormatError> {
        let available = self.buf.len() - self.pos;
        if n > available as u64 {
            Err(FormatError::Truncated { field, offset: self.pos, needed: n, available })
        } else {
            Ok(())
        }
    }

    fn take(&mut self, n: u64, field: &'static str) -> Result<&'a [u8], FormatError> {
        self.need(n, field)?;
        let n = n as usize;
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn array<const L: usize>(&mut self, field: &'static str) -> Result<[u8; L], FormatError> {
        let s = self.take(L as u64, field)?;
        let mut a = [0u8; L];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn u8(&mut self, field: &'static str) -> Result<u8, FormatError> {
        Ok(self.array::<1>(field)?[0])
    }

    fn u16(&mut self, field: &'static str) -> Result<u16, FormatError> {
        Ok(u16::from_le_bytes(self.array(field)?))
    }

    fn u32(&mut self, field: &'static str) -> Result<u32, FormatError> {
        Ok(u32::from_le_bytes(self.array(field)?))
    }

    fn u64(&mut self, field: &'static str) -> Result<u64, FormatError> {
        Ok(u64::from_le_bytes(self.array(field)?))
    }

    fn f32(&mut self, field: &'static str) -> Result<f32, FormatError> {
        Ok(f32::from_le_bytes(self.array(field)?))
    }

    fn f64(&mut self, field: &'static str) -> Result<f64, FormatError> {
        Ok(f64::from_le_bytes(self.array(field)?))
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::Ddpm => "DDPM",
            Family::Edm => "EDM",
            Family::Cm => "CM",
            Family::Rf => "RF",
        })
    }
}

impl fmt::Display for Parameterization {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Parameterization::Eps => "ε-prediction",
            Parameterization::EdmPrecond => "EDM preconditioning",
            Parameterization::VpPrecond => "VP preconditioning",
            Parameterization::VePrecond => "VE preconditioning",
            Parameterization::Consistency => "consistency function",
            Parameterization::Velocity => "velocity",
        })
    }
}

impl fmt::Display for MarginalSchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MarginalSchedule::DdpmLinear { t } => write!(f, "DDPM linear β, T = {t}"),
            MarginalSchedule::EdmSigma => f.write_str("EDM σ = t"),
            MarginalSchedule::EdmVp => f.write_str("EDM VP"),
            MarginalSchedule::RfTau => f.write_str("RF τ"),
        }
    }
}

impl fmt::Display for TokenFile {
    /// Human-readable summary for `gddcm inspect` (SPEC 5 G3, SPEC 6).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = &self.model;
        let pr = &self.procedure;
        let img = &self.image;
        writeln!(f, "gddcm token file, format version {}", self.version())?;
        writeln!(f, "model:      {} (weights sha256 {})", m.name, hex(&m.weights_sha256))?;
        writeln!(f, "            {} family, {}, {}", m.family, m.parameterization, m.schedule)?;
        let generator = match pr.codebook_generator {
            CodebookGenerator::Philox4x32BoxMuller => "Philox4x32-10 + Box–Muller (id 1)",
        };
        writeln!(f, "codebooks:  {generator}, seed {:#018x}", pr.seed)?;
        match pr.atoms {
            AtomRule::Single => writeln!(f, "tokens:     N = {}, K = {}", pr.n, pr.k)?,
            rule => writeln!(
                f,
                "tokens:     N = {} steps of {} atoms ({rule}: {} bits each), K = {}",
                pr.n,
                rule.atoms(),
                rule.step_bits(pr.k),
                pr.k
            )?,
        }
        let mixing = match pr.mixing {
            Mixing::SigmaBig => "Σ-mix (eq. 21)",
            Mixing::SigmaSmall => "σ-mix",
        };
        writeln!(f, "step:       p = {}, {mixing}, clip x0: {}", pr.p, if pr.clip_x0 { "yes" } else { "no" })?;
        match &pr.algorithm {
            Algorithm::Alg1 { t_r, t_t, rho } => {
                writeln!(f, "algorithm:  1 (p > 0), T_r = {t_r}, T_t = {t_t}, ρ = {rho}")?
            }
            Algorithm::Alg2 { t_s, schedule } => {
                const SHOWN: usize = 16;
                let mut list: Vec<String> =
                    schedule.iter().take(SHOWN).map(|e| format!("{}×{}", e.delta, e.repeats)).collect();
                if schedule.len() > SHOWN {
                    list.push(format!("… ({} more)", schedule.len() - SHOWN));
                }
                writeln!(
                    f,
                    "algorithm:  2 (p = 0), T_s = {t_s}, {} intervals (Δ×repeats): {}",
                    schedule.len(),
                    list.join(", ")
                )?
            }
        }
        let xref = |x: XRef| match x {
            XRef::Zeros => "zeros".to_string(),
            XRef::DatasetMean => "dataset mean (unnamed: no decoder can run it)".to_string(),
            XRef::Image { sha256 } => format!("image with values SHA-256 {}", hex(&sha256)),
        };
        match pr.init {
            InitStrategy::I1 => writeln!(f, "init:       I1 (scaled noise)")?,
            InitStrategy::I2 { x_ref } => writeln!(f, "init:       I2 (x_ref {} + noise)", xref(x_ref))?,
            InitStrategy::I3 { x_ref, k0, j0 } => {
                writeln!(f, "init:       I3 (x_ref {}, closest of K0 = {k0} noises: j0 = {j0})", xref(x_ref))?
            }
        }
        let kind = match pr.sampler.kind {
            SamplerKind::Ddim => "DDIM",
            SamplerKind::Heun => "Heun",
            SamplerKind::OneStep => "one step",
            SamplerKind::Euler => "Euler",
        };
        let dtype = match pr.dtype {
            ComputeDtype::F32 => "f32",
            ComputeDtype::F16 => "f16",
            ComputeDtype::BF16 => "bf16",
        };
        writeln!(f, "sampler:    {kind}, {} steps, ρ = {}; compute dtype {dtype}", pr.sampler.steps, pr.sampler.rho)?;
        if pr.score_region == ScoreRegion::Image {
            writeln!(
                f,
                "scoring:    eq. 14 on the image only, not the margin around it (extension {EXT_SCORE_REGION})"
            )?;
        }
        writeln!(
            f,
            "image:      {}×{}×{} (C×H×W), values [{}, {}]",
            img.channels, img.height, img.width, img.lo, img.hi
        )?;
        if let Some(fit) = &self.fit {
            let how = match fit.mode {
                FitMode::Crop => "crop: scaled, centre cut out",
                FitMode::Pad => "pad: scaled, background around",
                FitMode::Resize => "resize: scaled to the model's size",
            };
            let back = if fit.mode == FitMode::Crop { "the cut-out square at that scale" } else { "that size" };
            writeln!(f, "fitted:     from {}×{} (W×H) by {how}; decoded back to {back}", fit.width, fit.height)?;
        }
        let init_bits = self.init_index_bits();
        let init_note =
            if init_bits > 0 { format!(" (+ {init_bits} bits of I3 index in the header)") } else { String::new() };
        write!(
            f,
            "size:       payload {} bits = {:.4} bpp{init_note}; as a full-header file {} bytes = {:.4} bpp",
            self.payload_bits(),
            self.payload_bpp(),
            self.total_bits() / 8,
            self.total_bpp()
        )
    }
}
