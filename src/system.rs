//! A set of targets started together in this process, the way `shlyuz up` runs them: each
//! target's database opened and migrated, its listener bound, the services pointed at the
//! gateway's bound address and the gateway's `target:<name>` upstreams at theirs, then every
//! service started through its crate's `start` and served until shutdown. `up` and the
//! end-to-end tests (`spawn_system`) both start targets through this.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use shlyuz_gateway::directory::{Directory, TargetResolver};
use shlyuz_kit::clock::AdjustableClock;
use shlyuz_kit::pki::DevPki;
use shlyuz_kit::server::TlsFiles;
use shlyuz_kit::service::Tasks;
use shlyuz_kit::shutdown::{ShutdownSignal, ShutdownTrigger, shutdown_channel};
use shlyuz_kit::telemetry::MetricsRegistry;
use tokio::task::JoinSet;

use crate::config::ShlyuzConfig;
use crate::target::Target;
use crate::targets::{TargetIdentity, prepare_target, serve_target, start_service};

/// Targets serving in this process.
pub struct System {
    /// Each target's bound address, by name.
    pub addresses: BTreeMap<String, SocketAddr>,
    /// The configuration the targets were started with (addresses filled in).
    pub config: ShlyuzConfig,
    trigger: ShutdownTrigger,
    serving: JoinSet<anyhow::Result<()>>,
}

impl System {
    /// Starts `targets` with `config`, each as the participant of the same name in `pki`. The
    /// services' `gateway_address` (where empty) and the gateway's `targets` become the addresses
    /// bound here; a target not started keeps the address configured for it. `test_clock` is handed to the targets that follow it.
    pub async fn start(
        config: ShlyuzConfig,
        targets: &[Target],
        pki: &DevPki,
        metrics: &MetricsRegistry,
        test_clock: Option<&AdjustableClock>,
    ) -> anyhow::Result<System> {
        Self::start_on(config, targets, Vec::new(), pki, metrics, test_clock).await
    }

    /// [`System::start`], the targets named in `listeners` serving on the listener given (bound
    /// by the caller, e.g. on an address the gateway already routes to) instead of binding theirs.
    pub async fn start_on(
        mut config: ShlyuzConfig,
        targets: &[Target],
        mut listeners: Vec<(Target, tokio::net::TcpListener)>,
        pki: &DevPki,
        metrics: &MetricsRegistry,
        test_clock: Option<&AdjustableClock>,
    ) -> anyhow::Result<System> {
        let (trigger, signal) = shutdown_channel();
        let mut prepared_targets = Vec::new();
        for &target in targets {
            let identity = TargetIdentity {
                tls: Some(participant_tls(pki, target.name())?),
                signing_key: pki
                    .participant(target.name())
                    .map(|files| files.signing_key.clone())
                    .unwrap_or_default(),
            };
            let listener = listeners
                .iter()
                .position(|(named, _)| *named == target)
                .map(|index| listeners.swap_remove(index).1);
            prepared_targets
                .push(prepare_target(&config, target, identity, metrics, listener).await?);
        }
        let mut addresses = BTreeMap::new();
        for prepared in &prepared_targets {
            addresses.insert(
                prepared.target.name().to_string(),
                prepared.server.local_addr()?,
            );
        }
        if let Some(gateway_address) = addresses.get(Target::Gateway.name()) {
            config.fill_gateway_address(&gateway_address.to_string());
        }
        config.gateway.targets.extend(
            addresses
                .iter()
                .map(|(name, address)| (name.clone(), address.to_string())),
        );

        let mut serving = JoinSet::new();
        for prepared in prepared_targets {
            let tasks = Tasks::new(signal.clone());
            let started =
                start_service(&config, &prepared, metrics, tasks.clone(), test_clock).await;
            let service = match started {
                Ok(service) => service,
                Err(error) => {
                    // The targets already serving stop before the error is returned.
                    trigger.trigger();
                    while serving.join_next().await.is_some() {}
                    return Err(error);
                }
            };
            serving.spawn(serve_target(prepared, service, tasks, signal.clone()));
        }
        if targets.contains(&Target::Gateway) {
            warn_of_short_registry_routes(&config);
        }
        Ok(System {
            addresses,
            config,
            trigger,
            serving,
        })
    }

