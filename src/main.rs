//! `shlyuz`: one binary, many targets.

use std::process::ExitCode;

use clap::Parser;

/// mimalloc: the gateway allocates and frees small buffers for every call (headers, frames, log
/// rows); glibc's malloc spent about 10 % of its CPU on that (docs/performance.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = shlyuz::cli::Cli::parse();
    shlyuz_kit::install_crypto_provider();
    shlyuz::cli::run(cli)
}
