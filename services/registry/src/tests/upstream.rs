//! The upstream backend against a local HTTP server that behaves like an external registry:
//! correct, slow, failing, flaky, malformed and partial answers.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::grpc::RegistryServices;
use crate::records::kinds;
use crate::source::{RecordLookup as _, SourceError};
use crate::upstream::{EndpointMapping, UpstreamRegistry, UpstreamSettings, reasons};
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use shlyuz_kit::error::summarize_status;
use shlyuz_kit::iin::Iin;
use shlyuz_kit::subject::SUBJECT_IIN_METADATA;
use shlyuz_proto::registry::v1 as pb;
use shlyuz_proto::registry::v1::person_registry_service_server::PersonRegistryService;
use tonic::Code;

const KNOWN: &str = "900101300017";

#[derive(Clone, Default)]
struct Counters {
    flaky: Arc<AtomicUsize>,
    down: Arc<AtomicUsize>,
    recovering: Arc<AtomicUsize>,
}

fn json(body: String) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// A person record in the external registry's own field names.
fn external_person(iin: &str) -> serde_json::Value {
    serde_json::json!({
        "iin": iin,
        "fio": { "surname": "Әбдірахманов", "name": "Нұрлан", "patronymic": "Серікұлы" },
        "birthDate": "1990-01-01",
        "sex": 1,
        "citizenship": "KZ",
        "lifeStatus": 1,
        "capacity": 1,
        "address": { "regionKato": "710000000", "regionName": "Астана қаласы" }
    })
}

fn requested_iins(body: &Bytes) -> Vec<String> {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|value| value.get("personIins").cloned())
        .and_then(|value| serde_json::from_value(value).ok())
        .unwrap_or_default()
}

async fn ok(body: Bytes) -> Response {
    let items: Vec<serde_json::Value> = requested_iins(&body)
        .iter()
        .filter(|iin| iin.as_str() == KNOWN)
        .map(|iin| external_person(iin))
        .collect();
    json(serde_json::json!({ "data": { "items": items }, "complete": true }).to_string())
}

async fn slow(body: Bytes) -> Response {
    tokio::time::sleep(Duration::from_secs(3)).await;
    ok(body).await
}

