//! `shlyuz bench …`: benchmarks as commands, not timed tests. Each prints throughput and latency
//! percentiles of several scenarios measured in one run, so ratios between them are meaningful on
//! whatever machine runs them.

pub mod async_channel;
pub mod gateway;
pub mod load;
pub mod notify;
pub mod stats;

/// The benchmarks.
#[derive(Debug, clap::Subcommand)]
pub enum BenchCommand {
    /// The gateway against direct calls and nginx grpc_pass: throughput, latency, memory.
    Gateway(gateway::GatewayBenchArgs),
    /// The async channel: accepted messages per second and send-to-delivered latency.
    Async(async_channel::AsyncBenchArgs),
    /// Notify: notifications accepted per second and sent per second (log provider).
    Notify(notify::NotifyBenchArgs),
}

/// Runs one benchmark.
pub async fn run(command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Gateway(args) => gateway::run(args).await,
        BenchCommand::Async(args) => async_channel::run(args).await,
        BenchCommand::Notify(args) => notify::run(args).await,
    }
}

use std::path::Path;

/// A one-line description of the machine, printed with every result.
pub fn machine_description() -> String {
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|line| line.starts_with("model name"))
                .and_then(|line| line.split_once(':'))
                .map(|(_, model)| model.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".to_string());
    format!("{cores} cores, {cpu}")
}

/// Resident and peak resident memory of process `pid` in KiB, from /proc (Linux only).
pub fn process_memory_kib(pid: u32) -> Option<(u64, u64)> {
    let status =
        std::fs::read_to_string(Path::new("/proc").join(pid.to_string()).join("status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find(|line| line.starts_with(name))
            .and_then(|line| line.split_whitespace().nth(1))
            .and_then(|value| value.parse::<u64>().ok())
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}
