//! How one target of the `shlyuz` binary is prepared, built and started.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use shlyuz_gateway::consent::{
    ConsentChecker, InMemoryConsents, REGISTRY_CONSENT_CACHE_TTL, RegistryConsents,
};
use shlyuz_gateway::directory::TargetResolver;
use shlyuz_gateway::{Gateway, GatewayParts};
use shlyuz_kit::clock::AdjustableClock;
use shlyuz_kit::db::Database;
use shlyuz_kit::identity::Callers;
use shlyuz_kit::pki::SigningKey;
use shlyuz_kit::server::{GrpcServer, ServerSettings, TlsFiles, Transport};
use shlyuz_kit::shutdown::ShutdownSignal;
use shlyuz_kit::telemetry::MetricsRegistry;

use crate::config::ShlyuzConfig;
use crate::target::Target;

/// The identity a target uses: its certificate files and message-signing key.
#[derive(Debug, Clone)]
pub struct TargetIdentity {
    /// Certificate files; `None` for plaintext.
    pub tls: Option<TlsFiles>,
    /// PKCS#8 PEM Ed25519 key.
    pub signing_key: PathBuf,
}

/// Opens the target's database and applies its migrations.
pub async fn open_database(
    config: &ShlyuzConfig,
    target: Target,
    data_dir: &Path,
) -> anyhow::Result<Database> {
    let section = config.target(target);
    let url = section.database_url_or_default(data_dir, target.name());
    let database = Database::connect(&url, section.database_max_connections)
        .await
        .with_context(|| format!("{}: database", target.name()))?;
    database
        .migrate(target.migrations())
        .await
        .with_context(|| format!("{}: migrations", target.name()))?;
    Ok(database)
}

/// A target whose database is open and whose listener is bound, ready to serve.
pub struct PreparedTarget {
    /// Which target.
    pub target: Target,
    /// Its bound server.
    pub server: GrpcServer,
    /// Its database.
    pub database: Database,
    /// Its identity.
    pub identity: TargetIdentity,
}

/// Opens the database, applies migrations and binds the server of `target`.
pub async fn prepare_target(
    config: &ShlyuzConfig,
    target: Target,
    identity: TargetIdentity,
    metrics: &MetricsRegistry,
) -> anyhow::Result<PreparedTarget> {
    let database = open_database(config, target, &config.data_dir).await?;
    let section = config.target(target);
    let transport = match &identity.tls {
        Some(files) => Transport::MutualTls(files.clone()),
        None => Transport::Plaintext,
    };
    let settings = ServerSettings {
        name: target.name().to_string(),
        listen: section.listen,
        transport,
        readiness_grace: Duration::from_millis(config.shutdown.readiness_grace_ms),
        drain_timeout: Duration::from_millis(config.shutdown.drain_timeout_ms),
        max_connection_age: (section.max_connection_age_secs > 0)
            .then(|| Duration::from_secs(section.max_connection_age_secs)),
        // Services are reached through the gateway only; the gateway applies the directory.
        callers: match target {
            Target::Gateway => Callers::Any,
            _ => Callers::only(config.tls.service_callers.iter().cloned()),
        },
        listener: match target {
            Target::Gateway => config.gateway.listener_options(),
            _ => shlyuz_kit::listener::ListenerOptions::default(),
        },
    };
    let server = GrpcServer::bind(settings, metrics).await?;
    Ok(PreparedTarget {
        target,
        server,
        database,
        identity,
    })
}

/// What a target serves, and what must be flushed when it stops.
pub struct TargetService {
    /// The gRPC routes besides health and reflection.
    pub routes: tonic::service::Routes,
    /// The gateway, whose message log is flushed on shutdown.
    pub gateway: Option<Gateway>,
}

