//! `gddcm x-ref`: the training-set mean reference image `x_ref` of a model (SPEC 7), in its value
//! range and input layout, as the `x_ref.safetensors` shipped beside its weights.

use std::path::{Path, PathBuf};

use anyhow::{ensure, Result};
use clap::Args;

use gddcm::codec::PAD_VALUE;
use gddcm::data::{Split, FASHION_MNIST_DIR};
use gddcm::reference::{dataset_mean, RefImage};
use gddcm::zoo;

use super::common::{check_output_file, check_outputs};

#[derive(Args)]
pub struct XRefArgs {
    /// Model name (see `gddcm models`): its channels, input size and padding set the layout.
    #[arg(short, long)]
    pub model: Option<String>,
    /// `fmnist`: the whole Fashion-MNIST training split (Debian's dataset-fashion-mnist), or a
    /// folder of images of the model's native size.
    #[arg(long, default_value = "fmnist")]
    pub data: String,
    /// Output file (the model folder's `x_ref.safetensors`).
    #[arg(short, long)]
    pub output: PathBuf,
    /// Overwrite the output if it exists.
    #[arg(long)]
    pub force: bool,
}

pub fn run(args: XRefArgs) -> Result<()> {
    let XRefArgs { model, data, output, force } = args;
    let entry = zoo::entry(model.as_deref().unwrap_or(zoo::default_model()))?;
    check_outputs(&[(output.clone(), Path::new(&data))], force)?;
    check_output_file(&output)?;
    let (images, what) = if data == "fmnist" {
        let ds = gddcm::data::fashion_mnist(Path::new(FASHION_MNIST_DIR), Split::Val, usize::MAX)?;
        let what = format!("the {} images of Fashion-MNIST's training split", ds.images.len());
        (ds.images, what)
    } else {
        let ds = gddcm::data::image_folder(Path::new(&data), entry.channels, usize::MAX)?;
        let what = format!("the {} images of {}", ds.images.len(), data);
        (ds.images, what)
    };
    let side = entry.native_side();
    ensure!(
        images.iter().all(|i| i.height == side && i.width == side && i.channels == entry.channels),
        "model '{}' takes {side}×{side} images with {} channel(s); the data holds others",
        entry.name,
        entry.channels
    );
    let values = dataset_mean(&images, entry.size, PAD_VALUE)?;
    let description = format!(
        "training-set mean of {}: mean of u8/127.5 - 1 per pixel (integer sums, rounded once to f32), \
         centred in {s}x{s} with a margin of {} (gddcm x-ref)",
        what,
        PAD_VALUE,
        s = entry.size
    );
    let r = RefImage::new(values, [entry.channels, entry.size, entry.size], description)?;
    gddcm::data::write_atomic(&output, &r.to_safetensors()?)?;
    println!("{}: x_ref of {} from {what}, values SHA-256 {}", output.display(), entry.name, r.sha256_hex());
    Ok(())
}
