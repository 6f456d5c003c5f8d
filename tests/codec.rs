//! Images → token files (bytes) → images, through the real file format, for every family and
//! both algorithms, with exact analytic denoisers standing in for networks.

use candle_core::Device;
use gddcm::codec;
use gddcm::data::Image;
use gddcm::family::analytic::Gmm;
use gddcm::family::{Family, Precond};
use gddcm::format::{InitStrategy, ScoreRegion, TokenFile, XRef};
use gddcm::profile::{InitKind, ScoreKind, Settings, XRefKind};
use gddcm::reference::{dataset_mean, RefImage};
use gddcm::zoo::{LoadedModel, ModelEntry, Parameterization, RefLookup, WeightsKind};

fn model(family: Family) -> LoadedModel {
    // Data on 1×16×16 images (padded from 12×12 by 2 pixels of −1, like Fashion-MNIST).
    let gmm = Gmm::random(3, 256, 0.2, 0.3, 5);
    let denoiser = gddcm::family::analytic::exact_denoiser(family, &gmm);
    let parameterization = match family {
        Family::Ddpm => Parameterization::DdpmEpsilon,
        Family::Edm => Parameterization::Preconditioned(Precond::EDM),
        Family::Cm => Parameterization::Preconditioned(Precond::CM_CIFAR10),
        Family::Rf => Parameterization::Velocity,
    };
    let entry = ModelEntry {
        name: "analytic-gmm",
        family,
        description: "exact GMM denoiser (tests)",
        weights: WeightsKind::DiffusersUNet2D,
        parameterization,
        channels: 1,
        size: 16,
        pad: 2,
        bundled_dir: None,
        hf_repo: None,
        files: &[],
        download: "",
    };
    LoadedModel {
        entry,
        denoiser,
        weights_sha256: [7; 32],
        dir: ".".into(),
        source: gddcm::zoo::Source::Folder(".".into()),
        x_ref: RefLookup { image: Some(mean()), places: "the test's mean image".into() },
    }
}

/// The mean of the test images, in the model's layout (12×12 in 16×16, margin −1).
fn mean() -> RefImage {
    RefImage::new(dataset_mean(&images(), 16, -1.0).unwrap(), [1, 16, 16], "test mean").unwrap()
}

fn images() -> Vec<Image> {
    (0..3)
        .map(|k| Image {
            channels: 1,
            height: 12,
            width: 12,
            data: (0..144).map(|i| ((i * 7 + k * 40) % 256) as u8).collect(),
        })
        .collect()
}

#[test]
fn files_decode_to_the_encoder_reconstruction() {
    let imgs = images();
    let refs: Vec<&Image> = imgs.iter().collect();
    for family in [Family::Ddpm, Family::Edm, Family::Cm, Family::Rf] {
        let m = model(family);
        for (p, init) in [(0.0, InitKind::I1), (0.0, InitKind::I3), (0.5, InitKind::I1), (0.3, InitKind::I2)] {
            let settings = Settings { k: 37, n: 24, p, init, k0: 20, ..Settings::default() };
            let cfg = settings.to_config(family, m.denoiser.marginal()).unwrap();
            let enc = codec::encode(&m, &cfg, &refs, &Device::Cpu, None).unwrap();
            // Through bytes, as a decoder on another run would see them.
            let files: Vec<TokenFile> =
                enc.files.iter().map(|f| TokenFile::from_bytes(&f.to_bytes().unwrap()).unwrap()).collect();
            assert_eq!(files, enc.files);
            let frefs: Vec<&TokenFile> = files.iter().collect();
            let dec = codec::decode(&m, &frefs, &Device::Cpu, None).unwrap();
            assert_eq!(dec, enc.reconstructions, "{family} p={p} {init:?}");
            assert_eq!((dec[0].height, dec[0].width), (12, 12));
            // ⌈24·log2 37⌉ = 126 payload bits on 144 pixels.
            assert_eq!(files[0].payload_bits(), 126);
        }
    }
}

#[test]
fn decoding_with_other_weights_is_refused() {
    let m = model(Family::Edm);
    let cfg = Settings { n: 4, k: 4, ..Settings::default() }.to_config(Family::Edm, m.denoiser.marginal()).unwrap();
    let imgs = images();
    let enc = codec::encode(&m, &cfg, &[&imgs[0]], &Device::Cpu, None).unwrap();
    let mut other = model(Family::Edm);
    other.weights_sha256 = [8; 32];
    let err = codec::decode(&other, &[&enc.files[0]], &Device::Cpu, None).unwrap_err().to_string();
    assert!(err.contains("analytic-gmm"), "{err}");
}

#[test]
fn wrong_image_sizes_are_refused_with_the_expected_size() {
    let m = model(Family::Edm);
    let cfg = Settings::default().to_config(Family::Edm, m.denoiser.marginal()).unwrap();
    let big = Image { channels: 1, height: 20, width: 20, data: vec![0; 400] };
    let err = codec::encode(&m, &cfg, &[&big], &Device::Cpu, None).err().unwrap().to_string();
    assert!(err.contains("16×16"), "{err}");
}