/// Builds the services of a prepared target.
pub async fn build_service(
    config: &ShlyuzConfig,
    prepared: &PreparedTarget,
    targets: TargetResolver,
    metrics: &MetricsRegistry,
    shutdown: ShutdownSignal,
    test_clock: Option<&AdjustableClock>,
) -> anyhow::Result<TargetService> {
    match prepared.target {
        Target::Gateway => {
            let signing_key = SigningKey::from_pem_file(&prepared.identity.signing_key)
                .context("gateway: message-signing key (tls.signing_key)")?;
            let directory_file = config.gateway.directory_file_or_default(&config.data_dir);
            if config.gateway.directory_file.as_os_str().is_empty() {
                shlyuz_gateway::directory::write_default_if_missing(&config.data_dir)
                    .context("gateway: default directory")?;
            }
            let consent = consent_checker(&targets, prepared.identity.tls.clone())?;
            let gateway = Gateway::start(GatewayParts {
                database: prepared.database.clone(),
                directory_file,
                targets,
                signing_key: Arc::new(signing_key),
                consent,
                upstream_tls: prepared.identity.tls.clone(),
                metrics: metrics.clone(),
                clock: shlyuz_kit::clock::system_clock(),
                settings: shlyuz_gateway::GatewaySettings {
                    retired_signing_keys: config.gateway.retired_signing_keys()?,
                    ..config.gateway.settings()
                },
                shutdown,
            })
            .await?;
            Ok(TargetService {
                routes: gateway.routes(),
                gateway: Some(gateway),
            })
        }
        Target::Registry => {
            // Consent codes are issued and checked by notify through the gateway.
            let gateway = gateway_client(&config.target(Target::Registry), prepared)?;
            Ok(TargetService {
                routes: config.registry.routes(prepared.database.clone(), gateway)?,
                gateway: None,
            })
        }
        Target::Intake => {
            // With a gateway address the SMS outbox is drained to notify; without, rows wait.
            if let Some(client) = gateway_client(&config.target(Target::Intake), prepared)? {
                shlyuz_intake::spawn_sms_delivery(
                    prepared.database.clone(),
                    client,
                    INTAKE_SMS_INTERVAL,
                    shutdown,
                );
            }
            Ok(TargetService {
                routes: intake_routes(config, prepared, &targets)?,
                gateway: None,
            })
        }
        Target::Notify => {
            let gateway = gateway_client(&config.target(Target::Notify), prepared)?;
            let runtime = shlyuz_notify::start(shlyuz_notify::NotifyParts {
                database: prepared.database.clone(),
                clock: shlyuz_kit::clock::system_clock(),
                gateway,
                settings: config.notify.sms.clone(),
                data_dir: config.data_dir.clone(),
                shutdown,
            })
            .await?;
            Ok(TargetService {
                routes: runtime.routes,
                gateway: None,
            })
        }
        Target::Housing => {
            // `up --test-clock`: housing's time (offer deadlines) follows the test clock.
            let clock = match test_clock {
                Some(clock) => clock.shared(),
                None => shlyuz_kit::clock::system_clock(),
            };
            let housing = shlyuz_housing::Housing::new(
                prepared.database.clone(),
                clock,
                config.housing.norm(),
            )
            .with_reply_grace(Duration::from_secs(config.housing.reply_grace_secs))
            .shared();
            // Overdue offers expire and freed dwellings are offered again every interval.
            tokio::spawn(shlyuz_housing::grpc::run_allocation_loop(
                housing.clone(),
                Duration::from_secs(config.housing.allocation_interval_secs.max(1)),
                shutdown.clone(),
            ));
            // With a gateway: the review asks the registries, the outbox is relayed to notify,
            // and SMS replies are pulled from housing's async-channel inbox.
            let checks = match gateway_client(&config.target(Target::Housing), prepared)? {
                Some(client) => {
                    let signing_key = Arc::new(
                        SigningKey::from_pem_file(&prepared.identity.signing_key)
                            .context("housing: message-signing key (tls.signing_key)")?,
                    );
                    let consumer = shlyuz_housing::inbox::InboxConsumer::new(
                        housing.clone(),
                        client.channel(),
                        signing_key.clone(),
                    );
                    tokio::spawn(consumer.run(Duration::from_secs(2), shutdown.clone()));
                    // Offer SMS and removal notices leave the outbox through notify.
                    tokio::spawn(shlyuz_housing::outbox::run_relay(
                        housing.clone(),
                        shlyuz_housing::notify_sink::NotifySink::new(client.clone()),
                        Duration::from_secs(1),
                        shutdown,
                    ));
                    Some(Arc::new(
                        shlyuz_housing::gateway_checks::GatewayRegistryChecks::new(
                            client.channel(),
                            signing_key,
                        ),
                    ))
                }
                None => None,
            };
            let mut routes = shlyuz_housing::grpc::routes(
                housing,
                checks,
                shlyuz_housing::review::ReviewSettings::default(),
            );
            if let Some(clock) = test_clock {
                tracing::warn!("housing serves the TEST CLOCK (shlyuz up --test-clock)");
                routes = routes.add_service(
                    shlyuz_kit::test_clock::TestClock::new(clock.clone()).into_server(),
                );
            }
            Ok(TargetService {
                routes,
                gateway: None,
            })
        }
    }
}

/// How often intake hands due SMS rows to notify.
const INTAKE_SMS_INTERVAL: Duration = Duration::from_secs(2);

/// Intake's routes, calling the registry through the gateway at `intake.gateway_address` (which
/// `up` fills with the address it bound).
fn intake_routes(
    config: &ShlyuzConfig,
    prepared: &PreparedTarget,
    targets: &TargetResolver,
) -> anyhow::Result<tonic::service::Routes> {
    let signing_key = SigningKey::from_pem_file(&prepared.identity.signing_key)
        .context("intake: message-signing key (tls.signing_key)")?;
    let gateway = match intake_gateway_settings(
        &config.target(Target::Intake),
        targets,
        prepared.identity.tls.clone(),
    ) {
        Some(settings) => Some(
            shlyuz_kit::client::connect_lazy(&settings)
                .context("intake: channel to the gateway")?,
        ),
        None => None,
    };
    Ok(shlyuz_intake::routes(
        prepared.database.clone(),
        &config.intake,
        gateway,
        Arc::new(signing_key),
    ))
}

