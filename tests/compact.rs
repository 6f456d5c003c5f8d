//! The compact container (issue 17 item 1): round trips compact ↔ full, the overhead measured on
//! real bytes, every single-byte change and every truncation refused, old full files still
//! read, unknown operating points and fingerprints named in the error, and the shipped
//! operating points of the bundled models pinned.

mod support;
use support::tokens;

use gddcm::format::compact::{crc16, CompactFile, Container, OperatingPoint};
use gddcm::format::*;
use gddcm::ladder::{self, Resolver};

/// An Algorithm-2 EDM file at the bundled models' native 28×28, with init `init`.
fn file(k: u32, n: u32, init: InitStrategy) -> TokenFile {
    let mut sha = [0u8; 32];
    for (i, x) in sha.iter_mut().enumerate() {
        *x = 0xA7u8.wrapping_add((i as u8).wrapping_mul(13));
    }
    let first = n / 3;
    TokenFile {
        model: ModelIdentity {
            name: "fmnist-edm".into(),
            weights_sha256: sha,
            family: Family::Edm,
            parameterization: Parameterization::EdmPrecond,
            schedule: MarginalSchedule::EdmSigma,
        },
        procedure: Procedure {
            codebook_generator: CodebookGenerator::Philox4x32BoxMuller,
            seed: 1_684_300_653,
            k,
            n,
            p: 0.0,
            mixing: Mixing::SigmaBig,
            clip_x0: false,
            algorithm: Algorithm::Alg2 {
                t_s: 0.22,
                schedule: vec![
                    ScheduleEntry { delta: 0.1, repeats: first },
                    ScheduleEntry { delta: 0.01, repeats: n - first },
                ],
            },
            init,
            sampler: FinalSampler { kind: SamplerKind::Heun, steps: 18, rho: 7.0 },
            dtype: ComputeDtype::F32,
            atoms: AtomRule::Single,
            score_region: ScoreRegion::Input,
        },
        image: ImageSpec { channels: 1, height: 28, width: 28, lo: -1.0, hi: 1.0 },
        tokens: tokens(k, n, u64::from(k) * 7 + u64::from(n)),
        fit: None,
    }
}

const I2: InitStrategy = InitStrategy::I2 { x_ref: XRef::Zeros };

/// The operating point `file` was made with, under `id`, native 28×28.
fn point_of(f: &TokenFile, id: u32) -> OperatingPoint {
    OperatingPoint {
        id,
        model: f.model.clone(),
        procedure: f.procedure.clone(),
        image: ImageSpec { height: 28, width: 28, ..f.image },
    }
}

/// Parses either form and expands a compact file with `point`.
fn read(bytes: &[u8], point: &OperatingPoint) -> Result<TokenFile, FormatError> {
    match Container::from_bytes(bytes)? {
        Container::Full(f) => Ok(f),
        Container::Compact(c) => c.expand(point),
    }
}

fn compact_bytes(f: &TokenFile, point: &OperatingPoint) -> Vec<u8> {
    CompactFile::of(f, point).unwrap().expect("made with the point").to_bytes()
}

#[test]
fn compact_and_full_expand_to_the_same_file() {
    let cases = [
        file(256, 300, I2),
        file(256, 300, InitStrategy::I3 { x_ref: XRef::Zeros, k0: 256, j0: 201 }),
        file(1000, 37, InitStrategy::I3 { x_ref: XRef::Zeros, k0: 300, j0: 299 }), // mixed radix, 2-byte j0
        file(2, 5, InitStrategy::I1),
        file(1 << 24, 3, I2),
    ];
    for (i, f) in cases.iter().enumerate() {
        let point = point_of(f, i as u32 * 50); // ids 0..200: one- and two-byte varints
        let compact = compact_bytes(f, &point);
        let full = f.to_bytes().unwrap();
        assert_eq!(full[0], b'G');
        assert_eq!(compact[0], 0xD2);
        let (a, b) = (read(&compact, &point).unwrap(), read(&full, &point).unwrap());
        assert_eq!(a, *f, "case {i}");
        assert_eq!(a, b, "case {i}");
        // Canonical: the expanded file compacts back to the same bytes.
        assert_eq!(compact_bytes(&a, &point), compact, "case {i}");
        match Container::from_bytes(&compact).unwrap() {
            Container::Compact(c) => assert_eq!(c.to_bytes(), compact),
            Container::Full(_) => panic!("compact bytes parsed as full"),
        }
    }
}