async fn flaky(State(counters): State<Counters>, body: Bytes) -> Response {
    if counters.flaky.fetch_add(1, Ordering::SeqCst) < 2 {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    ok(body).await
}

async fn down(State(counters): State<Counters>) -> Response {
    counters.down.fetch_add(1, Ordering::SeqCst);
    StatusCode::SERVICE_UNAVAILABLE.into_response()
}

/// Fails at once for the first two requests, then answers correctly but slowly: a registry coming
/// back up.
async fn recovering(State(counters): State<Counters>, body: Bytes) -> Response {
    if counters.recovering.fetch_add(1, Ordering::SeqCst) < 2 {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    ok(body).await
}

async fn garbage() -> Response {
    json("<html>502 Bad Gateway</html>".to_string())
}

async fn incomplete(body: Bytes) -> Response {
    let items: Vec<serde_json::Value> = requested_iins(&body)
        .iter()
        .map(|iin| external_person(iin))
        .collect();
    json(serde_json::json!({ "data": { "items": items }, "complete": false }).to_string())
}

async fn missing_surname(body: Bytes) -> Response {
    let items: Vec<serde_json::Value> = requested_iins(&body)
        .iter()
        .map(|iin| {
            let mut person = external_person(iin);
            person["fio"] = serde_json::json!({ "name": "Нұрлан" });
            person
        })
        .collect();
    json(serde_json::json!({ "data": { "items": items }, "complete": true }).to_string())
}

async fn someone_else() -> Response {
    let items = vec![external_person("850101399906")];
    json(serde_json::json!({ "data": { "items": items }, "complete": true }).to_string())
}

async fn wrong_type(body: Bytes) -> Response {
    let items: Vec<serde_json::Value> = requested_iins(&body)
        .iter()
        .map(|iin| {
            let mut person = external_person(iin);
            person["sex"] = serde_json::json!("male");
            person
        })
        .collect();
    json(serde_json::json!({ "data": { "items": items }, "complete": true }).to_string())
}

async fn start_server() -> (SocketAddr, Counters) {
    let counters = Counters::default();
    let router = Router::new()
        .route("/ok/persons", post(ok))
        .route("/slow/persons", post(slow))
        .route("/flaky/persons", post(flaky))
        .route("/down/persons", post(down))
        .route("/recovering/persons", post(recovering))
        .route("/garbage/persons", post(garbage))
        .route("/incomplete/persons", post(incomplete))
        .route("/missing/persons", post(missing_surname))
        .route("/someone-else/persons", post(someone_else))
        .route("/wrong-type/persons", post(wrong_type))
        .with_state(counters.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    (address, counters)
}

fn person_endpoints() -> BTreeMap<String, EndpointMapping> {
    let fields = BTreeMap::from([
        ("last_name".to_string(), "/fio/surname".to_string()),
        ("first_name".to_string(), "/fio/name".to_string()),
        ("patronymic".to_string(), "/fio/patronymic".to_string()),
        ("birth_date".to_string(), "/birthDate".to_string()),
        ("life_status".to_string(), "/lifeStatus".to_string()),
        ("legal_capacity".to_string(), "/capacity".to_string()),
        ("region_kato".to_string(), "/address/regionKato".to_string()),
        ("region_name".to_string(), "/address/regionName".to_string()),
    ]);
    BTreeMap::from([(
        "persons".to_string(),
        EndpointMapping {
            path: "persons".to_string(),
            request_field: "personIins".to_string(),
            records_pointer: "/data/items".to_string(),
            complete_pointer: Some("/complete".to_string()),
            fields,
            required: vec!["last_name".to_string(), "first_name".to_string()],
        },
    )])
}

fn base_settings() -> UpstreamSettings {
    UpstreamSettings {
        base_url: String::new(),
        timeout_ms: 300,
        connect_timeout_ms: 300,
        max_attempts: 3,
        initial_backoff_ms: 10,
        breaker_failures: 2,
        breaker_open_ms: 60_000,
        ca_cert: None,
        endpoints: person_endpoints(),
    }
}

fn registry(address: SocketAddr, scenario: &str) -> UpstreamRegistry {
    let settings = UpstreamSettings {
        base_url: format!("http://{address}/{scenario}"),
        ..base_settings()
    };
    UpstreamRegistry::new(settings, None).expect("upstream registry")
}

fn iins() -> Vec<Iin> {
    vec![Iin::parse(KNOWN).expect("iin")]
}

fn reason_of(
    result: Result<Vec<crate::records::PersonRecord>, SourceError>,
) -> (&'static str, &'static str) {
    match result {
        Ok(_) => ("ok", ""),
        Err(SourceError::Unavailable { reason, .. }) => ("unavailable", reason),
        Err(SourceError::Refused { reason, .. }) => ("refused", reason),
        Err(SourceError::DataLoss { reason, .. }) => ("data_loss", reason),
        Err(SourceError::Storage(_)) => ("storage", ""),
    }
}

#[tokio::test]
async fn a_correct_answer_is_mapped_field_by_field() {
    let (address, _) = start_server().await;
    let upstream = registry(address, "ok");
    let persons = upstream
        .records(&kinds::PERSONS, &iins())
        .await
        .expect("persons");
    assert_eq!(persons.len(), 1);
    assert_eq!(persons[0].last_name, "Әбдірахманов");
    assert_eq!(persons[0].region_kato, "710000000");
    // An unknown IIN is simply absent, as with the embedded backend.
    let unknown = vec![Iin::parse("850101399906").expect("iin")];
    assert!(
        upstream
            .records(&kinds::PERSONS, &unknown)
            .await
            .expect("persons")
            .is_empty()
    );
}

#[tokio::test]
async fn a_slow_registry_is_unavailable_with_timeout() {
    let (address, _) = start_server().await;
    let upstream = registry(address, "slow");
    assert_eq!(
        reason_of(upstream.records(&kinds::PERSONS, &iins()).await),
        ("unavailable", reasons::TIMEOUT)
    );
}

#[tokio::test]
async fn transient_failures_are_retried_and_never_remembered() {
    let (address, counters) = start_server().await;
    let upstream = registry(address, "flaky");
    let persons = upstream
        .records(&kinds::PERSONS, &iins())
        .await
        .expect("third attempt succeeds");
    assert_eq!(persons.len(), 1);
    assert_eq!(counters.flaky.load(Ordering::SeqCst), 3);
    // The next call asks again: nothing was cached.
    upstream
        .records(&kinds::PERSONS, &iins())
        .await
        .expect("asked again");
    assert_eq!(counters.flaky.load(Ordering::SeqCst), 4);
}

#[tokio::test]
async fn a_failing_registry_opens_the_circuit_breaker() {
    let (address, counters) = start_server().await;
    let upstream = registry(address, "down");
    for _ in 0..2 {
        assert_eq!(
            reason_of(upstream.records(&kinds::PERSONS, &iins()).await),
            ("unavailable", reasons::UNAVAILABLE)
        );
    }
    let calls_before = counters.down.load(Ordering::SeqCst);
    assert_eq!(calls_before, 6, "three attempts per call");
    assert_eq!(
        reason_of(upstream.records(&kinds::PERSONS, &iins()).await),
        ("unavailable", reasons::CIRCUIT_OPEN)
    );
    assert_eq!(
        counters.down.load(Ordering::SeqCst),
        calls_before,
        "not called while open"
    );
}

#[tokio::test]
async fn a_half_open_breaker_lets_exactly_one_trial_call_through() {
    let (address, counters) = start_server().await;
    let settings = UpstreamSettings {
        base_url: format!("http://{address}/recovering"),
        timeout_ms: 2_000,
        max_attempts: 1,
        breaker_open_ms: 200,
        ..base_settings()
    };
    let upstream = UpstreamRegistry::new(settings, None).expect("upstream registry");
    let asked = iins();
    for _ in 0..2 {
        assert_eq!(
            reason_of(upstream.records(&kinds::PERSONS, &asked).await),
            ("unavailable", reasons::UNAVAILABLE)
        );
    }
    assert_eq!(
        reason_of(upstream.records(&kinds::PERSONS, &asked).await),
        ("unavailable", reasons::CIRCUIT_OPEN)
    );
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Five calls at once after the open period: one trial call reaches the registry (which takes
    // its time answering), the other four are refused without calling it.
    let outcomes =
        futures::future::join_all((0..5).map(|_| upstream.records(&kinds::PERSONS, &asked))).await;
    let outcomes: Vec<_> = outcomes.into_iter().map(reason_of).collect();
    let answered = outcomes.iter().filter(|outcome| outcome.0 == "ok").count();
    let refused = outcomes
        .iter()
        .filter(|outcome| **outcome == ("unavailable", reasons::CIRCUIT_OPEN))
        .count();
    assert_eq!((answered, refused), (1, 4), "{outcomes:?}");
    assert_eq!(
        counters.recovering.load(Ordering::SeqCst),
        3,
        "one request while half-open"
    );

    // The trial succeeded: the breaker is closed and every call goes through again.
    let again =
        futures::future::join_all((0..2).map(|_| upstream.records(&kinds::PERSONS, &asked))).await;
    assert!(again.iter().all(Result::is_ok), "{again:?}");
    assert_eq!(counters.recovering.load(Ordering::SeqCst), 5);
}

#[tokio::test]
async fn malformed_and_partial_answers_are_data_loss() {
    let (address, _) = start_server().await;
    for (scenario, expected) in [
        ("garbage", reasons::MALFORMED),
        ("incomplete", reasons::PARTIAL),
        ("missing", reasons::PARTIAL),
        ("someone-else", reasons::MALFORMED),
        ("wrong-type", reasons::MALFORMED),
    ] {
        let upstream = registry(address, scenario);
        assert_eq!(
            reason_of(upstream.records(&kinds::PERSONS, &iins()).await),
            ("data_loss", expected),
            "{scenario}"
        );
    }
}

#[tokio::test]
async fn the_grpc_service_reports_upstream_failures_with_their_reason() {
    let (address, _) = start_server().await;
    let call = |scenario: &'static str| {
        let services = RegistryServices::new(Arc::new(registry(address, scenario)));
        async move {
            let mut request = tonic::Request::new(pb::GetPersonRequest {
                iin: KNOWN.to_string(),
            });
            request
                .metadata_mut()
                .insert(SUBJECT_IIN_METADATA, KNOWN.parse().expect("ascii"));
            services.get_person(request).await
        }
    };
    let status = call("garbage").await.expect_err("garbage");
    assert_eq!(status.code(), Code::DataLoss);
    assert_eq!(summarize_status(&status).reason, reasons::MALFORMED);

    let status = call("slow").await.expect_err("slow");
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(summarize_status(&status).reason, reasons::TIMEOUT);

    let person = call("ok")
        .await
        .expect("ok")
        .into_inner()
        .person
        .expect("person");
    assert_eq!(person.first_name, "Нұрлан");
}

#[tokio::test]
async fn the_registry_section_names_a_bad_upstream_file() {
    let directory = tempfile::tempdir().expect("temp dir");
    let test_database = shlyuz_kit::db::testing::TestDatabase::sqlite().await;
    let database = test_database.database().clone();

    let good = directory.path().join("upstream.toml");
    std::fs::write(
        &good,
        "base_url = \"http://127.0.0.1:9\"\n[endpoints.persons]\npath = \"persons\"\nrecords_pointer = \"/data/items\"\n",
    )
    .expect("write");
    let config = crate::config::RegistryConfig {
        upstream_file: good,
        ..Default::default()
    };
    assert!(config.routes(database.clone(), None).is_ok());

    let bad = directory.path().join("bad.toml");
    std::fs::write(
        &bad,
        "base_url = \"http://127.0.0.1:9\"\n[endpoints.pets]\npath = \"pets\"\n",
    )
    .expect("write");
    let config = crate::config::RegistryConfig {
        upstream_file: bad,
        ..Default::default()
    };
    let Err(error) = config.routes(database, None) else {
        panic!("a bad upstream file must be refused");
    };
    let text = format!("{error:#}");
    assert!(
        text.contains("registry.upstream_file") && text.contains("pets"),
        "{text}"
    );
    test_database.cleanup().await;
}

/// Accepts TLS connections for axum with a certificate of a development CA.
struct TlsListener {
    tcp: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((stream, address)) = self.tcp.accept().await else {
                continue;
            };
            if let Ok(tls) = self.acceptor.accept(stream).await {
                return (tls, address);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

#[tokio::test]
async fn https_registries_are_trusted_only_through_the_configured_ca() {
    shlyuz_kit::install_crypto_provider();
    let directory = tempfile::tempdir().expect("temp dir");
    let pki =
        shlyuz_kit::pki::DevPki::ensure(&directory.path().join("pki"), &["registry"]).expect("pki");
    let files = pki.participant("registry").expect("files");
    let certificates = shlyuz_kit::pki::load_certs(&files.tls_cert).expect("certs");
    let key = shlyuz_kit::pki::load_private_key(&files.tls_key).expect("key");
    let server_config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certificates, key)
        .expect("server config");
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = tcp.local_addr().expect("address");
    let listener = TlsListener {
        tcp,
        acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(server_config)),
    };
    tokio::spawn(async move {
        let _ = axum::serve(listener, Router::new().route("/ok/persons", post(ok))).await;
    });

    let settings_with = |ca_cert: std::path::PathBuf| {
        let settings = UpstreamSettings {
            base_url: format!("https://127.0.0.1:{}/ok", address.port()),
            ca_cert: Some(ca_cert),
            ..base_settings()
        };
        UpstreamRegistry::new(settings, None).expect("registry")
    };
    let trusted = settings_with(pki.ca_cert_path().to_path_buf());
    let persons = trusted
        .records(&kinds::PERSONS, &iins())
        .await
        .expect("https answer");
    assert_eq!(persons.len(), 1);

    let other = tempfile::tempdir().expect("temp dir");
    let other_pki =
        shlyuz_kit::pki::DevPki::ensure(&other.path().join("pki"), &["registry"]).expect("pki");
    let untrusted = settings_with(other_pki.ca_cert_path().to_path_buf());
    assert_eq!(
        reason_of(untrusted.records(&kinds::PERSONS, &iins()).await),
        ("unavailable", reasons::UNAVAILABLE)
    );
}