/// Where intake's own gateway channel goes: the configured `intake.gateway_address` (else the
/// gateway `up` bound), verified against the configured `intake.gateway_server_name`; `None`
/// without either address.
fn intake_gateway_settings(
    section: &shlyuz_kit::config::TargetConfig,
    targets: &TargetResolver,
    tls: Option<TlsFiles>,
) -> Option<shlyuz_kit::client::ClientSettings> {
    let address = if section.gateway_address.is_empty() {
        targets.resolve(Target::Gateway.name())?.to_string()
    } else {
        section.gateway_address.clone()
    };
    Some(shlyuz_kit::client::ClientSettings {
        address,
        tls,
        server_name: section.gateway_server_name.clone(),
        connect_timeout: Duration::from_secs(2),
    })
}

/// The outbound side of a service target: a lazy channel to the configured gateway with the
/// target's certificate, signing as the target's participant; `None` without a gateway address.
pub fn gateway_client(
    section: &shlyuz_kit::config::TargetConfig,
    prepared: &PreparedTarget,
) -> anyhow::Result<Option<shlyuz_kit::gateway_client::GatewayClient>> {
    if section.gateway_address.is_empty() {
        return Ok(None);
    }
    let name = prepared.target.name();
    let signing_key = SigningKey::from_pem_file(&prepared.identity.signing_key)
        .with_context(|| format!("{name}: message-signing key (tls.signing_key)"))?;
    let client = shlyuz_kit::gateway_client::GatewayClient::connect_lazy(
        &shlyuz_kit::gateway_client::GatewayClientSettings {
            address: section.gateway_address.clone(),
            server_name: section.gateway_server_name.clone(),
            tls: prepared.identity.tls.clone(),
            connect_timeout: Duration::from_secs(2),
        },
        name,
        Arc::new(signing_key),
    )?;
    Ok(Some(client))
}

/// The gateway's consent check: the registry's ConsentService where the registry target runs
/// beside the gateway (`shlyuz up`), else consents held in memory.
fn consent_checker(
    targets: &TargetResolver,
    tls: Option<shlyuz_kit::server::TlsFiles>,
) -> anyhow::Result<Arc<dyn ConsentChecker>> {
    let Some(address) = targets.resolve(Target::Registry.name()) else {
        return Ok(Arc::new(InMemoryConsents::default()));
    };
    let channel = shlyuz_kit::client::connect_lazy(&shlyuz_kit::client::ClientSettings {
        address: address.to_string(),
        tls,
        server_name: Target::Registry.name().to_string(),
        connect_timeout: Duration::from_secs(2),
    })
    .context("gateway: consent channel to the registry")?;
    Ok(Arc::new(RegistryConsents::new(
        channel,
        REGISTRY_CONSENT_CACHE_TTL,
    )))
}

/// Serves a prepared target until shutdown, then flushes what it must and closes its database.
pub async fn serve_target(
    prepared: PreparedTarget,
    service: TargetService,
    shutdown: ShutdownSignal,
) -> anyhow::Result<()> {
    let result = prepared.server.serve(service.routes, shutdown).await;
    if let Some(gateway) = service.gateway {
        gateway.shutdown().await;
    }
    prepared.database.close().await;
    result
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn intake_section(address: &str, server_name: &str) -> shlyuz_kit::config::TargetConfig {
        shlyuz_kit::config::TargetConfig {
            gateway_address: address.to_string(),
            gateway_server_name: server_name.to_string(),
            ..shlyuz_kit::config::TargetConfig::on_port(50054)
        }
    }

    #[test]
    fn intake_gateway_channel_verifies_the_configured_server_name() {
        let targets = TargetResolver::new(HashMap::from([(
            Target::Gateway.name().to_string(),
            "127.0.0.1:50050".to_string(),
        )]));

        let configured = intake_gateway_settings(
            &intake_section("gw.example:443", "gateway.example"),
            &targets,
            None,
        )
        .expect("a configured address gives a channel");
        assert_eq!(configured.address, "gw.example:443");
        assert_eq!(configured.server_name, "gateway.example");

        let bound = intake_gateway_settings(&intake_section("", "gw-internal"), &targets, None)
            .expect("the gateway `up` bound gives a channel");
        assert_eq!(bound.address, "127.0.0.1:50050");
        assert_eq!(bound.server_name, "gw-internal");

        assert!(
            intake_gateway_settings(
                &intake_section("", "gateway"),
                &TargetResolver::none(),
                None
            )
            .is_none()
        );
    }
}
