//! Tests of the `.gddcm` token file (SPEC 5 G3, SPEC 6): round trips, exact payload sizes,
//! one error variant per kind of bad file, and property tests.

mod support;
use support::tokens;

use gddcm::format::*;
use proptest::prelude::*;

const NAME: &str = "google/ddpm-cifar10-32";

fn sha(b: u8) -> [u8; 32] {
    let mut h = [0u8; 32];
    for (i, x) in h.iter_mut().enumerate() {
        *x = b.wrapping_add(i as u8 * 7);
    }
    h
}

/// An Algorithm-1 DDPM file.
fn sample(k: u32, n: u32) -> TokenFile {
    TokenFile {
        model: ModelIdentity {
            name: NAME.to_owned(),
            weights_sha256: sha(0xA0),
            family: Family::Ddpm,
            parameterization: Parameterization::Eps,
            schedule: MarginalSchedule::DdpmLinear { t: 1000 },
        },
        procedure: Procedure {
            codebook_generator: CodebookGenerator::Philox4x32BoxMuller,
            seed: 0x0123_4567_89ab_cdef,
            k,
            n,
            p: 0.5,
            mixing: Mixing::SigmaBig,
            clip_x0: true,
            algorithm: Algorithm::Alg1 { t_r: 999.0, t_t: 0.0, rho: 7.0 },
            init: InitStrategy::I1,
            sampler: FinalSampler { kind: SamplerKind::Ddim, steps: 50, rho: 1.0 },
            dtype: ComputeDtype::F32,
            atoms: AtomRule::Single,
            score_region: ScoreRegion::Input,
        },
        image: ImageSpec { channels: 3, height: 32, width: 32, lo: -1.0, hi: 1.0 },
        tokens: tokens(k, n, u64::from(k) * 31 + u64::from(n)),
        fit: None,
    }
}

/// An Algorithm-2 EDM file with an I3 init.
fn sample_alg2(k: u32, n: u32) -> TokenFile {
    let mut f = sample(k, n);
    f.model.family = Family::Edm;
    f.model.parameterization = Parameterization::EdmPrecond;
    f.model.schedule = MarginalSchedule::EdmSigma;
    f.procedure.p = 0.0;
    let first = n / 3;
    f.procedure.algorithm = Algorithm::Alg2 {
        t_s: 2.5,
        schedule: vec![
            ScheduleEntry { delta: 1.25, repeats: first },
            ScheduleEntry { delta: 0.5, repeats: 0 },
            ScheduleEntry { delta: 0.125, repeats: n - first },
        ],
    };
    f.procedure.init = InitStrategy::I3 { x_ref: XRef::DatasetMean, k0: 256, j0: 17 };
    f.procedure.sampler = FinalSampler { kind: SamplerKind::Heun, steps: 18, rho: 7.0 };
    f
}

/// Byte offsets of fields in files made by [`sample`] (name = NAME, DdpmLinear schedule).
const OFF_NAME_LEN: usize = 8;
const OFF_FAMILY: usize = 9 + NAME.len() + 32;
const OFF_PARAM: usize = OFF_FAMILY + 1;
const OFF_SCHEDULE: usize = OFF_FAMILY + 2;
const OFF_DDPM_T: usize = OFF_SCHEDULE + 1;
const OFF_GENERATOR: usize = OFF_DDPM_T + 4;
const OFF_K: usize = OFF_GENERATOR + 1 + 8;
const OFF_N: usize = OFF_K + 4;
const OFF_P: usize = OFF_N + 4;
const OFF_MIXING: usize = OFF_P + 8;
const OFF_CLIP: usize = OFF_MIXING + 1;
const OFF_ALG: usize = OFF_CLIP + 1;
const OFF_TT: usize = OFF_ALG + 1 + 8;
const OFF_INIT: usize = OFF_ALG + 1 + 24;
const OFF_SAMPLER: usize = OFF_INIT + 1;
const OFF_STEPS: usize = OFF_SAMPLER + 1;
const OFF_DTYPE: usize = OFF_SAMPLER + 1 + 4 + 8;
const OFF_CHANNELS: usize = OFF_DTYPE + 1;
const OFF_HEIGHT: usize = OFF_CHANNELS + 1;
const OFF_WIDTH: usize = OFF_HEIGHT + 4;
const OFF_LO: usize = OFF_WIDTH + 4;
const OFF_PAYLOAD: usize = OFF_LO + 8;
/// Where a version-3 file's fit flag and extension records start (after the image).
const OFF_PAYLOAD_V3: usize = OFF_PAYLOAD;

/// Overwrites bytes at `at` and recomputes the trailing CRC-32.
fn patch(bytes: &[u8], at: usize, new: &[u8]) -> Vec<u8> {
    let mut b = bytes.to_vec();
    b[at..at + new.len()].copy_from_slice(new);
    refresh_crc(&mut b);
    b
}

fn refresh_crc(b: &mut [u8]) {
    let l = b.len() - 4;
    let crc = crc32fast::hash(&b[..l]);
    b[l..].copy_from_slice(&crc.to_le_bytes());
}

fn round_trip(f: &TokenFile) -> Vec<u8> {
    let bytes = f.to_bytes().expect("valid file");
    let back = TokenFile::from_bytes(&bytes).expect("parses");
    assert_eq!(&back, f);
    assert_eq!(back.to_bytes().unwrap(), bytes, "canonical encoding");
    assert_eq!(f.total_bits(), 8 * bytes.len() as u64);
    assert_eq!(bytes.len() as u64, f.header_bytes() + f.payload_bits().div_ceil(8) + 4);
    bytes
}

#[test]
fn offsets_match_layout() {
    let f = sample(16, 10);
    let b = f.to_bytes().unwrap();
    assert_eq!(&b[..6], b"GDDCM\0");
    assert_eq!(b[OFF_NAME_LEN] as usize, NAME.len());
    assert_eq!(&b[OFF_K..OFF_K + 4], &16u32.to_le_bytes());
    assert_eq!(&b[OFF_N..OFF_N + 4], &10u32.to_le_bytes());
    assert_eq!(&b[OFF_P..OFF_P + 8], &0.5f64.to_le_bytes());
    assert_eq!(b[OFF_ALG], 1);
    assert_eq!(b[OFF_INIT], 1);
    assert_eq!(b[OFF_CHANNELS], 3);
    assert_eq!(OFF_PAYLOAD as u64, f.header_bytes());
    assert_eq!(b.len(), OFF_PAYLOAD + 5 + 4);
}

