//! The `gddcm` command: tokenize images with a diffusion model and decode them back.

use std::process::ExitCode;

mod cli;

fn main() -> ExitCode {
    // Writing to a closed pipe (`gddcm inspect --json F | head -1`) ends the process quietly,
    // as Unix tools do, instead of a panic on the failed write.
    #[cfg(unix)]
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    gddcm::runtime::prepare_process();
    let cli = cli::parse();
    match gddcm::runtime::on_pool(|| cli::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", cli::common::escape_untrusted(&cli::common::error_message(&e)));
            ExitCode::FAILURE
        }
    }
}
