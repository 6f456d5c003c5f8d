//! `gddcm sample`: the model's ordinary sampler, as a grid PNG.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use gddcm::codec;
use gddcm::data::Image;

use super::args::{ModelArgs, RunArgs};
use super::common::{check_output_file, device, load_model, progress};

#[derive(Args)]
pub struct SampleArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// How many images.
    #[arg(short, default_value_t = 64)]
    pub n: usize,
    /// Output PNG.
    #[arg(short, long, default_value = "samples.png")]
    pub output: PathBuf,
    /// Noise seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Sampler steps (default: the family's).
    #[arg(long)]
    pub steps: Option<u32>,
    #[command(flatten)]
    pub run: RunArgs,
}

pub fn run(args: SampleArgs) -> Result<()> {
    let SampleArgs { model, n, output, seed, steps, run } = args;
    let model = load_model(&model, &run)?;
    check_output_file(&output)?;
    let dev = device(&run.device)?;
    let pb = progress(&run, 0, "sample");
    let images = codec::generate(&model, n, seed, steps, &dev, pb)?;
    let cols = (n as f64).sqrt().ceil() as usize;
    let grid = Image::grid(&images, cols)?;
    grid.save_png(&output)?;
    println!("{} ({} samples of {})", output.display(), n, model.entry.name);
    Ok(())
}
