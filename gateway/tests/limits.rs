//! Limits against exhaustion, as a hostile participant would test them: connections that never
//! speak TLS, old TLS versions, more connections than the cap, revoked certificates, oversized
//! metadata, request bodies that never end or that together would fill the gateway's memory,
//! and random paths that would create metric series without bound.

mod harness;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use harness::{Harness, echo_request, fast_async_settings, signed};
use shlyuz_kit::client::{ClientSettings, connect};
use shlyuz_kit::error::summarize_status;
use shlyuz_kit::listener::ListenerOptions;
use shlyuz_kit::pki::{DevPki, load_certs, load_private_key};
use shlyuz_proto::echo::v1::{EchoRequest, EchoResponse};
use tokio::io::AsyncReadExt;
use tonic::Code;

const ECHO: &str = "/shlyuz.echo.v1.EchoService/Echo";
const CALLER: &str = "jauynger-portal";

fn assert_status(status: &tonic::Status, code: Code, reason: &str) {
    let summary = summarize_status(status);
    assert_eq!(summary.code, code, "{status:?}");
    assert_eq!(summary.reason, reason, "{status:?}");
}

/// A signed personal-data `Echo` of `payload` by [`CALLER`] on a new connection.
async fn echo(harness: &Harness, payload: &str) -> Result<EchoResponse, tonic::Status> {
    let request = signed(
        harness,
        CALLER,
        ECHO,
        &harness.personal_envelope(),
        echo_request(payload),
    );
    let mut client = harness.echo_client(CALLER).await;
    client.echo(request).await.map(tonic::Response::into_inner)
}

/// Calls `Echo` with a correctly signed request message whose HTTP/2 stream is never ended, the
/// way a slow or hostile client holds a request open.
async fn echo_never_ending(harness: &Harness, payload: &str) -> Result<(), tonic::Status> {
    let message = echo_request(payload);
    let signed_request = signed(
        harness,
        CALLER,
        ECHO,
        &harness.personal_envelope(),
        message.clone(),
    );
    let never_ending = futures::stream::once(async move { message })
        .chain(futures::stream::pending::<EchoRequest>());
    let mut request = tonic::Request::new(never_ending);
    *request.metadata_mut() = signed_request.metadata().clone();
    let mut grpc = tonic::client::Grpc::new(harness.channel(CALLER).await);
    grpc.ready()
        .await
        .map_err(|error| tonic::Status::unavailable(error.to_string()))?;
    let answered: Result<tonic::Response<EchoResponse>, tonic::Status> = grpc
        .client_streaming(
            request,
            http::uri::PathAndQuery::from_static(ECHO),
            tonic_prost::ProstCodec::default(),
        )
        .await;
    answered.map(|_| ())
}

/// The value of an unlabelled gauge in the gateway's metrics.
fn gauge(harness: &Harness, name: &str) -> i64 {
    harness
        .metrics
        .encode()
        .lines()
        .find_map(|line| line.strip_prefix(&format!("{name} ")))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or_else(|| panic!("no gauge {name}"))
}

/// Waits (bounded) until `condition` holds, checking the observable state it reads.
async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn client_settings(harness: &Harness, participant: &str) -> ClientSettings {
    ClientSettings {
        address: harness.gateway_address.to_string(),
        tls: Some(
            harness
                .pki
                .tls_files(participant)
                .expect("participant files"),
        ),
        server_name: "gateway".to_string(),
        connect_timeout: Duration::from_secs(5),
    }
}

#[tokio::test]
async fn a_connection_that_never_sends_a_client_hello_is_closed_after_the_handshake_timeout() {
    let harness = Harness::start_sqlite_listening(fast_async_settings(), |_pki| ListenerOptions {
        tls_handshake_timeout: Duration::from_millis(300),
        ..ListenerOptions::default()
    })
    .await;
    let mut silent = tokio::net::TcpStream::connect(harness.gateway_address)
        .await
        .expect("TCP connect");
    let opened = Instant::now();
    let mut buffer = [0_u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(10), silent.read(&mut buffer))
        .await
        .expect("the gateway held a connection without a ClientHello open for 10 s");
    assert!(
        matches!(read, Ok(0) | Err(_)),
        "the gateway sent something to a silent connection: {read:?}"
    );
    assert!(
        opened.elapsed() >= Duration::from_millis(250),
        "closed before the handshake timeout: {:?}",
        opened.elapsed()
    );
    echo(&harness, "still serving")
        .await
        .expect("the gateway still serves");
    harness.stop().await;
}