    /// The address of `target`, when it was started.
    pub fn address(&self, target: Target) -> Option<SocketAddr> {
        self.addresses.get(target.name()).copied()
    }

    /// The shutdown every target stops at.
    pub fn shutdown(&self) -> ShutdownSignal {
        self.trigger.signal()
    }

    /// The trigger of that shutdown.
    pub fn trigger(&self) -> ShutdownTrigger {
        self.trigger.clone()
    }

    /// Waits for the next target to stop; `None` when none is left.
    pub async fn next_stopped(&mut self) -> Option<anyhow::Result<()>> {
        let finished = self.serving.join_next().await?;
        Some(match finished {
            Ok(result) => result,
            Err(join_error) => Err(anyhow::anyhow!("target task panicked: {join_error}")),
        })
    }

    /// Stops every target (each drains its calls and tasks, the gateway flushes its message
    /// log) and returns the first error any of them stopped with.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.trigger.trigger();
        let mut first_error = None;
        while let Some(result) = self.next_stopped().await {
            if let Err(error) = result {
                first_error.get_or_insert(error);
            }
        }
        match first_error {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }
}

/// The certificate files of `participant` in the development PKI.
pub fn participant_tls(pki: &DevPki, participant: &str) -> anyhow::Result<TlsFiles> {
    pki.tls_files(participant)
        .with_context(|| format!("the development PKI has no participant {participant:?}"))
}

/// A gateway route to the registry whose deadline ends before the registry's calls to its external
/// system may: its callers would get the gateway's `UPSTREAM_TIMEOUT` instead of the registry's
/// own answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteBudgetWarning {
    /// The route's gRPC service.
    pub service: String,
    /// The route's `timeout_ms`.
    pub route_timeout: Duration,
    /// The registry's budget for one call to its external system, retries included.
    pub registry_budget: Duration,
}

impl std::fmt::Display for RouteBudgetWarning {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            formatter,
            "gateway route {} has timeout_ms = {}, below the registry's upstream budget of {} ms \
             (timeout_ms × max_attempts + backoff of registry.upstream_file): a route to the \
             registry needs timeout_ms ≥ that budget, or callers get the gateway's \
             UPSTREAM_TIMEOUT instead of the registry's reason",
            self.service,
            self.route_timeout.as_millis(),
            self.registry_budget.as_millis()
        )
    }
}

/// One warning per route of `directory` to the registry target (`target:registry`) whose
/// timeout is below `registry_budget`.
pub fn budget_warnings(
    directory: &Directory,
    registry_budget: Duration,
) -> Vec<RouteBudgetWarning> {
    let Some(registry) = directory.targets().resolve(Target::Registry.name()) else {
        return Vec::new();
    };
    directory
        .routes()
        .filter(|route| route.upstream == registry && route.timeout < registry_budget)
        .map(|route| RouteBudgetWarning {
            service: route.service.clone(),
            route_timeout: route.timeout,
            registry_budget,
        })
        .collect()
}

/// The [`budget_warnings`] of the gateway's directory (as `config` names it) against the
/// registry's upstream budget; none when the registry has no `upstream_file`.
pub fn registry_budget_warnings(config: &ShlyuzConfig) -> anyhow::Result<Vec<RouteBudgetWarning>> {
    let Some(budget) = config.registry.upstream_budget()? else {
        return Ok(Vec::new());
    };
    let directory_file = config.gateway.directory_file_or_default(&config.data_dir);
    let targets = TargetResolver::new(config.gateway.targets.clone().into_iter().collect());
    let directory = Directory::load(&directory_file, &targets).map_err(|error| {
        anyhow::anyhow!("gateway directory {}: {error}", directory_file.display())
    })?;
    Ok(budget_warnings(&directory, budget))
}