#[test]
fn round_trip_sizes_for_many_k_and_n() {
    let ks = [2u32, 3, 5, 16, 255, 256, 1000, 4096, 65_535, (1 << 24) - 1, 1 << 24];
    let ns = [1u32, 2, 3, 7, 64, 300, 1000, 2999, 4096];
    for &k in &ks {
        for &n in &ns {
            for f in [sample(k, n), sample_alg2(k, n)] {
                let bytes = round_trip(&f);
                let bits = f.payload_bits();
                if k.is_power_of_two() {
                    assert_eq!(bits, u64::from(n) * u64::from(k.trailing_zeros()));
                } else {
                    let x = f64::from(n) * f64::from(k).log2();
                    if (x - x.round()).abs() > 1e-6 {
                        assert_eq!(bits, x.ceil() as u64, "K={k} N={n}");
                    } else {
                        // N·log2 K within 1e-6 of an integer: here only K = 2^a − 1 with small
                        // N, where N·log2 K is just below a·N, so ⌈N·log2 K⌉ = a·N.
                        assert!((k + 1).is_power_of_two(), "K={k} N={n}");
                        assert_eq!(bits, u64::from(n) * u64::from((k + 1).trailing_zeros()));
                    }
                }
                assert_eq!(bytes.len() as u64, f.header_bytes() + bits.div_ceil(8) + 4);
            }
        }
    }
}

#[test]
fn table_of_spec_6_payload_sizes() {
    // SPEC 6, CIFAR-10, N = 300: payload bits for K = 2 .. 4096.
    for (k, bits) in [(2, 300), (16, 1200), (64, 1800), (256, 2400), (1024, 3000), (4096, 3600)] {
        let f = sample(k, 300);
        assert_eq!(f.payload_bits(), bits);
        assert!((f.payload_bpp() - bits as f64 / 1024.0).abs() < 1e-12);
    }
    // Mixed radix beats ⌈log2 K⌉ bits per token: 300 tokens at K = 1000 take 2990 bits, not 3000.
    assert_eq!(sample(1000, 300).payload_bits(), 2990);
    assert_eq!(sample(3, 300).payload_bits(), 476);
}

#[test]
fn every_enum_value_round_trips() {
    let families = [Family::Ddpm, Family::Edm, Family::Cm, Family::Rf];
    let params = [
        Parameterization::Eps,
        Parameterization::EdmPrecond,
        Parameterization::VpPrecond,
        Parameterization::VePrecond,
        Parameterization::Consistency,
        Parameterization::Velocity,
    ];
    let schedules = [
        MarginalSchedule::DdpmLinear { t: 1 },
        MarginalSchedule::DdpmLinear { t: 4000 },
        MarginalSchedule::EdmSigma,
        MarginalSchedule::EdmVp,
        MarginalSchedule::RfTau,
    ];
    let inits = [
        InitStrategy::I1,
        InitStrategy::I2 { x_ref: XRef::Zeros },
        InitStrategy::I2 { x_ref: XRef::DatasetMean },
        InitStrategy::I3 { x_ref: XRef::Zeros, k0: 1, j0: 0 },
        InitStrategy::I3 { x_ref: XRef::DatasetMean, k0: 1 << 24, j0: (1 << 24) - 1 },
        InitStrategy::I2 { x_ref: XRef::Image { sha256: sha(0x5c) } },
        InitStrategy::I3 { x_ref: XRef::Image { sha256: sha(0xc5) }, k0: 256, j0: 255 },
    ];
    let regions = [ScoreRegion::Input, ScoreRegion::Image, ScoreRegion::Image];
    let kinds = [SamplerKind::Ddim, SamplerKind::Heun, SamplerKind::OneStep, SamplerKind::Euler];
    let dtypes = [ComputeDtype::F32, ComputeDtype::F16, ComputeDtype::BF16];
    let mut i = 0usize;
    for (fi, &family) in families.iter().enumerate() {
        for (pi, &parameterization) in params.iter().enumerate() {
            for (si, &schedule) in schedules.iter().enumerate() {
                let mut f = if (fi + pi + si) % 2 == 0 { sample(1000, 37) } else { sample_alg2(64, 37) };
                f.model.family = family;
                f.model.parameterization = parameterization;
                f.model.schedule = schedule;
                f.model.name = "é-model ✓".repeat(i % 3);
                f.model.weights_sha256 = sha(i as u8);
                f.procedure.seed = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
                f.procedure.mixing = if i.is_multiple_of(2) { Mixing::SigmaBig } else { Mixing::SigmaSmall };
                f.procedure.clip_x0 = i.is_multiple_of(3);
                f.procedure.init = inits[i % inits.len()];
                f.procedure.sampler.kind = kinds[i % kinds.len()];
                f.procedure.dtype = dtypes[i % dtypes.len()];
                f.procedure.score_region = regions[i % regions.len()];
                f.image = ImageSpec {
                    channels: if i.is_multiple_of(2) { 1 } else { 3 },
                    height: 1 + (i as u32 * 37) % 8192,
                    width: 8192 - (i as u32 * 11) % 100,
                    lo: 0.0,
                    hi: 255.0,
                };
                round_trip(&f);
                i += 1;
            }
        }
    }
}

#[test]
fn extreme_but_valid_values_round_trip() {
    let mut f = sample(1 << 24, 1);
    f.model.name = "x".repeat(255);
    f.procedure.seed = u64::MAX;
    f.procedure.p = 1.0 - f64::EPSILON;
    f.procedure.sampler.steps = MAX_SAMPLER_STEPS;
    f.image = ImageSpec { channels: 1, height: 8192, width: 8192, lo: f32::MIN, hi: f32::MAX };
    f.tokens = vec![(1 << 24) - 1];
    round_trip(&f);
    // The largest colour image (3·8192·8192 < 2^28, so the element cap never binds alone).
    f.image.channels = 3;
    round_trip(&f);
    // Largest N at K = 2.
    let mut g = sample(2, MAX_N);
    g.tokens = tokens(2, MAX_N, 1);
    round_trip(&g);
}

#[test]
fn max_file_bytes_bounds_the_largest_file() {
    let mut f = sample_alg2(1 << 24, MAX_N);
    f.model.name = "n".repeat(MAX_NAME_LEN);
    // The longest fixed fields: I3 with a hashed x_ref, a fit block and an extension record.
    f.procedure.init = InitStrategy::I3 { x_ref: XRef::Image { sha256: sha(1) }, k0: 256, j0: 17 };
    f.procedure.score_region = ScoreRegion::Image;
    f.fit = Some(Fit { mode: FitMode::Crop, width: 8192, height: 8192 });
    f.model.schedule = MarginalSchedule::DdpmLinear { t: 1000 };
    f.procedure.algorithm = Algorithm::Alg2 {
        t_s: 10.0,
        schedule: vec![
            ScheduleEntry { delta: 1.0, repeats: MAX_N / MAX_SCHEDULE_ENTRIES };
            MAX_SCHEDULE_ENTRIES as usize
        ],
    };
    let bytes = round_trip(&f);
    assert!(f.to_string().contains("1×16, … (65520 more)"));
    assert!(bytes.len() as u64 <= MAX_FILE_BYTES);
    assert!(MAX_FILE_BYTES - (bytes.len() as u64) < 32);
    // The largest Algorithm-1 file is smaller.
    let mut g = sample(1 << 24, MAX_N);
    g.model.name = f.model.name.clone();
    g.procedure.init = f.procedure.init;
    assert!((round_trip(&g).len() as u64) < MAX_FILE_BYTES);
    // A file just over the limit is refused before it is parsed.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.gddcm");
    std::fs::write(&path, vec![0u8; MAX_FILE_BYTES as usize + 1]).unwrap();
    assert!(matches!(TokenFile::read(&path), Err(FormatError::FileTooLarge { .. })));
}

