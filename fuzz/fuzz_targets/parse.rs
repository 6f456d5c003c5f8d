//! Fuzz target for the token file readers (SPEC 5 G3, SPEC 6, issue 17): `TokenFile::from_bytes`
//! (full header), `Container::from_bytes` (either form) and `CompactFile::expand` (compact form
//! against an operating point). Parsing arbitrary bytes must never panic, and whatever parses
//! must re-serialise to exactly the same bytes and parse back to an equal value (both encodings
//! are canonical).
//!
//! Each input is parsed twice: as is, and with its checksum fixed (the last four bytes replaced
//! by the CRC-32 of the rest for the full form, the last two by the CRC-16 for the compact
//! form), so that mutated headers and payloads get past the checksum and reach the range checks
//! and the token decoder.
#![no_main]

// The format module is compiled from the crate's own source so the fuzz build does not have to
// instrument candle and the rest of the crate's dependencies (see ../README.md).
#[allow(dead_code)]
#[path = "../../src/atoms.rs"]
mod atoms;

#[path = "../../src/format/mod.rs"]
mod format;
#[allow(dead_code)]
#[path = "../../src/atomic.rs"]
mod atomic;

use format::compact::crc16;
use format::*;
use libfuzzer_sys::fuzz_target;

fn check_full(data: &[u8]) {
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

/// A few operating points of different shapes: power-of-two and mixed-radix K, I1/I2/I3
/// (one- and two-byte j0), both algorithms.
fn points(id: u32, fingerprint: [u8; 4]) -> Vec<OperatingPoint> {
    let mut sha = [0u8; 32];
    sha[..4].copy_from_slice(&fingerprint);
    let model = ModelIdentity {
        name: "fuzz".into(),
        weights_sha256: sha,
        family: Family::Edm,
        parameterization: Parameterization::EdmPrecond,
        schedule: MarginalSchedule::EdmSigma,
    };
    let procedure = |k: u32, n: u32, init: InitStrategy, alg2: bool| Procedure {
        codebook_generator: CodebookGenerator::Philox4x32BoxMuller,
        seed: 7,
        k,
        n,
        p: if alg2 { 0.0 } else { 0.5 },
        mixing: Mixing::SigmaBig,
        clip_x0: false,
        algorithm: if alg2 {
            Algorithm::Alg2 { t_s: 0.2, schedule: vec![ScheduleEntry { delta: 0.01, repeats: n }] }
        } else {
            Algorithm::Alg1 { t_r: 80.0, t_t: 0.002, rho: 7.0 }
        },
        init,
        sampler: FinalSampler { kind: SamplerKind::Heun, steps: 18, rho: 7.0 },
        dtype: ComputeDtype::F32,
        atoms: AtomRule::Single,
        score_region: if alg2 { ScoreRegion::Image } else { ScoreRegion::Input },
    };
    let image = ImageSpec { channels: 1, height: 28, width: 28, lo: -1.0, hi: 1.0 };
    let z = XRef::Zeros;
    [
        procedure(256, 300, InitStrategy::I2 { x_ref: z }, true),
        procedure(256, 300, InitStrategy::I3 { x_ref: z, k0: 256, j0: 0 }, true),
        procedure(256, 300, InitStrategy::I2 { x_ref: XRef::Image { sha256: [0x5a; 32] } }, true),
        procedure(5, 7, InitStrategy::I3 { x_ref: z, k0: 300, j0: 0 }, false),
        procedure(2, 9, InitStrategy::I1, false),
        procedure(1000, 12, InitStrategy::I1, true),
    ]
    .into_iter()
    .map(|procedure| OperatingPoint { id, model: model.clone(), procedure, image })
    .collect()
}

fn check_container(data: &[u8]) {
    let Ok(c) = Container::from_bytes(data) else { return };
    let Container::Compact(c) = c else { return };
    assert_eq!(c.to_bytes().as_slice(), data, "compact re-serialisation differs");
    assert_eq!(CompactFile::from_bytes(data).expect("re-parse"), c);
    assert_eq!(c.len_bytes(), data.len());
    for point in points(c.point, c.fingerprint) {
        if let Ok(file) = c.expand(&point) {
            // The expanded file compacts back to the same bytes and serialises in full form.
            let again = CompactFile::of(&file, &point).expect("an expanded file is valid").expect("matches its point");
            assert_eq!(again, c);
            let full = file.to_bytes().expect("valid");
            assert_eq!(format::TokenFile::from_bytes(&full).expect("full re-parse"), file);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    check_full(data);
    check_container(data);
    if data.len() >= 4 {
        let mut fixed = data.to_vec();
        let body = fixed.len() - 4;
        let crc = crc32fast::hash(&fixed[..body]);
        fixed[body..].copy_from_slice(&crc.to_le_bytes());
        check_full(&fixed);
    }
    if data.len() >= 2 && compact::is_compact(data) {
        let mut fixed = data.to_vec();
        let body = fixed.len() - 2;
        let crc = crc16(&fixed[..body]);
        fixed[body..].copy_from_slice(&crc.to_le_bytes());
        check_container(&fixed);
    }
});