/// Logs each [`registry_budget_warnings`] once; a check that cannot be made is logged too, and
/// never stops the start (the gateway and the registry report their own configuration errors).
fn warn_of_short_registry_routes(config: &ShlyuzConfig) {
    match registry_budget_warnings(config) {
        Ok(warnings) => {
            for warning in warnings {
                tracing::warn!(
                    route = %warning.service,
                    route_timeout_ms = warning.route_timeout.as_millis() as u64,
                    registry_budget_ms = warning.registry_budget.as_millis() as u64,
                    "{warning}"
                );
            }
        }
        Err(error) => {
            tracing::warn!(error = %format!("{error:#}"), "cannot compare the gateway's registry routes with the registry's upstream budget");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A configuration whose gateway uses the default directory (over a development PKI) and
    /// whose registry reads `upstream_file` with `upstream_text`.
    fn config_with_upstream(data_dir: &std::path::Path, upstream_text: &str) -> ShlyuzConfig {
        let mut participants: Vec<&str> = Target::ALL.iter().map(|target| target.name()).collect();
        participants.extend(crate::up::EXTERNAL_PARTICIPANTS);
        DevPki::ensure(&data_dir.join("pki"), &participants).expect("development PKI");
        shlyuz_gateway::directory::write_default_if_missing(data_dir).expect("default directory");
        let upstream_file = data_dir.join("upstream.toml");
        std::fs::write(&upstream_file, upstream_text).expect("write the upstream file");
        let mut config = ShlyuzConfig {
            data_dir: data_dir.to_path_buf(),
            ..ShlyuzConfig::default()
        };
        config.registry.upstream_file = upstream_file;
        for (port, target) in [
            Target::Registry,
            Target::Notify,
            Target::Intake,
            Target::Housing,
        ]
        .into_iter()
        .enumerate()
        {
            config.gateway.targets.insert(
                target.name().to_string(),
                format!("127.0.0.1:{}", 50052 + port),
            );
        }
        config
    }

    #[test]
    fn the_default_routes_to_the_registry_allow_the_default_upstream_budget() {
        let data_dir = tempfile::tempdir().expect("temp dir");
        let config =
            config_with_upstream(data_dir.path(), "base_url = \"https://registry.test\"\n");
        // 2000 ms × 3 attempts + (100 + 200) ms of backoff × 150 %.
        assert_eq!(
            config.registry.upstream_budget().expect("budget"),
            Some(Duration::from_millis(6_450))
        );
        assert_eq!(
            registry_budget_warnings(&config).expect("checked"),
            Vec::new()
        );
    }

    #[test]
    fn each_registry_route_shorter_than_the_budget_is_named_with_both_figures() {
        let data_dir = tempfile::tempdir().expect("temp dir");
        let config = config_with_upstream(
            data_dir.path(),
            "base_url = \"https://registry.test\"\ntimeout_ms = 3000\nmax_attempts = 2\ninitial_backoff_ms = 1000\n",
        );
        // 3000 ms × 2 attempts + 1000 ms of backoff × 150 %.
        let budget = Duration::from_millis(7_500);
        assert_eq!(
            config.registry.upstream_budget().expect("budget"),
            Some(budget)
        );
        let directory = Directory::load(
            &config.gateway.directory_file_or_default(&config.data_dir),
            &TargetResolver::new(config.gateway.targets.clone().into_iter().collect()),
        )
        .expect("the default directory");
        let registry_address = &config.gateway.targets[Target::Registry.name()];
        let registry_routes: Vec<&str> = directory
            .routes()
            .filter(|route| &route.upstream == registry_address)
            .map(|route| route.service.as_str())
            .collect();
        assert!(registry_routes.contains(&"shlyuz.registry.v1.PersonRegistryService"));

        let warnings = registry_budget_warnings(&config).expect("checked");
        let warned: Vec<&str> = warnings
            .iter()
            .map(|warning| warning.service.as_str())
            .collect();
        // Every route to the registry, and no route to another target.
        assert_eq!(warned, registry_routes);
        assert!(warnings.iter().all(|warning| {
            warning.route_timeout == Duration::from_millis(7_000)
                && warning.registry_budget == budget
        }));
        let text = warnings[0].to_string();
        for expected in [warned[0], "timeout_ms = 7000", "7500 ms", "timeout_ms ≥"] {
            assert!(text.contains(expected), "{text}");
        }
        // A route exactly as long as the budget is enough.
        assert_eq!(
            budget_warnings(&directory, Duration::from_millis(7_000)),
            Vec::new()
        );
    }

    #[test]
    fn without_an_upstream_file_nothing_is_compared() {
        let config = ShlyuzConfig::default();
        assert_eq!(config.registry.upstream_budget().expect("budget"), None);
        assert_eq!(
            registry_budget_warnings(&config).expect("checked"),
            Vec::new()
        );
    }
}
