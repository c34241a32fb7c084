//! `shlyuz bench async`: the async channel's accepted messages per second and send-to-delivered
//! latency, with the gateway as its own process in front of an echo upstream, every hop mutual TLS.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::StreamExt;
use prost::Message;
use shlyuz_gateway::echo::Echo;
use shlyuz_gateway::envelope::EnvelopeBuilder;
use shlyuz_kit::client::{ClientSettings, connect};
use shlyuz_kit::pki::{DevPki, SigningKey};
use shlyuz_kit::server::{GrpcServer, ServerSettings, Transport};
use shlyuz_kit::shutdown::shutdown_channel;
use shlyuz_kit::telemetry::MetricsRegistry;
use shlyuz_proto::echo::v1::EchoRequest;
use shlyuz_proto::gateway::v1::SendMessageRequest;
use shlyuz_proto::gateway::v1::ServiceTarget;
use shlyuz_proto::gateway::v1::async_channel_service_client::AsyncChannelServiceClient;
use shlyuz_proto::gateway::v1::send_message_request::Target;

use super::process::{
    CLIENT_PARTICIPANT, GatewayProcess, GatewayProcessOptions, PARTICIPANTS, PURPOSE, tls_files,
    write_echo_directory,
};
use super::stats::LatencySummary;

/// Options of `shlyuz bench async`.
#[derive(Debug, Clone, clap::Args)]
pub struct AsyncBenchArgs {
    /// Messages to send.
    #[arg(long, default_value_t = 20_000)]
    pub messages: usize,
    /// Concurrent SendMessage calls.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// PostgreSQL server for the gateway's database (a fresh database is created and dropped);
    /// default: an SQLite file.
    #[arg(long, value_name = "URL")]
    pub database_url: Option<String>,
}

const SEND_PATH: &str = "/shlyuz.gateway.v1.AsyncChannelService/SendMessage";