#[test]
fn overhead_is_at_most_8_bytes_for_a_shipped_point() {
    // The main job's shape: K = 256, N = 300, I2, 28×28 on a 28×28-native model.
    let f = file(256, 300, I2);
    let point = point_of(&f, 0);
    let bytes = compact_bytes(&f, &point);
    let full = f.to_bytes().unwrap();
    assert_eq!(bytes.len(), 300 + 8, "payload 300 bytes + 8 bytes overhead");
    assert!(full.len() - 300 > 150, "the full header spells out the procedure: {} bytes", full.len() - 300);
    // I3: the ⌈log2 K0⌉ = 8 bits of j0 are rate (SPEC 6), not overhead.
    let f3 = file(256, 300, InitStrategy::I3 { x_ref: XRef::Zeros, k0: 256, j0: 3 });
    let c3 = CompactFile::of(&f3, &point_of(&f3, 0)).unwrap().unwrap();
    assert_eq!((c3.to_bytes().len(), c3.overhead_bytes(), c3.body.len()), (309, 8, 301));
    // An id ≥ 128 takes a second byte; a non-native size its varints.
    let c = CompactFile::of(&f, &point_of(&f, 200)).unwrap().unwrap();
    assert_eq!(c.to_bytes().len(), 309);
    let mut small = file(256, 300, I2);
    small.image.height = 20;
    small.image.width = 300;
    let c = CompactFile::of(&small, &point_of(&f, 0)).unwrap().unwrap();
    assert_eq!(c.size, Some((20, 300)));
    assert_eq!(c.to_bytes()[0], 0xD3);
    assert_eq!(c.overhead_bytes(), 8 + 1 + 2);
    assert_eq!(read(&c.to_bytes(), &point_of(&f, 0)).unwrap(), small);
}

#[test]
fn settings_that_are_not_the_point_stay_full() {
    let f = file(256, 300, I2);
    let point = point_of(&f, 0);
    let mut other = f.clone();
    other.procedure.seed += 1;
    assert!(CompactFile::of(&other, &point).unwrap().is_none());
    let mut other = f.clone();
    other.procedure.sampler.steps = 17;
    assert!(CompactFile::of(&other, &point).unwrap().is_none());
    let mut other = f.clone();
    other.model.weights_sha256[31] ^= 1;
    assert!(CompactFile::of(&other, &point).unwrap().is_none());
    let mut other = f.clone();
    other.image.hi = 2.0;
    assert!(CompactFile::of(&other, &point).unwrap().is_none());
}

/// A small compact file with every optional part: I3 index, explicit size, two-byte id.
fn small() -> (TokenFile, OperatingPoint, Vec<u8>) {
    let mut f = file(5, 7, InitStrategy::I3 { x_ref: XRef::Zeros, k0: 12, j0: 11 });
    f.image.height = 30;
    f.image.width = 300;
    let point = point_of(&f, 130);
    let bytes = compact_bytes(&f, &point);
    assert_eq!(bytes.len(), 1 + 2 + 4 + 1 + 2 + 1 + 3 + 2); // tag, id, fp, size, j0, ⌈7·log2 5⌉ = 17 bits, crc
    (f, point, bytes)
}