fn client_tls_config(
    pki: &DevPki,
    participant: &str,
    version: &'static rustls::SupportedProtocolVersion,
) -> rustls::ClientConfig {
    let files = pki.participant(participant).expect("participant");
    let mut roots = rustls::RootCertStore::empty();
    for ca_cert in load_certs(pki.ca_cert_path()).expect("CA certificate") {
        roots.add(ca_cert).expect("CA root");
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[version])
    .expect("protocol version")
    .with_root_certificates(roots)
    .with_client_auth_cert(
        load_certs(&files.tls_cert).expect("certificate"),
        load_private_key(&files.tls_key).expect("key"),
    )
    .expect("client certificate");
    config.alpn_protocols = vec![b"h2".to_vec()];
    config
}

async fn handshake(
    harness: &Harness,
    version: &'static rustls::SupportedProtocolVersion,
) -> std::io::Result<()> {
    let connector =
        tokio_rustls::TlsConnector::from(Arc::new(client_tls_config(harness.pki, CALLER, version)));
    let tcp = tokio::net::TcpStream::connect(harness.gateway_address).await?;
    let server_name = rustls::pki_types::ServerName::try_from("gateway").expect("server name");
    connector.connect(server_name, tcp).await.map(|_| ())
}

#[tokio::test]
async fn a_tls_1_2_client_is_refused_and_tls_1_3_is_served() {
    let harness = Harness::start_sqlite("").await;
    let refused = handshake(&harness, &rustls::version::TLS12).await;
    assert!(refused.is_err(), "a TLS 1.2 handshake succeeded");
    handshake(&harness, &rustls::version::TLS13)
        .await
        .expect("the same certificate over TLS 1.3");
    harness.stop().await;
}

