//! Every bundled model loads through the same loaders as the real checkpoints and tokenizes
//! and decodes through the engine; its reconstructions beat a trivial baseline (the mean of the
//! example images) by a clear PSNR margin.

use candle_core::Device;
use gddcm::codec;
use gddcm::data::Image;
use gddcm::metrics::image::ImageU8;
use gddcm::metrics::ssim::psnr;
use gddcm::zoo;

fn examples() -> Vec<Image> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/examples");
    let mut paths: Vec<_> = std::fs::read_dir(&dir).expect("assets/examples").map(|e| e.unwrap().path()).collect();
    paths.sort();
    paths.iter().take(4).map(|p| Image::load(p, 1).unwrap()).collect()
}

fn u8img(i: &Image) -> ImageU8 {
    ImageU8::from_chw(i.channels, i.height, i.width, i.data.clone()).unwrap()
}

#[test]
fn each_bundled_family_reconstructs_better_than_the_mean_image() {
    let imgs = examples();
    let mean = Image {
        channels: 1,
        height: imgs[0].height,
        width: imgs[0].width,
        data: (0..imgs[0].data.len())
            .map(|p| (imgs.iter().map(|i| i.data[p] as f64).sum::<f64>() / imgs.len() as f64).round() as u8)
            .collect(),
    };
    let baseline: f64 = imgs.iter().map(|i| psnr(&u8img(i), &u8img(&mean)).unwrap()).sum::<f64>() / imgs.len() as f64;
    let refs: Vec<&Image> = imgs.iter().collect();
    for name in ["fmnist-ddpm", "fmnist-edm", "fmnist-cm", "fmnist-rf"] {
        let model =
            zoo::load(name, None, &candle_core::Device::Cpu).unwrap_or_else(|e| panic!("bundled model {name}: {e:#}"));
        // The model's shipped profile (N = 300, K = 256): its parameters were searched for that rate.
        let settings = model.profile().unwrap().unwrap_or_default();
        let cfg = model.config(&settings).unwrap();
        let enc = codec::encode(&model, &cfg, &refs, &Device::Cpu, None).unwrap();
        let files: Vec<_> = enc.files.iter().collect();
        let dec = codec::decode(&model, &files, &Device::Cpu, None).unwrap();
        assert_eq!(dec, enc.reconstructions, "{name}: decode differs from the encoder");
        let got: f64 =
            imgs.iter().zip(&dec).map(|(a, b)| psnr(&u8img(a), &u8img(b)).unwrap()).sum::<f64>() / imgs.len() as f64;
        eprintln!("{name}: PSNR {got:.2} dB vs mean-image baseline {baseline:.2} dB");
        assert!(
            got > baseline + 3.0,
            "{name}: PSNR {got:.2} dB does not beat the mean image ({baseline:.2} dB) by 3 dB"
        );
    }
}