#[test]
fn every_single_byte_change_is_refused() {
    let (_, point, bytes) = small();
    for i in 0..bytes.len() {
        for x in 1..=255u8 {
            let mut b = bytes.clone();
            b[i] ^= x;
            let e = read(&b, &point).expect_err(&format!("byte {i} ^ {x:#04x} accepted"));
            let ok = match e {
                FormatError::CompactChecksumMismatch { .. } => true,
                // The first byte no longer says compact v1.
                FormatError::UnsupportedCompactVersion { .. } | FormatError::BadMagic { .. } => i == 0,
                FormatError::Truncated { field: "magic", .. } => i == 0,
                // Id or size bytes that are no longer a valid varint / side.
                FormatError::OutOfRange { field, .. } => field.starts_with("compact."),
                FormatError::Truncated { field, .. } => field.starts_with("compact."),
                _ => false,
            };
            assert!(ok, "byte {i} ^ {x:#04x}: unexpected error {e}");
            assert!(!e.to_string().is_empty());
        }
    }
}

#[test]
fn every_truncation_and_extension_is_refused() {
    let (_, point, bytes) = small();
    for len in 0..bytes.len() {
        let e = read(&bytes[..len], &point).expect_err(&format!("prefix of {len} bytes accepted"));
        let msg = e.to_string();
        assert!(
            msg.contains("truncated") || msg.contains("checksum") || msg.contains("compact.body"),
            "prefix {len}: {msg}"
        );
    }
    // Truncated or extended with a checksum that matches: the payload length catches it.
    for body_len in [0usize, 5, 6, 8] {
        let mut b = bytes[..10].to_vec();
        b.extend(std::iter::repeat_n(0u8, body_len));
        let crc = crc16(&b);
        b.extend_from_slice(&crc.to_le_bytes());
        let e = read(&b, &point).unwrap_err();
        assert!(matches!(e, FormatError::OutOfRange { field: "compact.body", .. }), "{e}");
        assert!(e.to_string().contains("K = 5, N = 7"), "{e}");
    }
}

