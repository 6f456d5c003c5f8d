//! The `gddcm` command: tokenize images with a diffusion model and decode them back.

use std::process::ExitCode;

use clap::Parser;

mod cli;

fn main() -> ExitCode {
    gddcm::runtime::prepare_process();
    let cli = cli::Cli::parse();
    match gddcm::runtime::on_pool(|| cli::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
