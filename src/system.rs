//! A set of targets started together in this process, the way `shlyuz up` runs them: each
//! target's database opened and migrated, its listener bound, the services pointed at the
//! gateway's bound address and the gateway's `target:<name>` upstreams at theirs, then every
//! service started through its crate's `start` and served until shutdown. `up` and the
//! end-to-end tests (`spawn_system`) both start targets through this.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use anyhow::Context;
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