#[test]
fn largest_mixed_radix_payload_round_trips_quickly() {
    // N·log2 K just under the 2^20-bit cap at the largest non-power-of-two K.
    let k = (1 << 24) - 1;
    let n = (MAX_MIXED_RADIX_BITS as f64 / f64::from(k).log2()) as u32;
    let f = sample(k, n);
    let start = std::time::Instant::now();
    round_trip(&f);
    let secs = start.elapsed().as_secs_f64();
    assert!(secs < 30.0, "mixed-radix round trip took {secs} s");
    // One more token is over the cap.
    let g = sample(k, n + 1);
    assert!(matches!(g.to_bytes(), Err(FormatError::OutOfRange { field: "procedure.n", .. })));
}

#[test]
fn json_round_trip() {
    for f in [sample(1000, 20), sample_alg2(4096, 20)] {
        let json = serde_json::to_string_pretty(&f).unwrap();
        assert!(json.contains("a0a7aeb5"), "hash as hex: {json}");
        let back: TokenFile = serde_json::from_str(&json).unwrap();
        assert_eq!(back, f);
    }
}

#[test]
fn every_prefix_is_truncated() {
    for f in [sample(1000, 50), sample_alg2(16, 50), sample(2, 3)] {
        let bytes = f.to_bytes().unwrap();
        for len in 0..bytes.len() {
            match TokenFile::from_bytes(&bytes[..len]) {
                Err(FormatError::Truncated { needed, available, .. }) => assert!(needed > available as u64),
                other => panic!("prefix of {len} bytes: {other:?}"),
            }
        }
    }
}

#[test]
fn every_byte_and_bit_flip_is_an_error() {
    for f in [sample(1000, 40), sample_alg2(256, 40)] {
        let bytes = f.to_bytes().unwrap();
        for i in 0..bytes.len() {
            for mask in [0xFFu8, 0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80] {
                let mut b = bytes.clone();
                b[i] ^= mask;
                let r = TokenFile::from_bytes(&b);
                assert!(r.is_err(), "flip {mask:#x} at {i} parsed");
                if i >= bytes.len() - 4 {
                    assert!(matches!(r, Err(FormatError::ChecksumMismatch { .. })), "{r:?}");
                }
            }
        }
    }
    // Flips in the payload are caught by the checksum (decoding comes after it).
    let f = sample(1000, 40);
    let bytes = f.to_bytes().unwrap();
    for i in OFF_PAYLOAD..bytes.len() - 4 {
        let mut b = bytes.clone();
        b[i] ^= 0x10;
        assert!(matches!(TokenFile::from_bytes(&b), Err(FormatError::ChecksumMismatch { .. })));
    }
}

#[test]
fn bad_magic() {
    let bytes = sample(16, 4).to_bytes().unwrap();
    let b = patch(&bytes, 0, b"GDDCN");
    let e = TokenFile::from_bytes(&b).unwrap_err();
    assert!(matches!(e, FormatError::BadMagic { .. }), "{e:?}");
    assert!(e.to_string().contains("magic"), "{e}");
    let png = b"\x89PNG\r\n\x1a\n0000000000000000";
    assert!(matches!(TokenFile::from_bytes(png), Err(FormatError::BadMagic { .. })));
}

#[test]
fn unsupported_version() {
    let bytes = sample(16, 4).to_bytes().unwrap();
    for v in [0u16, 4, 0xFFFF] {
        let b = patch(&bytes, 6, &v.to_le_bytes());
        let e = TokenFile::from_bytes(&b).unwrap_err();
        match e {
            FormatError::UnsupportedVersion { found, supported } => {
                assert_eq!(found, v);
                assert_eq!(supported, FORMAT_VERSION_EXT);
            }
            ref other => panic!("{other:?}"),
        }
        let msg = e.to_string();
        assert!(msg.contains(&v.to_string()) && msg.contains("supports versions 1 to 3"), "{msg}");
    }
}

/// A fitted image's original size makes a version-2 file; without it the file is version 1,
/// byte for byte as before, and a version-1 reader's files still parse.
#[test]
fn fit_block_is_a_versioned_addition() {
    let plain = sample(16, 4);
    let v1 = plain.to_bytes().unwrap();
    assert_eq!(u16::from_le_bytes([v1[6], v1[7]]), FORMAT_VERSION);
    let fitted = TokenFile { fit: Some(Fit { mode: FitMode::Pad, width: 720, height: 477 }), ..plain.clone() };
    let v2 = fitted.to_bytes().unwrap();
    assert_eq!(u16::from_le_bytes([v2[6], v2[7]]), FORMAT_VERSION_FIT);
    assert_eq!(v2.len(), v1.len() + 9);
    assert_eq!(TokenFile::from_bytes(&v2).unwrap(), fitted);
    assert_eq!(TokenFile::from_bytes(&v1).unwrap(), plain);
    let bad = TokenFile { fit: Some(Fit { mode: FitMode::Crop, width: 0, height: 477 }), ..plain };
    assert!(bad.to_bytes().unwrap_err().to_string().contains("fit.width"));
}

/// `f` with several atoms per step (SPEC 2.4a): the tokens of `n` steps drawn from `seed`.
fn with_atoms(f: TokenFile, atoms: AtomRule, seed: u64) -> TokenFile {
    let (k, n) = (f.procedure.k, f.procedure.n);
    let mut state = seed | 1;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let m = atoms.atoms() as usize;
    let mut tokens = Vec::new();
    for _ in 0..n {
        let mut set: Vec<u32> = Vec::new();
        while set.len() < m {
            let j = (next() % u64::from(k)) as u32;
            if !set.contains(&j) {
                set.push(j);
            }
        }
        match atoms {
            AtomRule::TopM { m } => {
                set.sort_unstable();
                tokens.extend(set);
                tokens.push((next() % (1 << m)) as u32);
            }
            AtomRule::Pursuit { bits, .. } => {
                tokens.extend(set);
                tokens.extend((1..m).map(|_| (next() % (1 << bits)) as u32));
            }
            AtomRule::Single => tokens.extend(set),
        }
    }
    let mut f = f;
    f.procedure.atoms = atoms;
    f.tokens = tokens;
    f
}

