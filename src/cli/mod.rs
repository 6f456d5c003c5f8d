//! The `gddcm` command line: one module per subcommand; option groups shared by several of
//! them in [`args`], helpers in [`common`].

use anyhow::Result;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

mod args;
mod bench;
pub mod common;
mod decode;
mod encode;
mod eval;
mod font;
mod inspect;
mod models;
mod rd;
mod roundtrip;
mod sample;
mod search;
mod xref;

#[derive(Parser)]
#[command(
    name = "gddcm",
    version,
    about = "Turn images into discrete tokens (and back) with a pretrained diffusion model (gDDCM, arXiv 2511.13387)"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Tokenize images into .gddcm files.
    Encode(encode::EncodeArgs),
    /// Rebuild images from .gddcm files.
    Decode(decode::DecodeArgs),
    /// Encode and decode images; print bits per pixel, PSNR and SSIM, and write
    /// original | reconstruction side by side.
    Roundtrip(roundtrip::RoundtripArgs),
    /// Show what a .gddcm file holds.
    Inspect(inspect::InspectArgs),
    /// List the known models and whether their weights are present.
    Models(models::ModelsArgs),
    /// Tokenize a dataset, decode it from the token files and measure (bpp, PSNR, SSIM,
    /// LPIPS, FID, IS, classifier stand-ins, speed).
    Eval(eval::EvalArgs),
    /// The paper's Table 1: each model at p = 0 (its profile) and p = 0.5, same N and K.
    Table1(eval::Table1Args),
    /// Draw images with a model's ordinary sampler, as a grid PNG.
    Sample(sample::SampleArgs),
    // ---- tools: search, rd, bench (issues 5 and 6) ----
    /// Search tokenizer parameters on a validation set from the training split; write
    /// the best as a profile and every trial as a JSON log.
    Search(search::SearchArgs),
    /// Rate–distortion sweep over K × N at p = 0 (the model's profile) and p > 0:
    /// bpp against PSNR/SSIM/stand-ins, as JSON and a plot (PNG and SVG).
    Rd(rd::RdArgs),
    /// End-to-end speed: encode and decode images per second for each model at N
    /// tokens and each batch size, with the time split between network, codebook and the rest.
    Bench(bench::BenchArgs),
    /// Compute a model's training-set mean reference image x_ref (of the I2/I3 initial points)
    /// in its value range and layout, as the x_ref.safetensors shipped beside its weights.
    #[command(name = "x-ref")]
    XRef(xref::XRefArgs),
}

/// The command line, with the help of the tokenizing commands saying which settings the
/// default model's shipped profile supplies (read at run time, so it is always that file's).
pub fn parse() -> Cli {
    let text = settings_help();
    let mut cmd = Cli::command();
    for sub in ["encode", "roundtrip", "eval"] {
        cmd = cmd.mut_subcommand(sub, |c| c.after_help(text.clone()));
    }
    Cli::from_arg_matches(&cmd.get_matches()).unwrap_or_else(|e| e.exit())
}

fn settings_help() -> String {
    use gddcm::profile::Settings;
    let show = |s: &Settings| {
        let mut v = vec![format!("K = {}, N = {}, p = {}", s.k, s.n, s.p)];
        if let Some(t) = s.t_start {
            v.push(format!("T_s = {t:.4}"));
        }
        if s.p == 0.0 {
            v.push(format!("{} intervals", s.intervals));
            if let (Some(a), Some(b)) = (s.dt_min, s.dt_max) {
                v.push(format!("jumps {a:.4}..{b:.4} of T_s"));
            }
            v.push(format!("σ_max = {:.3}, ρ = {:.3}", s.sigma_max, s.rho));
        }
        v.push(format!("init {:?}", s.init));
        if s.x_ref != gddcm::profile::XRefKind::Zeros {
            v.push(format!("x_ref {:?}", s.x_ref));
        }
        if s.score_region != gddcm::profile::ScoreKind::Input {
            v.push(format!("eq. 14 scored on the {:?} region", s.score_region));
        }
        v.join(", ")
    };
    let name = gddcm::zoo::default_model();
    let shipped = gddcm::zoo::entry(name).ok().and_then(|e| e.shipped_profile(None).ok().flatten()).map(|(s, _)| s);
    let shipped = match shipped {
        Some(s) => format!("The default model {name} ships a profile: {}.", show(&s)),
        None => format!("The default model {name} has no shipped profile here."),
    };
    format!(
        "Settings: --profile FILE, else the model's shipped profile (profile.json beside its weights), else \
         the defaults; the flags above override single values.\n{shipped}\nDefaults without a profile: {}.\n\n\
         Images: PNG or JPEG, grayscale or colour (colour and alpha are dropped for a grayscale model, \
         with a warning). The bundled models take 28×28 (up to 32×32 with an even margin, padded with \
         black); other sizes need --fit.",
        show(&Settings::default())
    )
}

/// Runs the parsed command.
pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Encode(a) => encode::run(a),
        Command::Decode(a) => decode::run(a),
        Command::Roundtrip(a) => roundtrip::run(a),
        Command::Inspect(a) => inspect::run(a),
        Command::Models(a) => models::run(a),
        Command::Eval(a) => eval::run(a),
        Command::Table1(a) => eval::run_table1(a),
        Command::Sample(a) => sample::run(a),
        // ---- tools: search, rd, bench ----
        Command::Search(a) => search::run(a),
        Command::Rd(a) => rd::run(a),
        Command::Bench(a) => bench::run(a),
        Command::XRef(a) => xref::run(a),
    }
}
