//! Errors of the `.gddcm` token file (SPEC 5 G3, SPEC 6).

use std::path::PathBuf;

/// Everything that can go wrong while reading, validating or writing a `.gddcm` token file
/// (SPEC 5 G3: the header pins the whole procedure; SPEC 6: the token payload).
///
/// There is one variant per kind of problem, and each message names the field and what was
/// expected versus what was found.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    /// The file does not start with the magic bytes `GDDCM\0`.
    #[error(
        "not a gddcm token file: magic bytes are {found:02x?}, expected {expected:02x?} (\"GDDCM\\0\") or a compact \
         file's first byte 0xd2/0xd3"
    )]
    BadMagic {
        /// The first six bytes of the file.
        found: [u8; 6],
        /// The magic this reader expects ([`super::MAGIC`]).
        expected: [u8; 6],
    },

    /// The file's format version is not one this reader understands.
    #[error("unsupported gddcm format version {found}; this reader supports versions 1 to {supported}")]
    UnsupportedVersion {
        /// The version stored in the file.
        found: u16,
        /// The newest version this reader supports ([`super::FORMAT_VERSION_EXT`]).
        supported: u16,
    },

    /// A compact file's version is not one this reader understands.
    #[error("unsupported compact gddcm container version {found}; this reader supports version {supported}")]
    UnsupportedCompactVersion {
        /// The version in the file's first byte (bits 3..1).
        found: u8,
        /// The version this reader supports ([`super::compact::COMPACT_VERSION`]).
        supported: u8,
    },

    /// A compact file's CRC-16 does not match its contents.
    #[error(
        "checksum mismatch: compact file stores CRC-16 {stored:#06x}, contents give {computed:#06x} (the file is corrupted)"
    )]
    CompactChecksumMismatch {
        /// The CRC-16 stored in the file.
        stored: u16,
        /// The CRC-16 computed over the bytes before it.
        computed: u16,
    },

    /// A compact file was given to a reader of full files only: it needs its operating point.
    #[error(
        "this is a compact token file (operating point {point} of a model whose weights sha256 starts with \
         {fingerprint}); reading it needs that model's shipped operating points (gddcm::ladder)"
    )]
    CompactNeedsOperatingPoint {
        /// The operating point id.
        point: u32,
        /// The model fingerprint, hex.
        fingerprint: String,
    },

    /// No installed model ships the operating point a compact file names.
    #[error(
        "this file was made with operating point {point} of a model whose weights sha256 starts with \
         {fingerprint}..; {detail}"
    )]
    UnknownOperatingPoint {
        /// The operating point id.
        point: u32,
        /// The model fingerprint, hex.
        fingerprint: String,
        /// What is missing: no installed model matches, or the model has no such point.
        detail: String,
    },

    /// The file ends before a field is complete.
    #[error("truncated file: field `{field}` at byte offset {offset} needs {needed} bytes, found {available}")]
    Truncated {
        /// The field being read.
        field: &'static str,
        /// Byte offset of the field in the file.
        offset: usize,
        /// Bytes the field needs.
        needed: u64,
        /// Bytes left in the file at that offset.
        available: usize,
    },

    /// The CRC-32 stored at the end of the file does not match its contents.
    #[error(
        "checksum mismatch: file stores CRC-32 {stored:#010x}, contents give {computed:#010x} (the file is corrupted)"
    )]
    ChecksumMismatch {
        /// The CRC-32 stored in the file.
        stored: u32,
        /// The CRC-32 computed over the bytes before it.
        computed: u32,
    },

    /// An enum field holds a tag this version does not define.
    #[error("invalid value {tag} for field `{field}`: expected one of {expected}")]
    InvalidTag {
        /// The enum field.
        field: &'static str,
        /// The tag found in the file.
        tag: u8,
        /// The tags this version defines, in words.
        expected: &'static str,
    },

    /// A numeric field is outside the range the format allows (absurd N, K, shape, name length,
    /// `j0 ≥ K0`, non-finite floats, ...).
    #[error("field `{field}` out of range: expected {expected}, found {found}")]
    OutOfRange {
        /// The field.
        field: &'static str,
        /// The allowed range, in words.
        expected: String,
        /// The value found.
        found: String,
    },

    /// The repeats of the Algorithm-2 schedule do not add up to N (SPEC 2.6, fix 1).
    #[error("field `procedure.algorithm.schedule` out of range: repeats must sum to N = {n}, found sum {sum}")]
    ScheduleSum {
        /// The number of tokens N.
        n: u32,
        /// The sum of the schedule's repeats.
        sum: u64,
    },

    /// A version-3 extension record this reader does not support (the procedure it describes
    /// could not be replayed, so the file is refused rather than decoded differently).
    #[error("unsupported extension record {tag} in field `extensions`: {detail}")]
    UnsupportedExtension {
        /// The record's tag.
        tag: u8,
        /// Which records this reader knows, or why this one is refused.
        detail: String,
    },

    /// Two fields contradict each other (e.g. `p > 0` with Algorithm-2 data).
    #[error("inconsistent field `{field}`: {reason}")]
    Inconsistent {
        /// The field that disagrees with an earlier one.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },

    /// The model name is not valid UTF-8.
    #[error("field `{field}` is not valid UTF-8: {source}")]
    InvalidUtf8 {
        /// The text field.
        field: &'static str,
        /// The decoding error.
        #[source]
        source: std::str::Utf8Error,
    },

    /// A token is not below K (SPEC 2.4: `0 ≤ j < K`).
    #[error("field `tokens` out of range: token {index} is {value}, expected < K = {k}")]
    TokenOutOfRange {
        /// Position of the token.
        index: usize,
        /// Its value.
        value: u64,
        /// The codebook size K.
        k: u32,
    },

    /// The unused bits after the packed tokens in the payload's last byte are not zero.
    #[error(
        "field `tokens`: the {unused} padding bits after the {bits} payload bits must be zero, found {found:#04x}"
    )]
    NonZeroPadding {
        /// Payload bits, `⌈N·log2 K⌉`.
        bits: u64,
        /// Unused bits in the last byte.
        unused: u32,
        /// The value of those unused bits.
        found: u8,
    },

    /// Bytes follow the checksum.
    #[error("trailing bytes: the file has {count} bytes after the checksum at offset {offset}, expected none")]
    TrailingBytes {
        /// Offset of the first trailing byte (= expected file length).
        offset: usize,
        /// How many bytes follow.
        count: usize,
    },

    /// A file is larger than any valid token file can be.
    #[error("{path}: file too large for a gddcm token file: at most {max} bytes expected, found more", path = path.display())]
    FileTooLarge {
        /// The file.
        path: PathBuf,
        /// The largest valid file size.
        max: u64,
    },

    /// The token file was made with another model than the one loaded (SPEC 5 G3).
    #[error(
        "model mismatch: this token file needs model `{needed_name}` (weights sha256 {needed_sha}…), \
             but the loaded model is `{found_name}` (weights sha256 {found_sha}…)"
    )]
    ModelMismatch {
        /// Name of the model the file needs.
        needed_name: String,
        /// First 16 hex digits of the SHA-256 of the weights the file needs.
        needed_sha: String,
        /// Name of the loaded model.
        found_name: String,
        /// First 16 hex digits of the SHA-256 of the loaded weights.
        found_sha: String,
    },

    /// Reading or writing the file failed.
    #[error("{path}: {source}", path = path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}
