//! `shlyuz bench …`: benchmarks as commands, not timed tests. Each prints throughput and latency
//! percentiles of several scenarios measured in one run, so ratios between them are meaningful on
//! whatever machine runs them.

pub mod async_channel;
pub mod gateway;
pub mod housing;
pub mod load;
pub mod notify;
pub mod process;
pub mod registry;
pub mod stats;

/// The benchmarks.
#[derive(Debug, clap::Subcommand)]
pub enum BenchCommand {
    /// The gateway against direct calls and nginx grpc_pass: throughput, latency, memory.
    Gateway(gateway::GatewayBenchArgs),
    /// The async channel: accepted messages per second and send-to-delivered latency.
    Async(async_channel::AsyncBenchArgs),
    /// Registry look-ups per second, direct and through the gateway, on SQLite and PostgreSQL.
    Registry(RegistryBenchArgs),
    /// Notify: notifications accepted per second and sent per second (log provider).
    Notify(notify::NotifyBenchArgs),
    /// One housing allocation round over a large register, on SQLite and PostgreSQL.
    Housing(housing::HousingBenchArgs),
}

/// Options of `shlyuz bench registry`.
#[derive(Debug, Clone, clap::Args)]
pub struct RegistryBenchArgs {
    /// Persons to seed.
    #[arg(long, default_value_t = 100_000)]
    pub persons: usize,
    /// Measuring time per run, in seconds.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Calls in flight.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// PostgreSQL server (any database on it) for the second backend; default: SQLite only.
    #[arg(long, value_name = "URL")]
    pub database_url: Option<String>,
}

/// Runs one benchmark.
pub async fn run(command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Gateway(args) => gateway::run(args).await,
        BenchCommand::Async(args) => async_channel::run(args).await,
        BenchCommand::Registry(args) => registry::run(registry::RegistryBenchOptions {
            persons: args.persons,
            duration: std::time::Duration::from_secs(args.seconds.max(1)),
            concurrency: args.concurrency.max(1),
            postgres_url: args.database_url,
        })
        .await
        .map(|_| ()),
        BenchCommand::Notify(args) => notify::run(args).await,
        BenchCommand::Housing(args) => housing::run(args).await.map(|_| ()),
    }
}

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