#[test]
fn several_atoms_are_a_version_3_record_with_exact_bits() {
    let rules = [AtomRule::TopM { m: 4 }, AtomRule::Pursuit { m: 3, bits: 2 }, AtomRule::TopM { m: 1 }];
    for (f, rule) in [sample(256, 30), sample_alg2(1000, 12)].into_iter().flat_map(|f| rules.map(|r| (f.clone(), r))) {
        let k = f.procedure.k;
        let f = with_atoms(f, rule, u64::from(k));
        let bytes = round_trip(&f);
        assert_eq!(u16::from_le_bytes([bytes[6], bytes[7]]), FORMAT_VERSION_EXT);
        // The payload is N whole steps of the rule's bits, nothing more.
        assert_eq!(f.payload_bits(), u64::from(f.procedure.n) * u64::from(rule.step_bits(k)), "{rule}");
        assert!(f.to_string().contains(&rule.to_string()), "inspect names the rule");
        // The same file with a fit: the fit flag comes before the records.
        let fitted = TokenFile { fit: Some(Fit { mode: FitMode::Crop, width: 40, height: 30 }), ..f.clone() };
        let fb = round_trip(&fitted);
        assert_eq!(fb.len(), bytes.len() + 9);
    }
    // The bit counts of issue 17: ⌈log2 C(256, 4)⌉ + 4 = 32 and 3·8 + 2·2 = 28 bits a step.
    assert_eq!(with_atoms(sample(256, 30), AtomRule::TopM { m: 4 }, 1).payload_bits(), 30 * 32);
    assert_eq!(with_atoms(sample(256, 30), AtomRule::Pursuit { m: 3, bits: 2 }, 1).payload_bits(), 30 * 28);
    // One atom keeps the version-1 bytes of earlier releases.
    let one = sample(256, 30).to_bytes().unwrap();
    assert_eq!(u16::from_le_bytes([one[6], one[7]]), FORMAT_VERSION);
}

#[test]
fn multi_atom_files_refuse_every_corruption() {
    for rule in [AtomRule::TopM { m: 3 }, AtomRule::Pursuit { m: 2, bits: 3 }] {
        let f = with_atoms(sample(1000, 6), rule, 9);
        let bytes = f.to_bytes().unwrap();
        for len in 0..bytes.len() {
            assert!(TokenFile::from_bytes(&bytes[..len]).is_err(), "{rule}: prefix of {len} bytes parsed");
        }
        for i in 0..bytes.len() {
            for mask in [0xFFu8, 0x01, 0x10, 0x80] {
                let mut b = bytes.clone();
                b[i] ^= mask;
                assert!(TokenFile::from_bytes(&b).is_err(), "{rule}: flip {mask:#x} at {i} parsed");
                // With the checksum fixed, what parses must be canonical.
                refresh_crc(&mut b);
                if let Ok(g) = TokenFile::from_bytes(&b) {
                    assert_eq!(g.to_bytes().unwrap(), b, "{rule}: flip {mask:#x} at {i}");
                }
            }
        }
    }
}

#[test]
fn version_3_records_are_checked() {
    let f = with_atoms(sample(16, 4), AtomRule::TopM { m: 2 }, 3);
    let bytes = f.to_bytes().unwrap();
    // Layout after the image: fit flag, record count, tag, u16 length, body [1, M].
    let rec = OFF_PAYLOAD_V3;
    assert_eq!(&bytes[rec..rec + 7], &[0, 1, EXT_ATOM_RULE, 2, 0, 1, 2]);
    let err = |b: Vec<u8>| TokenFile::from_bytes(&b).unwrap_err().to_string();
    assert!(err(patch(&bytes, rec, &[2])).contains("fit.present"));
    assert!(err(patch(&bytes, rec + 2, &[9])).contains("extension record 9"));
    assert!(err(patch(&bytes, rec + 5, &[3])).contains("atom rule 3"));
    assert!(err(patch(&bytes, rec + 6, &[17])).contains("extension.atoms"), "M > K");
    // A rank beyond C(16, 2) = 120 in the 7-bit field.
    let mut b = bytes.clone();
    let pay = rec + 7;
    b[pay] |= 0x7F;
    refresh_crc(&mut b);
    assert!(TokenFile::from_bytes(&b).unwrap_err().to_string().contains("not below C(16, 2)"));
    // Version 3 with no record is not canonical.
    let mut no_rec = bytes[..rec + 2].to_vec();
    no_rec[rec + 1] = 0;
    no_rec.extend_from_slice(&bytes[rec + 7..]);
    refresh_crc(&mut no_rec);
    assert!(err(no_rec).contains("extensions.count"));
}

/// The bytes of `f` (which must have the score-region record) with its extension records
/// replaced by `records` (raw `tag, length, body`), `count` as given, checksum fixed.
fn with_records(f: &TokenFile, count: u8, records: &[(u8, u16, &[u8])]) -> Vec<u8> {
    assert_eq!(f.procedure.score_region, ScoreRegion::Image);
    let bytes = f.to_bytes().unwrap();
    let header = f.header_bytes() as usize;
    // The header ends with: count (1), then the score-region record (tag 2, length 1, mode 1).
    assert_eq!(&bytes[header - 5..header], &[1, 2, 1, 0, 1]);
    let mut b = bytes[..header - 5].to_vec();
    b.push(count);
    for (tag, len, body) in records {
        b.push(*tag);
        b.extend_from_slice(&len.to_le_bytes());
        b.extend_from_slice(body);
    }
    b.extend_from_slice(&bytes[header..bytes.len() - 4]);
    b.extend_from_slice(&[0; 4]);
    refresh_crc(&mut b);
    b
}

