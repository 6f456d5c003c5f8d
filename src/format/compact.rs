//! The compact container (issue 17, item 1): a token file made with one of a model's shipped
//! operating points names that point instead of spelling out the procedure, so its overhead is
//! only what a decoder cannot know.
//!
//! A shipped operating point ([`OperatingPoint`]) is a full procedure (K, N, p, seed, schedule,
//! init, sampler, …) registered under a small, stable id by the model that ships it. A file
//! made with it stores the id, a fingerprint of the model's weights and the image size when it
//! is not the model's native one; the decoder looks the point up (fingerprint → model,
//! id → procedure) and gets exactly the [`TokenFile`] the full header would have given. Settings
//! that match no shipped point keep the full, self-describing header of [`super`].
//!
//! # Layout, compact version 1
//!
//! | field | encoding |
//! |---|---|
//! | tag | 1 byte: high nibble `0xD` (compact), bits 3..1 the compact version (1), bit 0 set when the image size follows: `0xD2` native size, `0xD3` explicit size |
//! | operating point id | unsigned LEB128 varint (1 byte below 128), canonical (no overlong form), ≤ `u32::MAX` |
//! | model fingerprint | [`FINGERPRINT_BYTES`] = 4 bytes: the first bytes of the weights' SHA-256 |
//! | image size | only with bit 0 of the tag: height, width as canonical LEB128 varints, each `1..=8192`, not both equal to the point's native size |
//! | init index `j0` | only when the point's init is I3: `⌈log2 K0⌉` bits, little-endian in whole bytes, `< K0` (SPEC 7; rate, not overhead) |
//! | tokens | `⌈B/8⌉` bytes, `B = ⌈N·log2 K⌉`, packed exactly as in the full format |
//! | checksum | u16 little-endian, CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF) of every byte before it |
//!
//! The overhead of a file at the model's native size is 1 + 1 + 4 + 2 = 8 bytes (ids below 128);
//! an explicit size adds one or two bytes per side. A full-format file starts with `G`
//! (`GDDCM\0`), so the first byte tells the two forms apart and old files still parse.
//!
//! **Fingerprint length.** The fingerprint only has to pick the right model among the installed
//! ones, and the decoder refuses a fingerprint that several installed models share. 32 bits make
//! an accidental match of a file from a model that is not installed with one that is a 2⁻³²
//! event per installed model, and a clash among `m` installed models about `m²/2³³`; 16 or 24
//! bits (1.5·10⁻⁵ and 6·10⁻⁸ per model) would save one or two bytes at a risk of silently
//! decoding garbage that is not worth a byte. The CRC-16 detects every error burst of up to 16
//! bits (so every single-byte change) and any other corruption but one in 65 536; a truncated
//! file is also refused by the exact payload length the operating point implies.
//!
//! **Stability.** An id must mean the same procedure forever: a registry may add points but
//! never change one (`tests/compact.rs` pins the shipped ones).

use serde::Serialize;

use super::{
    hex, out_of_range, pack, FormatError, ImageSpec, InitStrategy, ModelIdentity, Procedure, TokenFile, MAX_SIDE,
};

/// High nibble of a compact file's first byte.
pub const COMPACT_TAG: u8 = 0xD0;
/// The compact container version this crate writes and reads.
pub const COMPACT_VERSION: u8 = 1;
/// Bytes of the model fingerprint (a SHA-256 prefix); see the module docs for the choice.
pub const FINGERPRINT_BYTES: usize = 4;
/// Bytes of the checksum (CRC-16).
pub const CHECKSUM_BYTES: usize = 2;

/// Whether `bytes` start like a compact file (first byte `0xD0..=0xDF`).
pub fn is_compact(bytes: &[u8]) -> bool {
    bytes.first().is_some_and(|&b| b & 0xF0 == COMPACT_TAG)
}

/// A shipped operating point: the full procedure a compact file's id stands for, with the
/// model it belongs to and that model's native image (size, channels, value range).
///
/// For an I3 init the `j0` in `procedure` is ignored (each file carries its own).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OperatingPoint {
    /// The stable id written in compact files.
    pub id: u32,
    /// The model (its weights' SHA-256 gives the fingerprint).
    pub model: ModelIdentity,
    /// Every procedure field.
    pub procedure: Procedure,
    /// The image a file of this point holds when it states no size.
    pub image: ImageSpec,
}

impl OperatingPoint {
    /// The fingerprint compact files of this point carry.
    pub fn fingerprint(&self) -> [u8; FINGERPRINT_BYTES] {
        fingerprint_of(&self.model.weights_sha256)
    }

