//! Fuzz target for `TokenFile::from_bytes` (SPEC 5 G3, SPEC 6): parsing arbitrary bytes must
//! never panic, and whatever parses must re-serialise to exactly the same bytes and parse back
//! to an equal value (the encoding is canonical).
//!
//! Each input is parsed twice: as is, and with its last four bytes replaced by the CRC-32 of
//! the rest, so that mutated headers and payloads get past the checksum and reach the range
//! checks and the token decoder.
#![no_main]

// The format module is compiled from the crate's own source so the fuzz build does not have to
// instrument candle and the rest of the crate's dependencies (see ../README.md).
#[allow(dead_code)]
#[path = "../../src/format/mod.rs"]
mod format;

use libfuzzer_sys::fuzz_target;

fn check(data: &[u8]) {
    if let Ok(file) = format::TokenFile::from_bytes(data) {
        let bytes = file.to_bytes().expect("a parsed file is valid");
        assert_eq!(bytes.as_slice(), data, "re-serialisation differs");
        let again = format::TokenFile::from_bytes(&bytes).expect("re-parse");
        assert_eq!(again, file);
        // The accessors must not panic either, and must agree with the bytes.
        assert_eq!(file.total_bits(), 8 * data.len() as u64);
        assert_eq!(file.payload_bits().div_ceil(8) + file.header_bytes() + 4, data.len() as u64);
        let _ = file.to_string();
    }
}

fuzz_target!(|data: &[u8]| {
    check(data);
    if data.len() >= 4 {
        let mut fixed = data.to_vec();
        let body = fixed.len() - 4;
        let crc = crc32fast::hash(&fixed[..body]);
        fixed[body..].copy_from_slice(&crc.to_le_bytes());
        check(&fixed);
    }
});
