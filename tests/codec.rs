//! Images → token files (bytes) → images, through the real file format, for every family and
//! both algorithms, with exact analytic denoisers standing in for networks.

use candle_core::Device;
use gddcm::codec;
use gddcm::data::Image;
use gddcm::family::analytic::Gmm;
use gddcm::family::{Family, Precond};
use gddcm::format::TokenFile;
use gddcm::profile::{InitKind, Settings};
use gddcm::zoo::{LoadedModel, ModelEntry, Parameterization, WeightsKind};

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
    }
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
