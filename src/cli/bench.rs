//! `gddcm bench`: end-to-end encode / decode speed per model and batch size.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use anyhow::{bail, Result};
use candle_core::Device;
use clap::Args;

use gddcm::codec;
use gddcm::data::Split;
use gddcm::tokenizer::Tokenizer;
use gddcm::zoo::{self, LoadedModel};

use super::common::{device, write_json};

#[derive(Args, Clone)]
pub struct BenchArgs {
    /// Models to time (default: the bundled models whose weights are present).
    #[arg(short, long = "model", value_delimiter = ',')]
    pub models: Vec<String>,
    /// Weights folder or file, used for every model given (e.g. one test network).
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// Tokens N.
    #[arg(short = 'n', long, default_value_t = 300)]
    pub n: u32,
    /// Batch sizes.
    #[arg(long, value_delimiter = ',', default_values_t = [1usize, 64])]
    pub batch: Vec<usize>,
    /// Codebook size K (default: the model's profile, else 256).
    #[arg(short = 'k', long)]
    pub k: Option<u32>,
    /// p (default: the model's profile, else 0).
    #[arg(short = 'p', long)]
    pub p: Option<f64>,
    /// Write the rows as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Compute device.
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

/// One row of `gddcm bench`: one model, one batch size.
#[derive(serde::Serialize)]
pub struct BenchRow {
    pub model: String,
    pub family: String,
    pub batch: usize,
    pub k: u32,
    pub n: u64,
    pub p: f64,
    pub nfe_per_batch: u64,
    /// "fmnist test" or "random" images.
    pub images: &'static str,
    pub encode_s: f64,
    pub encode_images_per_s: f64,
    pub encode_network_s: f64,
    pub encode_codebook_s: f64,
    pub encode_rest_s: f64,
    pub decode_s: f64,
    pub decode_images_per_s: f64,
    pub decode_network_s: f64,
    pub decode_codebook_s: f64,
    pub decode_rest_s: f64,
    pub decode_matches_encoder: bool,
}

/// `b` images in the model's input range: Fashion-MNIST test images if present and sized for
/// the model, else seeded uniform noise in [−1, 1].
fn bench_images(model: &LoadedModel, b: usize, dev: &Device) -> Result<(candle_core::Tensor, &'static str)> {
    let (c, s, _) = model.shape();
    if let Ok(ds) = gddcm::data::fashion_mnist(Path::new(gddcm::data::FASHION_MNIST_DIR), Split::Test, b) {
        let (h, w) = (ds.images[0].height, ds.images[0].width);
        if c == 1 && ds.images.len() == b {
            if let Ok(pad) = codec::padding_for(model, h, w) {
                let data: Vec<f32> = ds.images.iter().flat_map(|i| i.to_model(pad, codec::PAD_VALUE)).collect();
                return Ok((candle_core::Tensor::from_vec(data, (b, c, s, s), dev)?, "fmnist test"));
            }
        }
    }
    let cb = gddcm::codebook::Codebooks::new(0xBE4C, c * s * s);
    let data: Vec<f32> = (0..b as u32).flat_map(|j| cb.entry(3, 0, j)).map(|v| (v * 0.5).clamp(-1.0, 1.0)).collect();
    Ok((candle_core::Tensor::from_vec(data, (b, c, s, s), dev)?, "random"))
}

pub fn run(args: BenchArgs) -> Result<()> {
    use gddcm::tokenizer::Timings;
    use std::sync::Arc;
    use std::time::Instant;
    if args.batch.is_empty() || args.batch.contains(&0) {
        bail!("batch sizes must be at least 1");
    }
    if args.n == 0 {
        bail!("N must be at least 1");
    }
    let names: Vec<String> = if args.models.is_empty() {
        let present: Vec<String> = zoo::entries()
            .iter()
            .filter(|e| e.bundled_dir.is_some() && e.available(args.weights.as_deref()))
            .map(|e| e.name.to_string())
            .collect();
        if present.is_empty() {
            bail!("no bundled model weights found; name models with --model (and --weights)");
        }
        present
    } else {
        args.models.clone()
    };
    let dev = device(&args.device)?;
    let mut rows = Vec::new();
    println!(
        "{:<14} {:>5} {:>5} {:>5} {:>4} | {:>9} {:>6} {:>6} {:>6} | {:>9} {:>6} {:>6} {:>6}",
        "model", "batch", "K", "N", "p", "enc im/s", "net%", "cb%", "rest%", "dec im/s", "net%", "cb%", "rest%"
    );
    for name in &names {
        let model = zoo::load(name, args.weights.as_deref(), &dev)?;
        let mut s = model.profile()?.unwrap_or_default();
        s.n = args.n;
        if let Some(k) = args.k {
            s.k = k;
        }
        if let Some(p) = args.p {
            if (p > 0.0) != (s.p > 0.0) {
                (s.t_start, s.t_end, s.grid_rho) = (None, None, None);
            }
            s.p = p;
        }
        let cfg = model.config(&s)?;
        for &b in &args.batch {
            let (x, images) = bench_images(&model, b, &dev)?;
            let timings = Arc::new(Timings::default());
            let mut tok = Tokenizer::new(model.denoiser.as_ref(), &cfg, model.shape());
            tok.timings = Some(timings.clone());
            tok.margin = model.entry.pad;
            let t0 = Instant::now();
            let enc = tok.encode(&x)?;
            let encode_s = t0.elapsed().as_secs_f64();
            let (enc_net, enc_cb, nfe) =
                (timings.network_s(), timings.codebook_s(), timings.nfe.load(Ordering::Relaxed));
            timings.reset();
            let t1 = Instant::now();
            let dec = tok.decode(&enc.tokens, &dev)?;
            let decode_s = t1.elapsed().as_secs_f64();
            let (dec_net, dec_cb) = (timings.network_s(), timings.codebook_s());
            let same = (&dec - &enc.reconstruction)?.abs()?.max_all()?.to_scalar::<f32>()? == 0.0;
            let row = BenchRow {
                model: name.clone(),
                family: model.entry.family.to_string(),
                batch: b,
                k: cfg.k,
                n: cfg.algorithm.tokens(),
                p: cfg.algorithm.p(),
                nfe_per_batch: nfe,
                images,
                encode_s,
                encode_images_per_s: b as f64 / encode_s,
                encode_network_s: enc_net,
                encode_codebook_s: enc_cb,
                encode_rest_s: (encode_s - enc_net - enc_cb).max(0.0),
                decode_s,
                decode_images_per_s: b as f64 / decode_s,
                decode_network_s: dec_net,
                decode_codebook_s: dec_cb,
                decode_rest_s: (decode_s - dec_net - dec_cb).max(0.0),
                decode_matches_encoder: same,
            };
            let pc = |v: f64, t: f64| 100.0 * v / t;
            println!(
                "{:<14} {:>5} {:>5} {:>5} {:>4} | {:>9.3} {:>6.1} {:>6.1} {:>6.1} | {:>9.3} {:>6.1} {:>6.1} {:>6.1}",
                row.model,
                b,
                row.k,
                row.n,
                row.p,
                row.encode_images_per_s,
                pc(enc_net, encode_s),
                pc(enc_cb, encode_s),
                pc(row.encode_rest_s, encode_s),
                row.decode_images_per_s,
                pc(dec_net, decode_s),
                pc(dec_cb, decode_s),
                pc(row.decode_rest_s, decode_s)
            );
            if !same {
                eprintln!("warning: {name} batch {b}: the decode differs from the encoder's reconstruction");
            }
            rows.push(row);
        }
    }
    let threads = std::env::var("RAYON_NUM_THREADS").unwrap_or_default();
    println!("({} on {} threads; images: {})", args.device, threads, rows.first().map(|r| r.images).unwrap_or("-"));
    if let Some(path) = &args.json {
        write_json(path, &serde_json::json!({ "device": args.device, "threads": threads, "rows": rows }))?;
    }
    Ok(())
}
