//! The `gddcm` command line: one module per subcommand; option groups shared by several of
//! them in [`args`], helpers in [`common`].

use anyhow::Result;
use clap::{Parser, Subcommand};

mod args;
mod bench;
mod common;
mod decode;
mod encode;
mod eval;
mod inspect;
mod models;
mod rd;
mod roundtrip;
mod sample;
mod search;

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
    /// Search tokenizer parameters (SPEC 8) on a validation set from the training split; write
    /// the best as a profile and every trial as a JSON log.
    Search(search::SearchArgs),
    /// Rate–distortion sweep over K × N at p = 0 (the model's profile) and p > 0 (SPEC 6, 9):
    /// bpp against PSNR/SSIM/stand-ins, as JSON and a plot (PNG and SVG).
    Rd(rd::RdArgs),
    /// End-to-end speed (issue 6): encode and decode images per second for each model at N
    /// tokens and each batch size, with the time split between network, codebook and the rest.
    Bench(bench::BenchArgs),
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
    }
}