/// Version 3 carries extension records; a file without one keeps its version-1/2 bytes.
#[test]
fn score_region_is_a_version_3_extension() {
    let plain = sample(16, 4);
    let v1 = plain.to_bytes().unwrap();
    let mut scored = plain.clone();
    scored.procedure.score_region = ScoreRegion::Image;
    let v3 = round_trip(&scored);
    assert_eq!(u16::from_le_bytes([v3[6], v3[7]]), FORMAT_VERSION_EXT);
    assert_eq!(scored.version(), 3);
    // Fit flag (1) + count (1) + one record (tag, u16 length, u8 mode).
    assert_eq!(v3.len(), v1.len() + 6);
    // Up to the image block, the bytes are version 1's.
    let image_end = plain.header_bytes() as usize;
    assert_eq!(v3[8..image_end], v1[8..image_end]);
    assert_eq!(&v3[image_end..image_end + 6], &[0, 1, 2, 1, 0, 1]);
    // With a fit: the flag says the version-2 fit block follows.
    let fitted = TokenFile { fit: Some(Fit { mode: FitMode::Pad, width: 720, height: 477 }), ..scored.clone() };
    let v3f = round_trip(&fitted);
    let v2 = TokenFile { fit: fitted.fit, ..plain.clone() }.to_bytes().unwrap();
    assert_eq!(v3f.len(), v2.len() + 6);
    assert_eq!(v3f[image_end], 1);
    // Without the option the version-1 file is unchanged, and the default never writes a record.
    assert_eq!(TokenFile::from_bytes(&v1).unwrap().procedure.score_region, ScoreRegion::Input);
    assert_eq!(plain.version(), 1);
    let s = scored.to_string();
    assert!(s.contains("format version 3") && s.contains("eq. 14 on the image only"), "{s}");
    // JSON names it only when it is not the default.
    assert!(serde_json::to_string(&scored).unwrap().contains("\"score_region\":\"Image\""));
    assert!(!serde_json::to_string(&plain).unwrap().contains("score_region"));
}

#[test]
fn extension_records_are_checked() {
    let mut f = sample(16, 4);
    f.procedure.score_region = ScoreRegion::Image;
    // The record the writer makes parses back.
    assert_eq!(TokenFile::from_bytes(&with_records(&f, 1, &[(2, 1, &[1])])).unwrap(), f);
    // Tag 1 is the atom rule (SPEC 2.4a): a body that names no rule is refused by name.
    let e = TokenFile::from_bytes(&with_records(&f, 2, &[(1, 2, &[3, 0]), (2, 1, &[1])])).unwrap_err();
    assert!(e.to_string().contains("atom rule 3"), "{e}");
    // Unknown tags are refused, naming the ones this reader knows.
    let e = TokenFile::from_bytes(&with_records(&f, 2, &[(2, 1, &[1]), (9, 3, &[0, 0, 0])])).unwrap_err();
    assert!(matches!(e, FormatError::UnsupportedExtension { tag: 9, .. }), "{e:?}");
    assert!(e.to_string().contains("score region"), "{e}");
    // Not canonical: no records in version 3, the default stated, a longer body, repeats.
    expect_out_of_range(&with_records(&f, 0, &[]), "extensions.count");
    let e = TokenFile::from_bytes(&with_records(&f, 1, &[(2, 1, &[0])])).unwrap_err();
    assert!(matches!(e, FormatError::InvalidTag { field: "extensions.score_region.mode", tag: 0, .. }), "{e:?}");
    expect_out_of_range(&with_records(&f, 1, &[(2, 2, &[1, 0])]), "extensions.score_region.length");
    let e = TokenFile::from_bytes(&with_records(&f, 2, &[(2, 1, &[1]), (2, 1, &[1])])).unwrap_err();
    assert!(matches!(e, FormatError::Inconsistent { field: "extensions.tag", .. }), "{e:?}");
    // A count larger than the records present runs into the payload: the lengths no longer add up.
    assert!(TokenFile::from_bytes(&with_records(&f, 3, &[(2, 1, &[1])])).is_err());
    // The fit flag is 0 or 1.
    let mut b = f.to_bytes().unwrap();
    let at = f.header_bytes() as usize - 6;
    b[at] = 2;
    refresh_crc(&mut b);
    let e = TokenFile::from_bytes(&b).unwrap_err();
    assert!(matches!(e, FormatError::InvalidTag { field: "fit.present", tag: 2, .. }), "{e:?}");
}

