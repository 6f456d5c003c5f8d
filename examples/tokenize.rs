//! Tokenize one image with the bundled default model and rebuild it from the token file:
//! the library calls behind `gddcm roundtrip`.
//!
//! `cargo run --release --example tokenize [IMAGE]`

use std::path::PathBuf;

use anyhow::Result;
use candle_core::Device;
use gddcm::data::Image;
use gddcm::format::TokenFile;
use gddcm::metrics::image::ImageU8;
use gddcm::metrics::ssim::psnr;
use gddcm::{codec, ladder, zoo};

fn main() -> Result<()> {
    let path = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("assets/examples/fmnist_test_0_9.png"));
    // The bundled EDM model and its shipped profile (p = 0, N = 300, K = 256).
    let model = zoo::load(zoo::default_model(), None, &candle_core::Device::Cpu)?;
    let settings = model.profile()?.unwrap_or_default();
    let cfg = settings.to_config(model.entry.family, model.denoiser.marginal())?;

    let image = Image::load(&path, model.entry.channels)?;
    let encoded = codec::encode(&model, &cfg, &[&image], &Device::Cpu, None)?;
    // The bytes as stored: compact (8 bytes besides the tokens), since these settings are the
    // model's shipped operating point 0; other settings would get the full header.
    let bytes = &encoded.bytes[0];
    println!("{}: {} tokens, {} bytes on disk", path.display(), encoded.files[0].tokens.len(), bytes.len());

    // A decoder needs only the bytes and the installed model the file names.
    let stored = ladder::Resolver::new(None).parse(bytes)?;
    let file: &TokenFile = &stored.file;
    let decoded = codec::decode(&model, &[file], &Device::Cpu, None)?;
    let u8img = |i: &Image| ImageU8::from_chw(i.channels, i.height, i.width, i.data.clone());
    println!(
        "PSNR {:.2} dB at {:.3} bits per pixel of file ({:.3} of token payload)",
        psnr(&u8img(&image)?, &u8img(&decoded[0])?)?,
        stored.file_bpp(),
        file.payload_bpp()
    );
    Ok(())
}
