//! `shlyuz`: one binary, many targets.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = shlyuz::cli::Cli::parse();
    shlyuz_kit::install_crypto_provider();
    shlyuz::cli::run(cli)
}