    /// Whether `file` was made with exactly this point (every model and procedure field, the
    /// I3 index aside; the image's channels and value range) so that it can be stored compact.
    pub fn matches(&self, file: &TokenFile) -> bool {
        file.model == self.model
            && without_j0(&file.procedure) == without_j0(&self.procedure)
            && file.image.channels == self.image.channels
            && file.image.lo.to_bits() == self.image.lo.to_bits()
            && file.image.hi.to_bits() == self.image.hi.to_bits()
    }
}

/// The first [`FINGERPRINT_BYTES`] of a weights SHA-256.
pub fn fingerprint_of(sha256: &[u8; 32]) -> [u8; FINGERPRINT_BYTES] {
    let mut f = [0u8; FINGERPRINT_BYTES];
    f.copy_from_slice(&sha256[..FINGERPRINT_BYTES]);
    f
}

fn without_j0(p: &Procedure) -> Procedure {
    let mut p = p.clone();
    if let InitStrategy::I3 { x_ref, k0, .. } = p.init {
        p.init = InitStrategy::I3 { x_ref, k0, j0: 0 };
    }
    p
}

/// Bytes of the I3 init index in a compact file: `⌈⌈log2 K0⌉ / 8⌉`.
fn init_index_bytes(init: &InitStrategy) -> usize {
    match *init {
        InitStrategy::I3 { k0, .. } if k0 > 1 => (32 - (k0 - 1).leading_zeros()).div_ceil(8) as usize,
        _ => 0,
    }
}

/// A parsed compact file: the raw fields, before the operating point is looked up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CompactFile {
    /// The operating point id.
    pub point: u32,
    /// The first bytes of the model's weights SHA-256.
    pub fingerprint: [u8; FINGERPRINT_BYTES],
    /// `(height, width)` when the image is not the point's native size.
    pub size: Option<(u32, u32)>,
    /// Everything between the header and the checksum: the I3 index (if any) and the packed
    /// tokens. Its length is checked against the point's K and N by [`CompactFile::expand`].
    #[serde(skip)]
    pub body: Vec<u8>,
}

impl CompactFile {
    /// The compact form of `file` when it was made with `point` (see [`OperatingPoint::matches`]),
    /// else `None`. Validates `file` first.
    pub fn of(file: &TokenFile, point: &OperatingPoint) -> Result<Option<CompactFile>, FormatError> {
        file.validate()?;
        // A fitted image keeps the full header: its version-2 fit block (mode and original
        // size) is what lets the decoder restore the input's size, and the compact form has
        // no room for it.
        if file.fit.is_some() || !point.matches(file) {
            return Ok(None);
        }
        let (h, w) = (file.image.height, file.image.width);
        let size = ((h, w) != (point.image.height, point.image.width)).then_some((h, w));
        let mut body = Vec::new();
        if let InitStrategy::I3 { j0, .. } = file.procedure.init {
            body.extend_from_slice(&j0.to_le_bytes()[..init_index_bytes(&file.procedure.init)]);
        }
        body.extend_from_slice(&file.procedure.pack(&file.tokens));
        Ok(Some(CompactFile { point: point.id, fingerprint: point.fingerprint(), size, body }))
    }

    /// The first byte: tag, version and the size flag.
    fn tag(&self) -> u8 {
        COMPACT_TAG | (COMPACT_VERSION << 1) | u8::from(self.size.is_some())
    }

    /// Bytes before the body.
    pub fn header_bytes(&self) -> usize {
        let mut w = Vec::new();
        self.write_header(&mut w);
        w.len()
    }

    /// Bytes that are neither token payload nor I3 index: header and checksum (8 for a shipped
    /// point with an id below 128 at the native size).
    pub fn overhead_bytes(&self) -> usize {
        self.header_bytes() + CHECKSUM_BYTES
    }

    /// Length of the serialised file.
    pub fn len_bytes(&self) -> usize {
        self.overhead_bytes() + self.body.len()
    }

    fn write_header(&self, w: &mut Vec<u8>) {
        w.push(self.tag());
        write_varint(w, self.point);
        w.extend_from_slice(&self.fingerprint);
        if let Some((h, wd)) = self.size {
            write_varint(w, h);
            write_varint(w, wd);
        }
    }

