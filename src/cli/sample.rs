//! `gddcm sample`: the model's ordinary sampler, as a grid PNG, and with `--quality` the
//! samples' quality against the Fashion-MNIST test set (the yardstick of the bundled models).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;

use gddcm::codec;
use gddcm::data::{Image, Split};
use gddcm::eval::default_classifier;
use gddcm::metrics::samples::{pad_to_classifier, sample_quality, SampleQuality};
use gddcm::metrics::standin::{ClassifierStandIn, STANDIN_SIZE};
use gddcm::metrics::ImageU8;

use super::args::{ModelArgs, RunArgs};
use super::common::{check_output_file, device, load_model, progress, to_metric, write_json};

#[derive(Args)]
pub struct SampleArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// How many images.
    #[arg(short, default_value_t = 64)]
    pub n: usize,
    /// Output PNG: a grid of the first `--grid` samples.
    #[arg(short, long, default_value = "samples.png")]
    pub output: PathBuf,
    /// How many samples the grid shows (default: all of them, at most 64).
    #[arg(long)]
    pub grid: Option<usize>,
    /// Noise seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Sampler steps (default: the family's).
    #[arg(long)]
    pub steps: Option<u32>,
    /// Measure the samples against real images: the bundled classifier's Frechet distance (a
    /// stand-in, not FID), the same for real images of the same count, noise-like samples
    /// (rougher than 99.9% of the real images) and predicted classes.
    #[arg(long)]
    pub quality: bool,
    /// The real images of --quality: `fmnist` (all 10 000 test images of Debian's
    /// dataset-fashion-mnist) or a folder of gray images up to 32×32.
    #[arg(long, default_value = "fmnist")]
    pub reference: String,
    /// Classifier weights for --quality (default: models/classifier/model.safetensors).
    #[arg(long)]
    pub classifier: Option<PathBuf>,
    /// Write the --quality numbers, with the model and sampler settings, as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
    #[command(flatten)]
    pub run: RunArgs,
}

pub fn run(args: SampleArgs) -> Result<()> {
    let SampleArgs { model, n, output, grid, seed, steps, quality, reference, classifier, json, run } = args;
    if n == 0 {
        bail!("-n must be at least 1");
    }
    if quality && n < 2 {
        bail!("--quality needs at least 2 samples (-n 2)");
    }
    if json.is_some() && !quality {
        bail!("--json writes the --quality numbers: add --quality");
    }
    let model = load_model(&model, &run)?;
    check_output_file(&output)?;
    if let Some(j) = &json {
        check_output_file(j)?;
    }
    // Everything --quality needs is loaded before the first sampler step.
    let judge = if quality {
        Some(Judge::load(model.entry.name, model.shape(), n, &reference, classifier.as_deref())?)
    } else {
        None
    };

    let dev = device(&run.device)?;
    let pb = progress(&run, 0, "sample");
    let images = codec::generate(&model, n, seed, steps, &dev, pb)?;
    let shown = grid.unwrap_or(64).clamp(1, n);
    let cols = (shown as f64).sqrt().ceil() as usize;
    Image::grid(&images[..shown], cols)?.save_png(&output)?;
    println!("{} ({} of {} samples of {})", output.display(), shown, n, model.entry.name);

    if let Some(judge) = judge {
        let samples: Vec<ImageU8> = images.iter().map(to_metric).collect::<Result<_>>()?;
        let q = judge.measure(&samples, run.batch)?;
        print_quality(&q);
        if let Some(j) = &json {
            let value = serde_json::json!({
                "model": model.entry.name,
                "samples": n,
                "seed": seed,
                "sampler_steps": steps,
                "classifier": judge.classifier.display().to_string(),
                "reference": judge.reference_name,
                "noise_like_test": "roughness (mean |difference| of adjacent pixels, 8-bit levels) above the value only 0.1% of the reference images exceed",
                "quality": q,
            });
            write_json(j, &value)?;
            println!("{}", j.display());
        }
    }
    Ok(())
}

/// The classifier and the reference images of `--quality`.
struct Judge {
    classifier: PathBuf,
    net: ClassifierStandIn,
    reference: Vec<ImageU8>,
    reference_name: String,
}

impl Judge {
    fn load(
        model: &str,
        shape: (usize, usize, usize),
        n: usize,
        reference: &str,
        classifier: Option<&Path>,
    ) -> Result<Self> {
        if shape != (1, STANDIN_SIZE, STANDIN_SIZE) {
            bail!(
                "--quality measures Fashion-MNIST models (1x{STANDIN_SIZE}x{STANDIN_SIZE} samples); {model} makes {}x{}x{}",
                shape.0,
                shape.1,
                shape.2
            );
        }
        let classifier = match classifier {
            Some(p) => p.to_path_buf(),
            None => default_classifier().context(
                "--quality needs the bundled classifier, models/classifier/model.safetensors (in the repository; \
                 tools/train/train.py classifier retrains it), or --classifier FILE",
            )?,
        };
        let net =
            ClassifierStandIn::load(&classifier).with_context(|| format!("classifier {}", classifier.display()))?;
        let (data, reference_name) = if reference == "fmnist" {
            let dir = Path::new(gddcm::data::FASHION_MNIST_DIR);
            let data = gddcm::data::fashion_mnist(dir, Split::Test, usize::MAX)
                .context("--reference fmnist reads the test split of Debian's dataset-fashion-mnist")?;
            let name = format!("Fashion-MNIST test split ({} images), padded to 32x32", data.images.len());
            (data, name)
        } else {
            let data = gddcm::data::image_folder(Path::new(reference), 1, usize::MAX)?;
            let name = format!("{} ({} images)", reference, data.images.len());
            (data, name)
        };
        if data.images.len() < n {
            bail!(
                "--quality compares {n} samples with as many real images, and {reference} has {}: ask for at most that many (-n)",
                data.images.len()
            );
        }
        let reference = data
            .images
            .iter()
            .zip(&data.names)
            .map(|(i, name)| pad_to_classifier(&to_metric(i)?).with_context(|| format!("reference image {name}")))
            .collect::<Result<_>>()?;
        Ok(Self { classifier, net, reference, reference_name })
    }

    fn measure(&self, samples: &[ImageU8], batch: usize) -> Result<SampleQuality> {
        Ok(sample_quality(&self.net, samples, &self.reference, batch.max(64))?)
    }
}

fn print_quality(q: &SampleQuality) {
    println!(
        "classifier FD (stand-in, not FID) of {} samples against {} real images: {:.2} (real images, same count: {:.2})",
        q.n_samples, q.n_reference, q.classifier_fd, q.floor_fd
    );
    println!(
        "noise-like samples: {} ({:.1}%; roughness above {:.2}, which {:.1}% of the real images exceed; mean roughness {:.2}, real images {:.2})",
        q.noise_like,
        100.0 * q.noise_like_fraction,
        q.roughness_threshold,
        100.0 * q.noise_like_fraction_reference,
        q.mean_roughness,
        q.mean_roughness_reference
    );
    println!("predicted classes {:?}, mean top probability {:.3}", q.predicted_class_histogram, q.mean_max_softmax);
}