/// Runs the async benchmark and prints its report.
pub async fn run(args: AsyncBenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.messages > 0 && args.concurrency > 0,
        "--messages and --concurrency must be positive"
    );
    let work_dir = tempfile::tempdir().context("cannot create a temporary directory")?;
    let pki = DevPki::ensure(&work_dir.path().join("pki"), &PARTICIPANTS)?;
    let key = SigningKey::from_pem_file(
        &pki.participant(CLIENT_PARTICIPANT)
            .context("client files")?
            .signing_key,
    )?;

    let echo = Echo::default();
    let (trigger, signal) = shutdown_channel();
    let echo_server = GrpcServer::bind(
        ServerSettings {
            name: "echo".to_string(),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            transport: Transport::MutualTls(tls_files(&pki, "echo")?),
            readiness_grace: Duration::ZERO,
            drain_timeout: Duration::from_secs(5),
            max_connection_age: None,
            callers: shlyuz_kit::identity::Callers::Any,
            listener: shlyuz_kit::listener::ListenerOptions::default(),
        },
        &MetricsRegistry::default(),
    )
    .await?;
    let echo_address = echo_server.local_addr()?;
    let echo_task = tokio::spawn(echo_server.serve(
        tonic::service::Routes::new(echo.clone().into_server()),
        signal,
    ));

    let database = super::gateway::BenchDatabase::create(args.database_url.as_deref()).await?;
    let directory =
        write_echo_directory(work_dir.path(), &pki, echo_address, Duration::from_secs(10))?;
    let gateway = GatewayProcess::start(
        &pki,
        &directory,
        &GatewayProcessOptions {
            mode: "full".to_string(),
            database_url: database.url().to_string(),
            data_dir: work_dir.path().join("gateway"),
            extra_gateway_config: "async_poll_ms = 50\n".to_string(),
        },
    )
    .await?;
    println!("shlyuz bench async — {}", super::machine_description());
    println!(
        "{} messages, {} concurrent SendMessage calls, gateway database: {}",
        args.messages,
        args.concurrency,
        database.description()
    );

    let requests = signed_sends(&key, args.messages);
    let settings = ClientSettings {
        address: gateway.address.to_string(),
        tls: Some(tls_files(&pki, CLIENT_PARTICIPANT)?),
        server_name: "gateway".to_string(),
        connect_timeout: Duration::from_secs(5),
    };
    let client = AsyncChannelServiceClient::new(connect(&settings).await?);
    let sent_at: Arc<Mutex<HashMap<String, Instant>>> =
        Arc::new(Mutex::new(HashMap::with_capacity(args.messages)));
    let started = Instant::now();
    let accept_latencies: Vec<Option<u64>> = futures::stream::iter(requests)
        .map(|(message_id, request)| {
            let mut client = client.clone();
            let sent_at = sent_at.clone();
            async move {
                let call_started = Instant::now();
                sent_at.lock().insert(message_id, call_started);
                client
                    .send_message(request)
                    .await
                    .ok()
                    .map(|_| call_started.elapsed().as_micros() as u64)
            }
        })
        .buffer_unordered(args.concurrency)
        .collect()
        .await;
    let accept_elapsed = started.elapsed();
    let accepted = accept_latencies
        .iter()
        .filter(|latency| latency.is_some())
        .count();
    let accept_latency =
        LatencySummary::from_latencies(accept_latencies.into_iter().flatten().collect());

    // Wait (bounded) for every accepted message to reach the upstream.
    let wait_limit = Duration::from_secs(120);
    while echo.calls_by_message_id().len() < accepted
        && started.elapsed() < accept_elapsed + wait_limit
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let arrivals = echo.first_arrivals();
    let sent_at = sent_at.lock().clone();
    let mut delivery_latencies = Vec::with_capacity(arrivals.len());
    let mut last_arrival = started;
    for (message_id, arrived) in &arrivals {
        if let Some(sent) = sent_at.get(message_id) {
            delivery_latencies.push(arrived.saturating_duration_since(*sent).as_micros() as u64);
            last_arrival = last_arrival.max(*arrived);
        }
    }
    let delivered = delivery_latencies.len();
    let delivery_latency = LatencySummary::from_latencies(delivery_latencies);
    let delivery_elapsed = last_arrival.saturating_duration_since(started);
    println!();
    println!(
        "accepted   {accepted:>7} of {:>7}  {:>9.0}/s   SendMessage p50 {:.2} ms, p99 {:.2} ms",
        args.messages,
        accepted as f64 / accept_elapsed.as_secs_f64(),
        accept_latency.p50_us as f64 / 1000.0,
        accept_latency.p99_us as f64 / 1000.0
    );
    println!(
        "delivered  {delivered:>7} of {accepted:>7}  {:>9.0}/s   send-to-delivered p50 {:.2} ms, p99 {:.2} ms",
        delivered as f64 / delivery_elapsed.as_secs_f64().max(f64::MIN_POSITIVE),
        delivery_latency.p50_us as f64 / 1000.0,
        delivery_latency.p99_us as f64 / 1000.0
    );
    gateway.stop().await;
    database.drop_database().await;
    trigger.trigger();
    let _ = echo_task.await;
    anyhow::ensure!(
        delivered == accepted,
        "{} accepted messages were not delivered within {wait_limit:?}",
        accepted - delivered
    );
    Ok(())
}

/// Signs every SendMessage up front so that signing does not count against the gateway.
fn signed_sends(
    key: &SigningKey,
    count: usize,
) -> Vec<(String, tonic::Request<SendMessageRequest>)> {
    let payload = EchoRequest {
        payload: "жеткізу".to_string(),
        fail_with_code: 0,
        delay_ms: 0,
        ..EchoRequest::default()
    }
    .encode_to_vec();
    (0..count)
        .map(|_| {
            let builder = EnvelopeBuilder {
                purpose: PURPOSE.to_string(),
                subject_iin: "900101300017".to_string(),
                ..EnvelopeBuilder::default()
            };
            let message = SendMessageRequest {
                target: Some(Target::Service(ServiceTarget {
                    service: "shlyuz.echo.v1.EchoService".to_string(),
                    method: "Echo".to_string(),
                })),
                payload: payload.clone(),
                ..SendMessageRequest::default()
            };
            let encoded = message.encode_to_vec();
            let mut request = tonic::Request::new(message);
            for (name, value) in builder.sign(key, SEND_PATH, Some(&encoded)) {
                if let (Ok(name), Ok(value)) = (
                    name.parse::<tonic::metadata::MetadataKey<tonic::metadata::Ascii>>(),
                    value.parse::<tonic::metadata::AsciiMetadataValue>(),
                ) {
                    request.metadata_mut().insert(name, value);
                }
            }
            (builder.message_id, request)
        })
        .collect()
}
