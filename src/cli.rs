//! Command-line interface: global configuration flags and the commands.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use shlyuz_kit::config::{ConfigSources, TlsMode, load_layered, parse_override};
use shlyuz_kit::server::TlsFiles;
use shlyuz_kit::service::Tasks;
use shlyuz_kit::shutdown::shutdown_channel;
use shlyuz_kit::telemetry::{AdminServer, LogFormat, MetricsRegistry, init_telemetry};

use crate::config::ShlyuzConfig;
use crate::target::Target;
use crate::targets::{TargetIdentity, open_database, prepare_target, serve_target, start_service};

/// Shlyuz: the integration gateway and services of the Ministry of Defence of Kazakhstan.
///
/// Configuration is layered: built-in defaults, then the --config file, then SHLYUZ__SECTION__KEY
/// environment variables, then --set and the other flags.
#[derive(Debug, Parser)]
#[command(name = "shlyuz", version, about, long_about = None)]
pub struct Cli {
    /// TOML configuration file.
    #[arg(long, global = true, value_name = "FILE", env = "SHLYUZ_CONFIG")]
    pub config: Option<PathBuf>,
    /// Override one configuration key, e.g. --set gateway.listen=0.0.0.0:50051 (repeatable).
    #[arg(long = "set", global = true, value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
    /// Log filter, e.g. info or shlyuz_gateway=debug (telemetry.log_level).
    #[arg(long, global = true, value_name = "FILTER")]
    pub log_level: Option<String>,
    /// Log format: auto, json or text (telemetry.log_format).
    #[arg(long, global = true, value_enum)]
    pub log_format: Option<LogFormatArg>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Log formats accepted on the command line.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum LogFormatArg {
    /// JSON unless stdout is a terminal.
    Auto,
    /// One JSON object per line.
    Json,
    /// Human-readable.
    Text,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run everything in one process: the gateway and every service, with a development PKI
    /// and SQLite files under the data directory; writes DIR/endpoints.json when ready.
    Up {
        /// Data directory (data_dir); created on first start.
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
        /// TESTING ONLY: let the `ops` participant move housing's clock forward through
        /// shlyuz.testing.v1.TestClockService on housing's own address (`shlyuz demo` needs it for
        /// the 48-hour answer window). Never use this for real data.
        #[arg(long)]
        test_clock: bool,
    },
    /// Walk the seeds' scenarios against a running `shlyuz up --test-clock`: a consent confirmed by
    /// SMS code, a Jauynger candidate from vacancy to order to report and a rejected one, a housing allocation round with an
    /// acceptance, a refusal and a 48-hour timeout, and a proactive review of the register.
    Demo {
        /// The `endpoints.json` that `shlyuz up` wrote.
        #[arg(long, value_name = "FILE", default_value = "var/endpoints.json")]
        endpoints: PathBuf,
    },
    /// Run one target, as in Kubernetes (one Deployment per target).
    Serve {
        /// Which target to run.
        #[arg(long, value_enum)]
        target: Target,
        /// Once its listeners are bound, write their addresses to this JSON file
        /// (`{"address": …, "health": …}`), so a supervisor or a test can listen on port 0.
        #[arg(long, value_name = "FILE")]
        listening_file: Option<PathBuf>,
    },
    /// Run a benchmark and print its figures (see docs/performance.md).
    Bench {
        /// Which benchmark.
        #[command(subcommand)]
        bench: crate::bench::BenchCommand,
    },
    /// Replace the registry data with a deterministic synthetic population (same N and seed,
    /// same people), or with the records of a fixture file.
    Seed {
        /// Number of persons.
        #[arg(long, default_value_t = shlyuz_registry::UP_POPULATION)]
        population: usize,
        /// Seed of the generator.
        #[arg(long, default_value_t = shlyuz_registry::UP_SEED)]
        seed: u64,
        /// Also load this fixture file (TOML) after generating.
        #[arg(long, value_name = "FILE")]
        fixture: Option<PathBuf>,
        /// Data directory for the default SQLite file (data_dir).
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
    },
    /// Check an upstream file (`registry.upstream_file`) exactly as the registry would at start —
    /// keys, endpoint kinds, paths, pointers, API key and certificate files — without calling the
    /// external registry; prints a summary, or the error naming the key and exits 2.
    CheckUpstream {
        /// The upstream TOML file.
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
    /// Apply database migrations and exit.
    Migrate {
        /// Only this target (default: every target).
        #[arg(long, value_enum)]
        target: Option<Target>,
        /// Data directory for default SQLite files (data_dir).
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
    },
}

impl Cli {
    fn config_sources(&self) -> anyhow::Result<ConfigSources> {
        let mut overrides = Vec::new();
        for argument in &self.overrides {
            overrides.push(parse_override(argument)?);
        }
        if let Some(level) = &self.log_level {
            overrides.push(("telemetry.log_level".to_string(), quoted(level)));
        }
        if let Some(format) = self.log_format {
            let name = match format {
                LogFormatArg::Auto => "auto",
                LogFormatArg::Json => "json",
                LogFormatArg::Text => "text",
            };
            overrides.push(("telemetry.log_format".to_string(), quoted(name)));
        }
        let data_dir = match &self.command {
            Command::Up { data_dir, .. }
            | Command::Migrate { data_dir, .. }
            | Command::Seed { data_dir, .. } => data_dir.as_ref(),
            Command::Serve { .. }
            | Command::Bench { .. }
            | Command::Demo { .. }
            | Command::CheckUpstream { .. } => None,
        };
        if let Some(data_dir) = data_dir {
            overrides.push((
                "data_dir".to_string(),
                quoted(&data_dir.display().to_string()),
            ));
        }
        Ok(ConfigSources {
            file: self.config.clone(),
            use_environment: true,
            overrides,
        })
    }
}

/// `value` as a TOML string literal, so an override is never read as a number or a table.
fn quoted(value: &str) -> String {
    let escaped = value.replace('\\', "\\\\").replace('"', "\\\"");
    format!("\"{escaped}\"")
}

/// Loads the configuration the command line describes and validates it.
pub fn load_config(cli: &Cli) -> anyhow::Result<ShlyuzConfig> {
    let sources = cli.config_sources()?;
    let config: ShlyuzConfig = load_layered(&sources)?;
    config.validate()?;
    if let Command::Serve { target, .. } = cli.command {
        config.tls.validate()?;
        if target == Target::Gateway {
            shlyuz_kit::config::require_file("tls.signing_key", &config.tls.signing_key)?;
        } else if config.target(target).gateway_address.is_empty() {
            // A service alone cannot reach any other service but through the gateway: without
            // the address it would run and do half its work (`up` fills it itself).
            return Err(shlyuz_kit::config::ConfigError {
                problems: vec![format!(
                    "config key `{}.gateway_address`: required by `serve --target {}` (host:port \
                     of the gateway it calls other services through)",
                    target.name(),
                    target.name()
                )],
            }
            .into());
        }
    }
    Ok(config)
}

/// Runs the command; the exit code is 0 on success, 2 for bad configuration, 1 otherwise.
pub fn run(cli: Cli) -> ExitCode {
    if let Command::CheckUpstream { file } = &cli.command {
        // A dry run of one file: no configuration, no runtime, no telemetry.
        return match shlyuz_registry::config::check_upstream_file(file) {
            Ok(summary) => {
                print!("{summary}");
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("shlyuz: {}: {error:#}", file.display());
                ExitCode::from(2)
            }
        };
    }
    let config = match load_config(&cli) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("shlyuz: {error:#}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("shlyuz: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run_command(cli.command, config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "shlyuz stopped with an error");
            eprintln!("shlyuz: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run_command(command: Command, config: ShlyuzConfig) -> anyhow::Result<()> {
    let _telemetry = init_telemetry(&config.telemetry)?;
    if config.telemetry.log_format == LogFormat::Auto {
        tracing::debug!("log format chosen by terminal detection");
    }
    match command {
        Command::Up { test_clock, .. } => crate::up::run_up(config, test_clock).await,
        Command::Demo { endpoints } => crate::demo::run(&endpoints).await,
        Command::Serve {
            target,
            listening_file,
        } => serve(config, target, listening_file).await,
        Command::Bench { bench } => crate::bench::run(bench).await,
        Command::Seed {
            population,
            seed,
            fixture,
            ..
        } => seed_registry(&config, population, seed, fixture).await,
        // `run` answers it before any configuration is loaded; kept here for callers of
        // `run_command`.
        Command::CheckUpstream { file } => {
            print!("{}", shlyuz_registry::config::check_upstream_file(&file)?);
            Ok(())
        }
        Command::Migrate { target, .. } => {
            let targets = match target {
                Some(one) => vec![one],
                None => Target::ALL.to_vec(),
            };
            for target in targets {
                let database = open_database(&config, target, &config.data_dir).await?;
                database.close().await;
                tracing::info!(target_name = target.name(), "migrations applied");
            }
            Ok(())
        }
    }
}

async fn seed_registry(
    config: &ShlyuzConfig,
    population: usize,
    seed: u64,
    fixture: Option<PathBuf>,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create data directory {}", config.data_dir.display()))?;
    let database = open_database(config, Target::Registry, &config.data_dir).await?;
    let outcome = shlyuz_registry::seed(database.clone(), population, seed, fixture.as_deref())
        .await
        .map(|report| {
            println!(
                "seeded {} persons ({} records) with seed {seed} in {:.1} s",
                report.persons,
                report.records,
                report.elapsed.as_secs_f64()
            );
        });
    database.close().await;
    outcome
}

async fn serve(
    config: ShlyuzConfig,
    target: Target,
    listening_file: Option<PathBuf>,
) -> anyhow::Result<()> {
    let tls = match config.tls.mode {
        TlsMode::Mutual => Some(TlsFiles {
            ca_cert: config.tls.ca_cert.clone(),
            cert: config.tls.cert.clone(),
            key: config.tls.key.clone(),
        }),
        TlsMode::Plaintext => {
            tracing::warn!(
                target_name = target.name(),
                "serving PLAINTEXT as configured (tls.mode)"
            );
            None
        }
    };
    let identity = TargetIdentity {
        tls,
        signing_key: config.tls.signing_key.clone(),
    };
    let metrics = MetricsRegistry::default();
    let (trigger, signal) = shutdown_channel();
    trigger
        .trigger_on_os_signals()
        .context("cannot install signal handlers")?;
    let mut prepared = prepare_target(&config, target, identity, &metrics, None).await?;
    if let Some(health_address) = config.health.address() {
        prepared.server.bind_health_listener(health_address).await?;
    }
    if let Some(path) = &listening_file {
        let listening = serde_json::json!({
            "address": prepared.server.local_addr()?.to_string(),
            "health": prepared.server.health_local_addr().transpose()?.map(|address| address.to_string()),
        });
        crate::up::write_atomically(path, listening.to_string().as_bytes())?;
    }
    let admin = if config.telemetry.admin_listen.is_empty() {
        None
    } else {
        Some(AdminServer::bind(&config.telemetry.admin_listen, metrics.clone()).await?)
    };
    if let Some(admin) = admin {
        let admin_signal = signal.clone();
        tokio::spawn(async move {
            if let Err(error) = admin.serve(admin_signal).await {
                tracing::error!(error = format!("{error:#}"), "admin server stopped");
            }
        });
    }
    let tasks = Tasks::new(signal.clone());
    let service = start_service(&config, &prepared, &metrics, tasks.clone(), None).await?;
    serve_target(prepared, service, tasks, signal).await
}