/// SPEC 7 with the dataset-mean x_ref and eq. 14 scored on the image only: file → bytes →
/// decode gives the encoder's reconstruction bit for bit, for every family and both algorithms;
/// the file names the mean by its hash, and both options change what is encoded.
#[test]
fn mean_x_ref_and_score_region_decode_bit_exactly() {
    let imgs = images();
    let refs: Vec<&Image> = imgs.iter().collect();
    let sha = mean().sha256;
    for family in [Family::Ddpm, Family::Edm, Family::Cm, Family::Rf] {
        let m = model(family);
        for (p, init) in [(0.0, InitKind::I2), (0.0, InitKind::I3), (0.5, InitKind::I2)] {
            let mut seen = Vec::new();
            for (x_ref, score_region) in [
                (XRefKind::Zeros, ScoreKind::Input),
                (XRefKind::Mean, ScoreKind::Input),
                (XRefKind::Zeros, ScoreKind::Image),
                (XRefKind::Mean, ScoreKind::Image),
            ] {
                let what = format!("{family} p={p} {init:?} {x_ref:?} {score_region:?}");
                let settings = Settings { k: 37, n: 24, p, init, k0: 20, x_ref, score_region, ..Settings::default() };
                let cfg = m.config(&settings).unwrap();
                let enc = codec::encode(&m, &cfg, &refs, &Device::Cpu, None).unwrap();
                let bytes: Vec<Vec<u8>> = enc.files.iter().map(|f| f.to_bytes().unwrap()).collect();
                let files: Vec<TokenFile> = bytes.iter().map(|b| TokenFile::from_bytes(b).unwrap()).collect();
                assert_eq!(files, enc.files, "{what}");
                let pr = &files[0].procedure;
                let named = match pr.init {
                    InitStrategy::I2 { x_ref } | InitStrategy::I3 { x_ref, .. } => x_ref,
                    InitStrategy::I1 => unreachable!(),
                };
                let want = if x_ref == XRefKind::Mean { XRef::Image { sha256: sha } } else { XRef::Zeros };
                assert_eq!(named, want, "{what}");
                let region = if score_region == ScoreKind::Image { ScoreRegion::Image } else { ScoreRegion::Input };
                assert_eq!(pr.score_region, region, "{what}");
                let version = u16::from_le_bytes([bytes[0][6], bytes[0][7]]);
                assert_eq!(version, if score_region == ScoreKind::Image { 3 } else { 1 }, "{what}");
                let frefs: Vec<&TokenFile> = files.iter().collect();
                let dec = codec::decode(&m, &frefs, &Device::Cpu, None).unwrap();
                assert_eq!(dec, enc.reconstructions, "{what}");
                seen.push((files.iter().map(|f| f.tokens.clone()).collect::<Vec<_>>(), dec));
            }
            // The mean changes the start (at the small T_s of p = 0 it is most of it); the region
            // changes the choices.
            if p == 0.0 {
                assert_ne!(seen[0], seen[1], "{family} p={p} {init:?}: the mean x_ref changed nothing");
            }
            assert_ne!(seen[0].0, seen[2].0, "{family} p={p} {init:?}: scoring the image only changed nothing");
        }
    }
}

/// A file naming a reference image the decoding model does not hold is refused before any
/// network call, with the hash and where the model's was looked for.
#[test]
fn an_unknown_reference_hash_is_refused() {
    let m = model(Family::Edm);
    let imgs = images();
    let settings = Settings { k: 8, n: 6, init: InitKind::I2, x_ref: XRefKind::Mean, ..Settings::default() };
    let enc = codec::encode(&m, &m.config(&settings).unwrap(), &[&imgs[0]], &Device::Cpu, None).unwrap();
    let hash: String = mean().sha256.iter().map(|b| format!("{b:02x}")).collect();
    // A model without a mean, and one with another image.
    let mut none = model(Family::Edm);
    none.x_ref = RefLookup { image: None, places: "/nowhere/x_ref.safetensors".into() };
    let mut other = model(Family::Edm);
    let zeros = RefImage::new(vec![0.0; 256], [1, 16, 16], "zeros").unwrap();
    other.x_ref = RefLookup { image: Some(zeros.clone()), places: "/elsewhere/x_ref.safetensors".into() };
    for (m2, place, extra) in [
        (&none, "/nowhere/x_ref.safetensors", "no reference image there".to_string()),
        (&other, "/elsewhere/x_ref.safetensors", zeros.sha256_hex()),
    ] {
        let e = format!("{:#}", codec::decode(m2, &[&enc.files[0]], &Device::Cpu, None).unwrap_err());
        assert!(e.contains("procedure.init.x_ref") && e.contains(&hash), "{e}");
        assert!(e.contains(place) && e.contains(&extra), "{e}");
    }
    // Settings asking for the mean of a model without one fail before any work.
    let e = none.config(&settings).unwrap_err().to_string();
    assert!(e.contains("x_ref") && e.contains("x_ref.safetensors"), "{e}");
}