#[test]
fn other_errors_are_clear() {
    let (f, point, bytes) = small();
    // The full reader names the point and fingerprint.
    let e = TokenFile::from_bytes(&bytes).unwrap_err().to_string();
    assert!(e.contains("compact token file") && e.contains("operating point 130"), "{e}");
    assert!(e.contains(&hex(&f.model.weights_sha256[..4])), "{e}");
    // Another point or model.
    let e = Container::from_bytes(&bytes).map(|c| match c {
        Container::Compact(c) => c.expand(&point_of(&f, 131)),
        Container::Full(_) => unreachable!(),
    });
    let e = e.unwrap().unwrap_err().to_string();
    assert!(e.contains("operating point 130") && e.contains("not point 131"), "{e}");
    // A future compact version.
    let mut b = bytes.clone();
    b[0] = 0xD0 | (2 << 1) | 1;
    let e = read(&b, &point).unwrap_err();
    assert!(matches!(e, FormatError::UnsupportedCompactVersion { found: 2, supported: 1 }), "{e}");
    // An explicit size equal to the native one is not canonical.
    let native = file(5, 7, InitStrategy::I3 { x_ref: XRef::Zeros, k0: 12, j0: 11 });
    let c = CompactFile::of(&native, &point).unwrap().unwrap();
    let c = CompactFile { size: Some((28, 28)), ..c };
    let e = read(&c.to_bytes(), &point).unwrap_err().to_string();
    assert!(e.contains("not canonical"), "{e}");
    // j0 ≥ K0 with a valid checksum.
    let mut b = bytes.clone();
    b[10] = 12;
    let n = b.len() - 2;
    let crc = crc16(&b[..n]);
    b[n..].copy_from_slice(&crc.to_le_bytes());
    let e = read(&b, &point).unwrap_err();
    assert!(matches!(e, FormatError::OutOfRange { field: "procedure.init.j0", .. }), "{e}");
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn old_full_files_still_read() {
    let f = file(16, 40, InitStrategy::I1);
    let bytes = f.to_bytes().unwrap();
    assert!(matches!(Container::from_bytes(&bytes).unwrap(), Container::Full(g) if g == f));
    let stored = Resolver::new(None).parse(&bytes).unwrap();
    assert_eq!(stored.file, f);
    assert!(stored.compact.is_none());
    assert_eq!(stored.bytes, bytes.len() as u64);
}

// --- The bundled models' shipped operating points (need models/ only, no network run). ---

/// A bundled model as `zoo::load` finds it: the default model's embedded copy (an empty
/// folder: its registry is embedded too), the others in `models/`.
fn bundled(name: &str) -> (gddcm::zoo::ModelEntry, std::path::PathBuf, [u8; 32]) {
    let entry = gddcm::zoo::entry(name).unwrap();
    match entry.find(None).unwrap() {
        gddcm::zoo::Source::Embedded => {
            let sha = entry.embedded().unwrap().weights_sha256();
            (entry, std::path::PathBuf::new(), sha)
        }
        gddcm::zoo::Source::Folder(dir) => {
            let sha = gddcm::zoo::sha256_file(&entry.weights_file(&dir)).unwrap();
            (entry, dir, sha)
        }
    }
}

/// Operating point ids must keep their meaning: this pins the full procedure of every shipped
/// point (CRC-32 of its JSON). Add points with new ids; never change these.
#[test]
fn shipped_operating_points_are_pinned() {
    let pins = [
        ("fmnist-edm", 0u32, 195_820_807u32),
        ("fmnist-ddpm", 0, 76_302_507),
        ("fmnist-cm", 0, 3_621_924_655),
        ("fmnist-rf", 0, 3_006_985_892),
        // fmnist-edm's ladder (issue 17 item 3): Algorithm 1 searched for PSNR at each N.
        ("fmnist-edm", 1, 491_381_570),
        ("fmnist-edm", 2, 3_738_831_852),
        ("fmnist-edm", 3, 3_742_146_243),
        ("fmnist-edm", 4, 829_986_773),
        ("fmnist-edm", 5, 67_187_910),
        ("fmnist-edm", 6, 67_613_478),
        ("fmnist-edm", 7, 1_623_474_819),
        ("fmnist-edm", 8, 1_079_602_480),
        ("fmnist-edm", 9, 804_760_165),
        // Both algorithms at their searched settings at K = 256, N = 300 (issue 16): Algorithm 2
        // with the dataset-mean x_ref and the image-only score region.
        ("fmnist-edm", 10, 2_236_311_315),
        // The other bundled models' ladders: Algorithm 1 searched likewise at N = 12…100.
        ("fmnist-ddpm", 1, 160_693_864),
        ("fmnist-ddpm", 2, 2_910_217_269),
        ("fmnist-ddpm", 3, 2_812_300_644),
        ("fmnist-ddpm", 4, 2_653_589_825),
        ("fmnist-ddpm", 5, 3_723_273_866),
        ("fmnist-cm", 1, 1_849_127_584),
        ("fmnist-cm", 2, 3_089_993_002),
        ("fmnist-cm", 3, 1_452_965_267),
        ("fmnist-cm", 4, 1_941_279_235),
        ("fmnist-cm", 5, 1_483_614_199),
        ("fmnist-rf", 1, 1_030_479_207),
        ("fmnist-rf", 2, 2_964_056_874),
        ("fmnist-rf", 3, 4_007_933_686),
        ("fmnist-rf", 4, 1_794_551_040),
        ("fmnist-rf", 5, 343_104_377),
        // Their Algorithm 2 and Algorithm 1 searched at K = 256, N = 300 (issue 16), as EDM's 10.
        ("fmnist-ddpm", 6, 171_129_328),
        ("fmnist-ddpm", 7, 4_125_373_201),
        ("fmnist-cm", 6, 820_079_783),
        ("fmnist-cm", 7, 1_079_057_114),
        ("fmnist-rf", 6, 1_057_357_090),
        ("fmnist-rf", 7, 1_319_710_215),
        // Algorithm 2 beats Algorithm 1 below N = 300 on fmnist-rf and at N = 77 on fmnist-cm (64
        // test images, RESULTS): those searched points join their ladders.
        ("fmnist-rf", 8, 4_004_266_627),
        ("fmnist-rf", 9, 1_186_286_652),
        ("fmnist-rf", 10, 2_131_198_800),
        ("fmnist-cm", 8, 4_019_229_972),
        // Algorithm 1 with p fixed at 0.5 (the paper's Table 1 row), searched at K = 256, N = 300
        // with the mean x_ref and the image-only score region: fmnist-edm's default.
        ("fmnist-edm", 11, 3_290_232_157),
        // The same search for fmnist-ddpm and fmnist-cm: their Table 1 p = 0.5 rows (fmnist-cm's
        // default; fmnist-ddpm's is beaten by its p = 0.75 point 7 and is off rate control).
        ("fmnist-ddpm", 8, 2_656_596_326),
        ("fmnist-cm", 9, 2_868_033_417),
        // fmnist-edm at 0.245 bpp (N = 15), searched for the class kept (the classifier's
        // likelihood of the true label) rather than PSNR.
        ("fmnist-edm", 12, 2_574_053_312),
        // The other ladders' gap between 1.1 and 3.1 bpp: Algorithm 1 searched for PSNR at
        // N = 160 and 240 (mean x_ref, image-only score), as fmnist-edm's points 7 and 8.
        ("fmnist-ddpm", 9, 1_516_631_744),
        ("fmnist-ddpm", 10, 3_533_540_674),
        ("fmnist-cm", 10, 1_151_601_745),
        ("fmnist-cm", 11, 1_399_158_950),
        ("fmnist-rf", 11, 3_348_629_012),
        ("fmnist-rf", 12, 3_444_012_809),
        // fmnist-edm's top rung near 4 bpp: point 11's search continued at N = 380.
        ("fmnist-edm", 13, 3_548_629_291),
    ];
    let mut got = Vec::new();
    for (name, id, _) in pins {
        let (entry, dir, sha) = bundled(name);
        let points = ladder::operating_points(&entry, &dir, sha).unwrap();
        let p = points.iter().find(|p| p.id == id).unwrap_or_else(|| panic!("{name} ships no point {id}"));
        assert_eq!(p.model.weights_sha256, sha);
        assert_eq!((p.image.height, p.image.width, p.image.channels), (28, 28, 1));
        got.push(crc32fast::hash(serde_json::to_string(&p.procedure).unwrap().as_bytes()));
    }
    let want: Vec<u32> = pins.iter().map(|p| p.2).collect();
    assert_eq!(got, want, "a shipped operating point changed: give the new settings a new id");
    // Each model's profile.json (what `-p 0` starts from) is one of its shipped points, so
    // those files are stored compact too.
    for name in ["fmnist-edm", "fmnist-ddpm", "fmnist-cm", "fmnist-rf"] {
        let (entry, dir, sha) = bundled(name);
        let (s, _) = entry.shipped_profile(None).unwrap().expect("a shipped profile");
        let points = ladder::operating_points(&entry, &dir, sha).unwrap();
        let weights = (!dir.as_os_str().is_empty()).then_some(dir.as_path());
        let mean = entry.reference(weights).unwrap().image;
        let cfg = s.to_config_with(entry.family, &entry.marginal(), mean.as_ref()).unwrap();
        let j0 = matches!(cfg.init, gddcm::tokenizer::Init::ClosestNoise { .. }).then_some(0);
        let pr = gddcm::codec::procedure(&cfg, entry.family, gddcm::codec::clip_of_entry(&entry), j0).unwrap();
        assert!(points.iter().any(|p| p.procedure == pr), "{name}: profile.json is no shipped point");
    }
}

/// A file of the shipped point `p` at its native size, with seeded tokens.
fn point_file(p: &OperatingPoint, seed: u64) -> TokenFile {
    TokenFile {
        model: p.model.clone(),
        procedure: p.procedure.clone(),
        image: p.image,
        tokens: tokens(p.procedure.k, p.procedure.n, seed),
        fit: None,
    }
}

#[test]
fn bundled_point_stores_compact_and_resolves() {
    let (entry, dir, sha) = bundled("fmnist-edm");
    let points = ladder::operating_points(&entry, &dir, sha).unwrap();
    let p = &points[0];
    let f = point_file(p, 5);
    let bytes = ladder::store(&f, &points).unwrap();
    assert_eq!(bytes.len(), 300 + 8);
    // A fitted image keeps the full header: only its fit block restores the input's size.
    let fitted = TokenFile {
        fit: Some(gddcm::format::Fit { mode: gddcm::format::FitMode::Crop, width: 720, height: 477 }),
        ..f.clone()
    };
    let full = ladder::store(&fitted, &points).unwrap();
    assert_eq!(full, fitted.to_bytes().unwrap());
    assert_eq!(Resolver::new(None).parse(&full).unwrap().file.fit, fitted.fit);
    let st = Resolver::new(None).parse(&bytes).unwrap();
    assert_eq!(st.file, f);
    assert_eq!(st.overhead_bytes(), 8);
    assert!((st.file_bpp() - 308.0 * 8.0 / 784.0).abs() < 1e-12);
    // Other settings: the full header.
    let mut g = f.clone();
    g.procedure.seed ^= 1;
    let bytes = ladder::store(&g, &points).unwrap();
    assert_eq!(bytes[..6], MAGIC);
    assert_eq!(Resolver::new(None).parse(&bytes).unwrap().file, g);
}

/// A point that starts from a hashed reference image and scores only the image (issue 16)
/// stores compact; its full form is version 3; another reference or region is another point.
#[test]
fn point_with_hashed_x_ref_and_score_region_round_trips() {
    let mut f = file(256, 300, InitStrategy::I3 { x_ref: XRef::Image { sha256: [0x42; 32] }, k0: 256, j0: 9 });
    f.procedure.score_region = ScoreRegion::Image;
    let point = point_of(&f, 3);
    let compact = compact_bytes(&f, &point);
    assert_eq!(compact.len(), 300 + 1 + 8);
    assert_eq!(read(&compact, &point).unwrap(), f);
    let full = f.to_bytes().unwrap();
    assert_eq!(u16::from_le_bytes([full[6], full[7]]), FORMAT_VERSION_EXT);
    assert_eq!(read(&full, &point).unwrap(), f);
    let mut g = f.clone();
    g.procedure.score_region = ScoreRegion::Input;
    assert!(CompactFile::of(&g, &point).unwrap().is_none());
    let mut h = f.clone();
    h.procedure.init = InitStrategy::I3 { x_ref: XRef::Image { sha256: [0x43; 32] }, k0: 256, j0: 9 };
    assert!(CompactFile::of(&h, &point).unwrap().is_none());
}

/// A registry point with `"x_ref": "mean"` and `"score_region": "image"` resolves to the model's
/// shipped mean (by hash) and the score region, and its compact files expand through the resolver.
#[test]
fn registry_point_with_mean_x_ref_resolves() {
    let entry = gddcm::zoo::entry("fmnist-edm").unwrap();
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/edm");
    let dir = tempfile::tempdir().unwrap();
    for f in ["config.json", "diffusion_pytorch_model.safetensors", "x_ref.safetensors"] {
        std::fs::copy(src.join(f), dir.path().join(f)).unwrap();
    }
    let (profile, _) = entry.shipped_profile(None).unwrap().unwrap();
    let settings = gddcm::profile::Settings {
        x_ref: gddcm::profile::XRefKind::Mean,
        score_region: gddcm::profile::ScoreKind::Image,
        ..profile
    };
    let reg = serde_json::json!({ "model": "fmnist-edm", "points": [ { "id": 5, "name": "mean-image", "settings": settings } ] });
    std::fs::write(dir.path().join("operating_points.json"), reg.to_string()).unwrap();
    let sha = gddcm::zoo::sha256_file(&dir.path().join("diffusion_pytorch_model.safetensors")).unwrap();
    let points = ladder::operating_points(&entry, dir.path(), sha).unwrap();
    let mean = gddcm::reference::RefImage::load(&src.join("x_ref.safetensors")).unwrap();
    assert_eq!(points[0].procedure.init, InitStrategy::I2 { x_ref: XRef::Image { sha256: mean.sha256 } });
    assert_eq!(points[0].procedure.score_region, ScoreRegion::Image);
    let p = &points[0];
    let f = point_file(p, 11);
    let bytes = ladder::store(&f, &points).unwrap();
    assert_eq!(bytes.len(), 300 + 8);
    let st = Resolver::new(Some(dir.path())).parse(&bytes).unwrap();
    assert_eq!(st.file, f);
}

#[test]
fn unknown_point_or_fingerprint_is_named() {
    let (_, _, sha) = bundled("fmnist-edm");
    let fp: [u8; 4] = sha[..4].try_into().unwrap();
    let c = CompactFile { point: 200, fingerprint: fp, size: None, body: vec![0; 300] };
    let e = format!("{:#}", Resolver::new(None).parse(&c.to_bytes()).unwrap_err());
    assert!(e.contains("operating point 200") && e.contains(&hex(&fp)), "{e}");
    assert!(e.contains("fmnist-edm") && e.contains("ships operating points 0"), "{e}");
    let c = CompactFile { point: 0, fingerprint: [0xab, 0x12, 0xcd, 0x34], size: None, body: vec![0; 300] };
    let e = format!("{:#}", Resolver::new(None).parse(&c.to_bytes()).unwrap_err());
    assert!(e.contains("operating point 0 of a model whose weights sha256 starts with ab12cd34"), "{e}");
    assert!(e.contains("no installed model matches"), "{e}");
}

/// Compact seeds for the fuzz target (`fuzz/fuzz_targets/parse.rs` expands them against its own
/// points of these shapes; `cargo test --test compact -- --ignored write_compact_fuzz_seeds`).
#[test]
#[ignore]
fn write_compact_fuzz_seeds() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/parse");
    std::fs::create_dir_all(&dir).unwrap();
    let z = XRef::Zeros;
    let mut files = vec![
        file(256, 300, I2),
        file(256, 300, InitStrategy::I3 { x_ref: z, k0: 256, j0: 77 }),
        file(1000, 12, InitStrategy::I1),
    ];
    let mut small = file(5, 7, InitStrategy::I3 { x_ref: z, k0: 300, j0: 299 });
    small.image.height = 30;
    files.push(small);
    for (i, f) in files.iter().enumerate() {
        let point = point_of(f, [0, 1, 200, 3][i]);
        std::fs::write(dir.join(format!("compact-{i:02}.gddcm")), compact_bytes(f, &point)).unwrap();
    }
}

/// `table1` takes each row from the newest shipped point at its p, K and N: for fmnist-edm at
/// K = 256, N = 300 the searched Algorithm 2 (point 10, which superseded point 0) and Algorithm 1
/// with p = 0.5 (point 11); p = 0.75 is point 9; no point at N = 77.
#[test]
fn the_newest_point_at_k_and_n_supersedes_older_ones() {
    let (entry, dir, sha) = bundled("fmnist-edm");
    let rungs = gddcm::rate::ladder_of(&entry, &dir, sha).unwrap();
    let id = |p: f64, n: u32| gddcm::rate::newest_point(&rungs, 256, n, p).map(|r| r.point.id);
    assert_eq!((id(0.0, 300), id(0.5, 300), id(0.75, 300)), (Some(10), Some(11), Some(9)));
    assert_eq!((id(0.0, 77), id(0.5, 77), id(0.25, 300)), (None, None, None));
    assert_eq!(gddcm::rate::newest_point(&rungs, 16, 300, 0.5).map(|r| r.point.id), None);
}