/// x_ref tag 2 names a reference image by the SHA-256 of its values (SPEC 7) without a new
/// version; tag 1 (an unnamed mean) still parses, for the decoder to refuse.
#[test]
fn hashed_reference_image_round_trips() {
    let mut f = sample_alg2(256, 12);
    f.procedure.init = InitStrategy::I2 { x_ref: XRef::Image { sha256: sha(0x3b) } };
    let b = round_trip(&f);
    assert_eq!(u16::from_le_bytes([b[6], b[7]]), FORMAT_VERSION);
    let mut z = f.clone();
    z.procedure.init = InitStrategy::I2 { x_ref: XRef::Zeros };
    assert_eq!(b.len(), z.to_bytes().unwrap().len() + 32);
    let s = f.to_string();
    assert!(s.contains(&format!("x_ref image with values SHA-256 {}", hex(&sha(0x3b)))), "{s}");
    let json = serde_json::to_string(&f).unwrap();
    assert_eq!(serde_json::from_str::<TokenFile>(&json).unwrap(), f);
    // An unknown x_ref tag names all three.
    let at = f.header_bytes() as usize - 17 - 13 - 1 - 33;
    assert_eq!(b[at], 2);
    let mut bad = b.clone();
    bad[at] = 3;
    let e = TokenFile::from_bytes(&bad).unwrap_err().to_string();
    assert!(e.contains("procedure.init.x_ref") && e.contains("2 (reference image named by SHA-256)"), "{e}");
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn expect_out_of_range(b: &[u8], field: &str) -> String {
    match TokenFile::from_bytes(b) {
        Err(e @ FormatError::OutOfRange { field: f, .. }) if f == field => e.to_string(),
        other => panic!("expected out of range `{field}`, got {other:?}"),
    }
}

#[test]
fn absurd_values_with_correct_checksum() {
    let bytes = sample(16, 4).to_bytes().unwrap();
    for k in [0u32, 1, (1 << 24) + 1, u32::MAX] {
        let msg = expect_out_of_range(&patch(&bytes, OFF_K, &k.to_le_bytes()), "procedure.k");
        assert!(msg.contains(&k.to_string()) && msg.contains("2..=16777216"), "{msg}");
    }
    for n in [0u32, MAX_N + 1, u32::MAX] {
        let msg = expect_out_of_range(&patch(&bytes, OFF_N, &n.to_le_bytes()), "procedure.n");
        assert!(msg.contains(&n.to_string()), "{msg}");
    }
    // N within 2^20 but a mixed-radix payload over the cap.
    let mut b = patch(&bytes, OFF_K, &1000u32.to_le_bytes());
    b = patch(&b, OFF_N, &200_000u32.to_le_bytes());
    expect_out_of_range(&b, "procedure.n");
    for p in [1.0f64, -0.5, 2.0, f64::NAN, f64::INFINITY] {
        expect_out_of_range(&patch(&bytes, OFF_P, &p.to_le_bytes()), "procedure.p");
    }
    for t in [0u32, MAX_DDPM_STEPS + 1] {
        expect_out_of_range(&patch(&bytes, OFF_DDPM_T, &t.to_le_bytes()), "model.schedule.t");
    }
    for c in [0u8, 2, 4, 255] {
        expect_out_of_range(&patch(&bytes, OFF_CHANNELS, &[c]), "image.channels");
    }
    for h in [0u32, 8193, u32::MAX] {
        expect_out_of_range(&patch(&bytes, OFF_HEIGHT, &h.to_le_bytes()), "image.height");
        expect_out_of_range(&patch(&bytes, OFF_WIDTH, &h.to_le_bytes()), "image.width");
    }
    // lo ≥ hi, non-finite.
    let b = patch(&bytes, OFF_LO, &2.0f32.to_le_bytes());
    expect_out_of_range(&b, "image.hi");
    let b = patch(&bytes, OFF_LO, &f32::NAN.to_le_bytes());
    expect_out_of_range(&b, "image.lo");
    // T_t ≥ T_r, negative T_t.
    expect_out_of_range(&patch(&bytes, OFF_TT, &1000f64.to_le_bytes()), "procedure.algorithm.t_t");
    expect_out_of_range(&patch(&bytes, OFF_TT, &(-1f64).to_le_bytes()), "procedure.algorithm.t_t");
    // Sampler steps 0.
    expect_out_of_range(&patch(&bytes, OFF_STEPS, &0u32.to_le_bytes()), "procedure.sampler.steps");
}

#[test]
fn invalid_enum_tags() {
    let bytes = sample(16, 4).to_bytes().unwrap();
    for (off, field, tag) in [
        (OFF_FAMILY, "model.family", 4u8),
        (OFF_PARAM, "model.parameterization", 6),
        (OFF_SCHEDULE, "model.schedule", 4),
        (OFF_GENERATOR, "procedure.codebook_generator", 0),
        (OFF_GENERATOR, "procedure.codebook_generator", 2),
        (OFF_MIXING, "procedure.mixing", 2),
        (OFF_CLIP, "procedure.clip_x0", 2),
        (OFF_ALG, "procedure.algorithm", 0),
        (OFF_ALG, "procedure.algorithm", 3),
        (OFF_INIT, "procedure.init", 0),
        (OFF_INIT, "procedure.init", 4),
        (OFF_SAMPLER, "procedure.sampler.kind", 4),
        (OFF_DTYPE, "procedure.dtype", 3),
    ] {
        match TokenFile::from_bytes(&patch(&bytes, off, &[tag])) {
            Err(e @ FormatError::InvalidTag { .. }) => {
                let msg = e.to_string();
                assert!(msg.contains(field) && msg.contains(&tag.to_string()), "{msg}");
            }
            other => panic!("{field} = {tag}: {other:?}"),
        }
    }
}

#[test]
fn algorithm_must_match_p() {
    let bytes = sample(16, 4).to_bytes().unwrap();
    // p = 0 with Algorithm-1 data.
    let b = patch(&bytes, OFF_P, &0f64.to_le_bytes());
    assert!(matches!(TokenFile::from_bytes(&b), Err(FormatError::Inconsistent { field: "procedure.algorithm", .. })));
    let mut f = sample_alg2(16, 4);
    f.procedure.p = 0.25;
    assert!(matches!(f.to_bytes(), Err(FormatError::Inconsistent { .. })));
}

#[test]
fn schedule_must_sum_to_n() {
    let f = sample_alg2(16, 30);
    let bytes = f.to_bytes().unwrap();
    // The first entry's repeats follow T_s, the count and its Δ.
    let alg2_off = OFF_ALG - 4; // EdmSigma has no T field
    assert_eq!(bytes[alg2_off], 2);
    let first_repeats = alg2_off + 1 + 8 + 4 + 8;
    assert_eq!(&bytes[first_repeats..first_repeats + 4], &10u32.to_le_bytes());
    let b = patch(&bytes, first_repeats, &11u32.to_le_bytes());
    match TokenFile::from_bytes(&b) {
        Err(e @ FormatError::ScheduleSum { n: 30, sum: 31 }) => {
            assert!(e.to_string().contains("sum to N = 30"), "{e}")
        }
        other => panic!("{other:?}"),
    }
    // A huge count: truncated, not allocated.
    let b = patch(&bytes, alg2_off + 9, &MAX_SCHEDULE_ENTRIES.to_le_bytes());
    assert!(matches!(
        TokenFile::from_bytes(&b),
        Err(FormatError::Truncated { field: "procedure.algorithm.schedule", .. })
    ));
    let b = patch(&bytes, alg2_off + 9, &u32::MAX.to_le_bytes());
    expect_out_of_range(&b, "procedure.algorithm.schedule.len");
    // Δ must be positive.
    let b = patch(&bytes, alg2_off + 13, &(-1f64).to_le_bytes());
    expect_out_of_range(&b, "procedure.algorithm.schedule.delta");
    // And to_bytes validates too.
    let mut g = f.clone();
    if let Algorithm::Alg2 { schedule, .. } = &mut g.procedure.algorithm {
        schedule[0].repeats += 1;
    }
    assert!(matches!(g.to_bytes(), Err(FormatError::ScheduleSum { .. })));
}

#[test]
fn j0_must_be_below_k0() {
    let f = sample_alg2(16, 30);
    let bytes = f.to_bytes().unwrap();
    // init (10 bytes), sampler (13), dtype (1), image (17), then the payload.
    let init_off = f.header_bytes() as usize - 17 - 1 - 13 - 10;
    assert_eq!(bytes[init_off], 3);
    let b = patch(&bytes, init_off + 6, &256u32.to_le_bytes());
    let msg = expect_out_of_range(&b, "procedure.init.j0");
    assert!(msg.contains("< K0 = 256") && msg.contains("found 256"), "{msg}");
    let b = patch(&bytes, init_off + 2, &0u32.to_le_bytes());
    expect_out_of_range(&b, "procedure.init.k0");
}

#[test]
fn token_not_below_k() {
    // Mixed radix: K = 3, N = 5 packs into 8 bits (3^5 = 243); 0xFF is ≥ 243.
    let bytes = sample(3, 5).to_bytes().unwrap();
    assert_eq!(bytes.len(), OFF_PAYLOAD + 1 + 4);
    let b = patch(&bytes, OFF_PAYLOAD, &[0xFF]);
    match TokenFile::from_bytes(&b) {
        Err(e @ FormatError::TokenOutOfRange { index: 4, k: 3, .. }) => {
            assert!(e.to_string().contains("expected < K = 3"), "{e}")
        }
        other => panic!("{other:?}"),
    }
    // K = 1000, N = 3: 30 bits; all-ones (2^30 − 1 ≥ 10^9).
    let bytes = sample(1000, 3).to_bytes().unwrap();
    let b = patch(&bytes, OFF_PAYLOAD, &[0xFF, 0xFF, 0xFF, 0x3F]);
    assert!(matches!(TokenFile::from_bytes(&b), Err(FormatError::TokenOutOfRange { index: 2, k: 1000, .. })));
    // The largest value below K^N still parses.
    let b = patch(&bytes, OFF_PAYLOAD, &(999_999_999u32).to_le_bytes());
    let f = TokenFile::from_bytes(&b).unwrap();
    assert_eq!(f.tokens, vec![999, 999, 999]);
    // to_bytes refuses tokens ≥ K.
    let mut f = sample(16, 4);
    f.tokens[2] = 16;
    assert!(matches!(f.to_bytes(), Err(FormatError::TokenOutOfRange { index: 2, value: 16, k: 16 })));
    f.tokens.push(0);
    assert!(matches!(f.to_bytes(), Err(FormatError::Inconsistent { field: "tokens", .. })));
}

#[test]
fn padding_bits_must_be_zero() {
    // K = 2, N = 3: 3 bits in one byte; 5 padding bits.
    let bytes = sample(2, 3).to_bytes().unwrap();
    let payload = bytes[OFF_PAYLOAD];
    let b = patch(&bytes, OFF_PAYLOAD, &[payload | 0x08]);
    assert!(matches!(TokenFile::from_bytes(&b), Err(FormatError::NonZeroPadding { bits: 3, unused: 5, found: 1 })));
    // Mixed radix: K = 3, N = 2 → 9 < 16: 4 bits.
    let bytes = sample(3, 2).to_bytes().unwrap();
    let b = patch(&bytes, OFF_PAYLOAD, &[0x10]);
    assert!(matches!(TokenFile::from_bytes(&b), Err(FormatError::NonZeroPadding { bits: 4, .. })));
}

#[test]
fn trailing_bytes() {
    let mut b = sample(16, 4).to_bytes().unwrap();
    let len = b.len();
    b.extend_from_slice(&[0, 0]);
    match TokenFile::from_bytes(&b) {
        Err(FormatError::TrailingBytes { offset, count }) => {
            assert_eq!((offset, count), (len, 2))
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn checksum_mismatch_names_both_values() {
    let mut b = sample(16, 4).to_bytes().unwrap();
    let l = b.len();
    b[l - 1] ^= 0x80;
    let e = TokenFile::from_bytes(&b).unwrap_err();
    assert!(matches!(e, FormatError::ChecksumMismatch { .. }));
    assert!(e.to_string().contains("checksum mismatch"), "{e}");
}

#[test]
fn name_errors() {
    let bytes = sample(16, 4).to_bytes().unwrap();
    let b = patch(&bytes, OFF_NAME_LEN + 1, &[0xFF]);
    assert!(matches!(TokenFile::from_bytes(&b), Err(FormatError::InvalidUtf8 { field: "model.name", .. })));
    let mut f = sample(16, 4);
    f.model.name = "y".repeat(256);
    match f.to_bytes() {
        Err(e @ FormatError::OutOfRange { field: "model.name", .. }) => {
            assert!(e.to_string().contains("256 bytes"), "{e}")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn model_check() {
    let f = sample(16, 4);
    f.check_model("any alias", &sha(0xA0)).unwrap();
    let e = f.check_model("edm-cifar10", &sha(0x11)).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, FormatError::ModelMismatch { .. }));
    assert!(msg.contains(NAME) && msg.contains("a0a7aeb5bcc3cad1"), "{msg}");
    assert!(msg.contains("edm-cifar10") && msg.contains("11181f262d343b42"), "{msg}");
    let e2 = model_mismatch_error(NAME, &sha(0xA0), "edm-cifar10", &sha(0x11));
    assert_eq!(e2.to_string(), msg);
}

#[test]
fn write_atomic_and_read() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("img.gddcm");
    let f = sample_alg2(1000, 300);
    f.write_atomic(&path).unwrap();
    assert_eq!(TokenFile::read(&path).unwrap(), f);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o644);
    }
    // Overwrite in place.
    let g = sample(4096, 300);
    g.write_atomic(&path).unwrap();
    assert_eq!(TokenFile::read(&path).unwrap(), g);
    let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names, vec![std::ffi::OsString::from("img.gddcm")], "no temp files left");
    // An invalid file is not written.
    let mut bad = g.clone();
    bad.tokens[0] = 4096;
    assert!(bad.write_atomic(dir.path().join("bad.gddcm")).is_err());
    assert!(!dir.path().join("bad.gddcm").exists());
    // Missing file: I/O error naming the path.
    let e = TokenFile::read(dir.path().join("missing.gddcm")).unwrap_err();
    assert!(matches!(e, FormatError::Io { .. }));
    assert!(e.to_string().contains("missing.gddcm"), "{e}");
}

#[test]
fn display_summary() {
    let f = sample_alg2(1000, 300);
    let s = f.to_string();
    println!("{s}");
    for needle in [
        "format version 1",
        NAME,
        "a0a7aeb5",
        "EDM family",
        "N = 300, K = 1000",
        "p = 0, Σ-mix",
        "T_s = 2.5",
        "1.25×100",
        "I3",
        "j0 = 17",
        "Heun, 18 steps",
        "3×32×32",
        "payload 2990 bits",
        "+ 8 bits of I3 index",
    ] {
        assert!(s.contains(needle), "missing {needle:?} in\n{s}");
    }
    let s = sample(16, 300).to_string();
    assert!(s.contains("algorithm:  1 (p > 0), T_r = 999, T_t = 0"), "{s}");
    assert!(s.contains("1.1719 bpp"), "{s}");
}

fn arb_file() -> impl Strategy<Value = TokenFile> {
    let k = prop_oneof![2u32..=20, (1u32..=24).prop_map(|m| 1 << m), 2u32..=(1 << 24),];
    (
        (k, 1u32..=600, any::<u64>(), any::<bool>(), proptest::collection::vec(any::<u8>(), 0..40), 0u8..4),
        0u8..6,
        (0u32..4, 1u32..5000),
        (0u32..3, 1u32..=(1 << 24), any::<u32>(), any::<bool>()),
        (0u32..4, 1u32..=1000, 0.01f64..20.0),
        0u32..3,
        (any::<bool>(), 1u32..=8192, 1u32..=8192),
        any::<u64>(),
    )
        .prop_map(
            |(
                (k, n, seed, alg1, name, fam),
                par,
                (sch, t),
                (ini, k0, j0, xr),
                (sk, steps, rho),
                dt,
                (mono, h, w),
                salt,
            )| {
                let mut f = sample(k, n);
                f.model.name = String::from_utf8_lossy(&name).chars().take(60).collect();
                f.model.weights_sha256 = sha((salt >> 8) as u8);
                f.model.family = [Family::Ddpm, Family::Edm, Family::Cm, Family::Rf][fam as usize];
                f.model.parameterization = [
                    Parameterization::Eps,
                    Parameterization::EdmPrecond,
                    Parameterization::VpPrecond,
                    Parameterization::VePrecond,
                    Parameterization::Consistency,
                    Parameterization::Velocity,
                ][par as usize];
                f.model.schedule = match sch {
                    0 => MarginalSchedule::DdpmLinear { t },
                    1 => MarginalSchedule::EdmSigma,
                    2 => MarginalSchedule::EdmVp,
                    _ => MarginalSchedule::RfTau,
                };
                f.procedure.seed = seed;
                f.procedure.mixing = if salt & 1 == 0 { Mixing::SigmaBig } else { Mixing::SigmaSmall };
                f.procedure.clip_x0 = salt & 2 == 0;
                if alg1 {
                    f.procedure.p = (salt % 999 + 1) as f64 / 1000.0;
                    f.procedure.algorithm =
                        Algorithm::Alg1 { t_r: 1.0 + (salt % 1000) as f64, t_t: (salt % 7) as f64 / 8.0, rho };
                } else {
                    f.procedure.p = 0.0;
                    let mut schedule = Vec::new();
                    let mut left = n;
                    let mut s = salt;
                    while left > 0 {
                        let r = (1 + (s % 50) as u32).min(left);
                        s = s.rotate_left(7) ^ 0x5555;
                        schedule.push(ScheduleEntry { delta: 1.0 + (s % 100) as f64 / 3.0, repeats: r });
                        left -= r;
                    }
                    f.procedure.algorithm = Algorithm::Alg2 { t_s: rho * 3.0, schedule };
                }
                let x_ref = match (xr, salt % 3) {
                    (true, _) => XRef::Zeros,
                    (false, 0) => XRef::DatasetMean,
                    (false, _) => XRef::Image { sha256: sha((salt >> 16) as u8) },
                };
                if salt % 5 == 0 {
                    f.procedure.score_region = ScoreRegion::Image;
                }
                if salt % 7 == 0 {
                    f.fit = Some(Fit { mode: FitMode::Resize, width: 1 + (salt >> 20) as u32 % 8192, height: 3 });
                }
                f.procedure.init = match ini {
                    0 => InitStrategy::I1,
                    1 => InitStrategy::I2 { x_ref },
                    _ => InitStrategy::I3 { x_ref, k0, j0: j0 % k0 },
                };
                f.procedure.sampler = FinalSampler {
                    kind: [SamplerKind::Ddim, SamplerKind::Heun, SamplerKind::OneStep, SamplerKind::Euler][sk as usize],
                    steps,
                    rho,
                };
                f.procedure.dtype = [ComputeDtype::F32, ComputeDtype::F16, ComputeDtype::BF16][dt as usize];
                let channels = if mono { 1 } else { 3 };
                let w = if channels == 3 { w.min(5000) } else { w };
                f.image = ImageSpec { channels, height: h, width: w, lo: -(rho as f32), hi: rho as f32 };
                f.tokens = tokens(k, n, salt);
                f
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn prop_round_trip(f in arb_file()) {
        let bytes = f.to_bytes().unwrap();
        let back = TokenFile::from_bytes(&bytes).unwrap();
        prop_assert_eq!(&back, &f);
        prop_assert_eq!(f.total_bits(), 8 * bytes.len() as u64);
        let bits = f.payload_bits();
        let k = f.procedure.k;
        let n = f.procedure.n;
        if k.is_power_of_two() {
            prop_assert_eq!(bits, u64::from(n) * u64::from(k.trailing_zeros()));
        } else {
            // 2^(bits−1) < K^N < 2^bits, checked in f64 logs (fine away from integers).
            let x = f64::from(n) * f64::from(k).log2();
            if (x - x.round()).abs() > 1e-6 {
                prop_assert_eq!(bits, x.ceil() as u64);
            }
        }
    }

    #[test]
    fn prop_random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = TokenFile::from_bytes(&bytes);
        let mut with_magic = b"GDDCM\0\x01\x00".to_vec();
        with_magic.extend_from_slice(&bytes);
        let _ = TokenFile::from_bytes(&with_magic);
    }

    #[test]
    fn prop_corruptions_are_errors_or_canonical(
        f in arb_file(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        fix_crc in any::<bool>(),
        cut in any::<prop::sample::Index>(),
        truncate in any::<bool>(),
    ) {
        let orig = f.to_bytes().unwrap();
        let mut b = orig.clone();
        for (i, v) in &edits {
            let i = i.index(b.len());
            b[i] = *v;
        }
        if fix_crc {
            refresh_crc(&mut b);
        }
        if truncate {
            b.truncate(cut.index(b.len()));
        }
        match TokenFile::from_bytes(&b) {
            // Whatever parses must re-serialise to the same bytes (canonical encoding).
            Ok(g) => prop_assert_eq!(g.to_bytes().unwrap(), b),
            Err(e) => {
                prop_assert!(!e.to_string().is_empty());
                if !fix_crc && !truncate && b != orig {
                    // Header edits may fail earlier; a pure payload/CRC edit must be a checksum error.
                    let header = f.header_bytes() as usize;
                    let only_tail = edits.iter().all(|(i, _)| i.index(orig.len()) >= header);
                    if only_tail {
                        let is_checksum = matches!(e, FormatError::ChecksumMismatch { .. });
                        prop_assert!(is_checksum, "{:?}", e);
                    }
                }
            }
        }
    }
}

/// Writes seed inputs for the fuzz target into `fuzz/corpus/parse/` (run on demand:
/// `cargo test --test format -- --ignored write_fuzz_seeds`).
#[test]
#[ignore]
fn write_fuzz_seeds() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/parse");
    std::fs::create_dir_all(&dir).unwrap();
    let mut files = vec![
        sample(2, 3),
        sample(3, 5),
        sample(16, 4),
        sample(1000, 10),
        sample(1 << 24, 2),
        sample((1 << 24) - 1, 3),
        sample_alg2(7, 9),
        sample_alg2(256, 20),
    ];
    let mut f = sample(5, 6);
    f.procedure.init = InitStrategy::I2 { x_ref: XRef::Zeros };
    f.model.schedule = MarginalSchedule::RfTau;
    f.model.name = String::new();
    files.push(f);
    // Version 3: several atoms per step, the score region, both, with a fit.
    files.push(with_atoms(sample(256, 6), AtomRule::TopM { m: 3 }, 1));
    files.push(with_atoms(sample_alg2(1000, 5), AtomRule::Pursuit { m: 2, bits: 3 }, 2));
    let mut g = with_atoms(sample(16, 4), AtomRule::TopM { m: 2 }, 3);
    g.procedure.score_region = ScoreRegion::Image;
    g.fit = Some(Fit { mode: FitMode::Pad, width: 40, height: 30 });
    files.push(g);
    for (i, f) in files.iter().enumerate() {
        std::fs::write(dir.join(format!("seed-{i:02}.gddcm")), f.to_bytes().unwrap()).unwrap();
    }
}