    /// Serialises the file (layout in the module docs).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Vec::with_capacity(self.len_bytes());
        self.write_header(&mut w);
        w.extend_from_slice(&self.body);
        let crc = crc16(&w);
        w.extend_from_slice(&crc.to_le_bytes());
        w
    }

    /// Parses the raw fields of a compact file and checks its CRC-16. Never panics; the
    /// encoding is canonical (`to_bytes` gives back the input).
    pub fn from_bytes(bytes: &[u8]) -> Result<CompactFile, FormatError> {
        let mut pos = 0usize;
        let tag = *bytes.first().ok_or(FormatError::Truncated {
            field: "compact.tag",
            offset: 0,
            needed: 1,
            available: 0,
        })?;
        pos += 1;
        if tag & 0xF0 != COMPACT_TAG {
            return Err(FormatError::InvalidTag {
                field: "compact.tag",
                tag,
                expected: "0xD2 (compact, native size) or 0xD3 (compact, explicit size)",
            });
        }
        let version = (tag >> 1) & 0x07;
        if version != COMPACT_VERSION {
            return Err(FormatError::UnsupportedCompactVersion { found: version, supported: COMPACT_VERSION });
        }
        let point = read_varint(bytes, &mut pos, "compact.point")?;
        let fp = bytes.get(pos..pos + FINGERPRINT_BYTES).ok_or(FormatError::Truncated {
            field: "compact.fingerprint",
            offset: pos,
            needed: FINGERPRINT_BYTES as u64,
            available: bytes.len() - pos,
        })?;
        let mut fingerprint = [0u8; FINGERPRINT_BYTES];
        fingerprint.copy_from_slice(fp);
        pos += FINGERPRINT_BYTES;
        let size = if tag & 1 == 1 {
            let h = read_varint(bytes, &mut pos, "compact.height")?;
            check_side("compact.height", h)?;
            let w = read_varint(bytes, &mut pos, "compact.width")?;
            check_side("compact.width", w)?;
            Some((h, w))
        } else {
            None
        };
        let available = bytes.len() - pos;
        if available < CHECKSUM_BYTES {
            return Err(FormatError::Truncated {
                field: "compact.checksum",
                offset: pos,
                needed: CHECKSUM_BYTES as u64,
                available,
            });
        }
        let end = bytes.len() - CHECKSUM_BYTES;
        let stored = u16::from_le_bytes([bytes[end], bytes[end + 1]]);
        let computed = crc16(&bytes[..end]);
        if stored != computed {
            return Err(FormatError::CompactChecksumMismatch { stored, computed });
        }
        Ok(CompactFile { point, fingerprint, size, body: bytes[pos..end].to_vec() })
    }

    /// The full token file this compact file stands for, given the operating point its id and
    /// fingerprint name: the point's model and procedure, the image size (the point's unless
    /// the file states one), the I3 index and the tokens.
    ///
    /// Errors when the point is not the one named, when the body is not exactly as long as the
    /// point's K, N (and K0) imply, on non-zero padding, a token `≥ K`, `j0 ≥ K0`, or an
    /// explicit size equal to the native one (not canonical).
    pub fn expand(&self, point: &OperatingPoint) -> Result<TokenFile, FormatError> {
        if point.id != self.point || point.fingerprint() != self.fingerprint {
            return Err(FormatError::Inconsistent {
                field: "compact.point",
                reason: format!(
                    "the file names operating point {} of the model with fingerprint {}, not point {} of {} ({})",
                    self.point,
                    hex(&self.fingerprint),
                    point.id,
                    point.model.name,
                    hex(&point.fingerprint())
                ),
            });
        }
        let mut image = point.image;
        if let Some((h, w)) = self.size {
            if (h, w) == (image.height, image.width) {
                return Err(FormatError::Inconsistent {
                    field: "compact.size",
                    reason: format!("an explicit size {h}×{w} equal to the native one is not canonical"),
                });
            }
            image.height = h;
            image.width = w;
        }
        let mut procedure = point.procedure.clone();
        let (k, n) = (procedure.k, procedure.n);
        let bits = procedure.payload_bits();
        let index_bytes = init_index_bytes(&procedure.init);
        let expected = index_bytes as u64 + pack::bytes_for_bits(bits);
        if self.body.len() as u64 != expected {
            return Err(out_of_range(
                "compact.body",
                format!(
                    "{expected} bytes for operating point {} (K = {k}, N = {n}{})",
                    self.point,
                    if index_bytes > 0 { format!(", {index_bytes} bytes of I3 index") } else { String::new() }
                ),
                format!("{} bytes (the file is truncated, extended or corrupted)", self.body.len()),
            ));
        }
        if let InitStrategy::I3 { x_ref, k0, .. } = procedure.init {
            let mut le = [0u8; 4];
            le[..index_bytes].copy_from_slice(&self.body[..index_bytes]);
            let j0 = u32::from_le_bytes(le);
            procedure.init = InitStrategy::I3 { x_ref, k0, j0 };
        }
        let tokens = procedure.unpack(&self.body[index_bytes..])?;
        let file = TokenFile { model: point.model.clone(), procedure, image, tokens, fit: None };
        file.validate()?;
        Ok(file)
    }

    /// The first bytes of the weights hash, as lower-case hex.
    pub fn fingerprint_hex(&self) -> String {
        hex(&self.fingerprint)
    }
}