#[tokio::test]
async fn connections_over_the_cap_are_refused_while_open_ones_are_served() {
    const CAP: usize = 3;
    let harness = Harness::start_sqlite_listening(fast_async_settings(), |_pki| ListenerOptions {
        max_connections: CAP,
        ..ListenerOptions::default()
    })
    .await;
    let mut open = Vec::new();
    for _ in 0..CAP {
        let channel = connect(&client_settings(&harness, CALLER))
            .await
            .expect("a connection under the cap");
        open.push(shlyuz_proto::echo::v1::echo_service_client::EchoServiceClient::new(channel));
    }
    let over_the_cap = connect(&client_settings(&harness, CALLER)).await;
    assert!(
        over_the_cap.is_err(),
        "a connection over the cap was served"
    );

    for client in &mut open {
        let request = signed(
            &harness,
            CALLER,
            ECHO,
            &harness.personal_envelope(),
            echo_request("open"),
        );
        client
            .echo(request)
            .await
            .expect("an open connection is still served");
    }

    // A closed connection frees its place for a new one.
    drop(open.pop());
    let deadline = Instant::now() + Duration::from_secs(10);
    let reconnected = loop {
        match connect(&client_settings(&harness, CALLER)).await {
            Ok(channel) => break channel,
            Err(error) => {
                assert!(
                    Instant::now() < deadline,
                    "no place freed after a connection closed: {error}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    let request = signed(
        &harness,
        CALLER,
        ECHO,
        &harness.personal_envelope(),
        echo_request("again"),
    );
    shlyuz_proto::echo::v1::echo_service_client::EchoServiceClient::new(reconnected)
        .echo(request)
        .await
        .expect("served on the freed place");
    drop(open);
    harness.stop().await;
}

#[tokio::test]
async fn a_revoked_client_certificate_is_refused_once_the_crl_file_changes() {
    let harness = Harness::start_sqlite_listening(fast_async_settings(), |pki| {
        let crl_file = pki.dir().join("clients.crl");
        std::fs::write(
            &crl_file,
            pki.revocation_list(&[], 1).expect("empty revocation list"),
        )
        .expect("write the CRL");
        ListenerOptions {
            client_crl_file: Some(crl_file),
            reload_interval: Duration::from_millis(20),
            ..ListenerOptions::default()
        }
    })
    .await;
    let now = time::OffsetDateTime::now_utc();
    let (revoked_cert, revoked_key) = harness
        .pki
        .issue_leaf(
            CALLER,
            now - time::Duration::hours(1),
            now + time::Duration::days(1),
        )
        .expect("second certificate");
    harness
        .call_with_identity(&revoked_cert, &revoked_key)
        .await
        .expect("served before its revocation");

    // Replaced by rename, as a Kubernetes Secret or an editor would.
    let crl_file = harness.pki.dir().join("clients.crl");
    let staged = harness.pki.dir().join("clients.crl.new");
    std::fs::write(
        &staged,
        harness
            .pki
            .revocation_list(&[&revoked_cert], 2)
            .expect("revocation list"),
    )
    .expect("write the new CRL");
    std::fs::rename(&staged, &crl_file).expect("replace the CRL");
    eventually("the CRL is reloaded", || {
        harness
            .metrics
            .encode()
            .contains("shlyuz_server_client_crl_reloads_total{result=\"ok\"} 1")
    })
    .await;

    let refused = harness
        .call_with_identity(&revoked_cert, &revoked_key)
        .await;
    assert!(refused.is_err(), "a revoked certificate was served");
    echo(&harness, "not revoked")
        .await
        .expect("a certificate the CRL does not list is still served");
    harness.stop().await;
}

#[tokio::test]
async fn metadata_over_the_limit_gets_a_grpc_status_not_unknown() {
    let harness = Harness::start_sqlite("").await;
    let mut request = signed(
        &harness,
        CALLER,
        ECHO,
        &harness.personal_envelope(),
        echo_request("x"),
    );
    request.metadata_mut().insert(
        "x-padding",
        "p".repeat(20 * 1024).parse().expect("metadata value"),
    );
    let mut client = harness.echo_client(CALLER).await;
    let refused = client.echo(request).await.expect_err("20 KiB of metadata");
    assert_status(&refused, Code::ResourceExhausted, "HEADERS_TOO_LARGE");
    assert_eq!(harness.echo.received(), 0);
    echo(&harness, "small")
        .await
        .expect("a call with small metadata is served");
    harness.stop().await;
}

#[tokio::test]
async fn a_request_body_that_never_ends_is_refused_at_its_deadline() {
    let mut settings = fast_async_settings();
    settings.sync.request_body_timeout = Duration::from_millis(300);
    let harness =
        Harness::start_sqlite_listening(settings, |_pki| ListenerOptions::default()).await;
    let started = Instant::now();
    let answered = tokio::time::timeout(
        Duration::from_secs(10),
        echo_never_ending(&harness, "never ends"),
    )
    .await
    .expect("the gateway waited 10 s for a request body");
    let refused = answered.expect_err("an unfinished request was answered OK");
    assert_status(&refused, Code::DeadlineExceeded, "REQUEST_BODY_TIMEOUT");
    assert!(started.elapsed() >= Duration::from_millis(250));
    assert_eq!(harness.echo.received(), 0);
    echo(&harness, "finished")
        .await
        .expect("a finished request is served");
    harness.stop().await;
}

#[tokio::test]
async fn buffered_request_bytes_are_capped_across_calls() {
    const BUFFERED: &str = "shlyuz_gateway_buffered_request_bytes";
    let payload = "b".repeat(60_000);
    let mut settings = fast_async_settings();
    settings.sync.max_buffered_request_bytes = 100_000;
    settings.sync.request_body_timeout = Duration::from_secs(60);
    let harness = Arc::new(
        Harness::start_sqlite_listening(settings, |_pki| ListenerOptions::default()).await,
    );

    let holding = {
        let harness = harness.clone();
        let payload = payload.clone();
        tokio::spawn(async move { echo_never_ending(&harness, &payload).await })
    };
    eventually("the first request is buffered", || {
        gauge(&harness, BUFFERED) >= 60_000
    })
    .await;
    let refused = tokio::time::timeout(
        Duration::from_secs(10),
        echo_never_ending(&harness, &payload),
    )
    .await
    .expect("the second request was buffered beyond the cap");
    assert_status(
        &refused.expect_err("over the cap"),
        Code::ResourceExhausted,
        "GATEWAY_OVERLOADED",
    );

    // The first caller goes away: its bytes are given back and honest calls fit again.
    holding.abort();
    let _ = holding.await;
    eventually("the budget is given back", || {
        gauge(&harness, BUFFERED) == 0
    })
    .await;
    echo(&harness, &payload)
        .await
        .expect("a call within the budget is served");
    assert_eq!(gauge(&harness, BUFFERED), 0);
    let Ok(harness) = Arc::try_unwrap(harness) else {
        panic!("the harness is still shared");
    };
    harness.stop().await;
}

#[tokio::test]
async fn random_paths_create_a_bounded_number_of_metric_series() {
    let harness = Harness::start_sqlite("").await;
    let mut client = harness.raw_client(CALLER).await;
    for index in 0..50 {
        let path = format!("/random{index}.v1.Probe{index}Service/Method{index}");
        let refused = client
            .unary(&path, tonic::Request::new(echo_request("x")))
            .await
            .expect_err("an unrouted path");
        assert_eq!(refused.code(), Code::Unimplemented, "{refused:?}");
        let method = format!("/shlyuz.echo.v1.EchoService/Random{index}");
        let refused = client
            .unary(&method, tonic::Request::new(echo_request("x")))
            .await
            .expect_err("an unlisted method");
        assert_eq!(refused.code(), Code::Unimplemented, "{refused:?}");
    }
    let metrics = harness.metrics.encode();
    let random_series = metrics
        .lines()
        .filter(|line| line.contains("random") || line.contains("Random"))
        .count();
    assert_eq!(
        random_series, 0,
        "series named after random paths:\n{metrics}"
    );
    assert!(
        metrics.contains("service=\"unknown\",method=\"unknown\""),
        "no collapsed series:\n{metrics}"
    );
    harness.stop().await;
}