fn check_side(field: &'static str, v: u32) -> Result<(), FormatError> {
    if (1..=MAX_SIDE).contains(&v) {
        Ok(())
    } else {
        Err(out_of_range(field, format!("1..={MAX_SIDE}"), v))
    }
}

/// Appends `v` as an unsigned LEB128 varint.
fn write_varint(w: &mut Vec<u8>, mut v: u32) {
    while v >= 0x80 {
        w.push((v as u8 & 0x7F) | 0x80);
        v >>= 7;
    }
    w.push(v as u8);
}

/// Reads a canonical unsigned LEB128 varint of at most 32 bits.
fn read_varint(bytes: &[u8], pos: &mut usize, field: &'static str) -> Result<u32, FormatError> {
    let start = *pos;
    let mut v: u64 = 0;
    for i in 0..5 {
        let Some(&b) = bytes.get(start + i) else {
            return Err(FormatError::Truncated { field, offset: start + i, needed: 1, available: 0 });
        };
        v |= u64::from(b & 0x7F) << (7 * i);
        if b & 0x80 == 0 {
            if i > 0 && b == 0 {
                return Err(out_of_range(field, "a canonical LEB128 varint (no overlong form)", "an overlong varint"));
            }
            let v = u32::try_from(v).map_err(|_| out_of_range(field, "a varint of at most 32 bits", v))?;
            *pos = start + i + 1;
            return Ok(v);
        }
    }
    Err(out_of_range(field, "a varint of at most 5 bytes", "a longer one"))
}

const CRC16_TABLE: [u16; 256] = {
    let mut t = [0u16; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = (i as u16) << 8;
        let mut j = 0;
        while j < 8 {
            c = if c & 0x8000 != 0 { (c << 1) ^ 0x1021 } else { c << 1 };
            j += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
};

/// CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF, no reflection, no final xor): check value
/// `0x29B1` for `"123456789"`.
pub fn crc16(bytes: &[u8]) -> u16 {
    bytes.iter().fold(0xFFFFu16, |c, &b| (c << 8) ^ CRC16_TABLE[usize::from((c >> 8) as u8 ^ b)])
}

/// A token file in either form, as read from disk.
#[derive(Debug, Clone, PartialEq)]
// One value per file read: boxing the full form would only add an allocation.
#[allow(clippy::large_enum_variant)]
pub enum Container {
    /// The full, self-describing header (format version 1).
    Full(TokenFile),
    /// The compact form: needs its operating point to become a [`TokenFile`].
    Compact(CompactFile),
}

impl Container {
    /// Parses either form (told apart by the first byte).
    pub fn from_bytes(bytes: &[u8]) -> Result<Container, FormatError> {
        if is_compact(bytes) {
            CompactFile::from_bytes(bytes).map(Container::Compact)
        } else {
            TokenFile::from_bytes(bytes).map(Container::Full)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc16_check_value() {
        assert_eq!(crc16(b"123456789"), 0x29B1);
    }

    #[test]
    fn varints_are_canonical() {
        for v in [0u32, 1, 127, 128, 300, 16383, 16384, u32::MAX] {
            let mut w = Vec::new();
            write_varint(&mut w, v);
            let mut pos = 0;
            assert_eq!(read_varint(&w, &mut pos, "x").unwrap(), v);
            assert_eq!(pos, w.len());
        }
        let mut pos = 0;
        assert!(read_varint(&[0x80, 0x00], &mut pos, "x").is_err());
        assert!(read_varint(&[0xFF, 0xFF, 0xFF, 0xFF, 0x1F], &mut 0, "x").is_err());
        assert!(read_varint(&[0x80, 0x80, 0x80, 0x80, 0x80, 0x01], &mut 0, "x").is_err());
    }
}
