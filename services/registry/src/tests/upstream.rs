//! The upstream backend against [`MockUpstream`], driven by the same settings: correct, slow,
//! failing, flaky, malformed and partial answers, authentication, per-person `GET`s and batches
//! split into calls of at most 500 IINs.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::grpc::RegistryServices;
use crate::records::{MarriageRecord, PersonRecord, kinds};
use crate::source::{RecordLookup as _, SourceError};
use crate::testing::{Fault, MockTable, MockUpstream};
use crate::upstream::{
    EndpointMapping, EndpointMethod, UpstreamRegistry, UpstreamSettings, reasons,
};
use shlyuz_kit::error::summarize_status;
use shlyuz_kit::iin::Iin;
use shlyuz_kit::subject::SUBJECT_IIN_METADATA;
use shlyuz_proto::registry::v1 as pb;
use shlyuz_proto::registry::v1::person_registry_service_server::PersonRegistryService;
use tonic::Code;

const KNOWN: &str = "900101300017";

/// The person the external registry knows.
fn known_person(iin: &str) -> PersonRecord {
    PersonRecord {
        iin: iin.to_string(),
        last_name: "Әбдірахманов".to_string(),
        first_name: "Нұрлан".to_string(),
        patronymic: "Серікұлы".to_string(),
        birth_date: "1990-01-01".to_string(),
        sex: 1,
        citizenship: "KZ".to_string(),
        life_status: 1,
        legal_capacity: 1,
        region_kato: "710000000".to_string(),
        region_name: "Астана қаласы".to_string(),
        ..Default::default()
    }
}

fn persons_table(iins: &[&str]) -> MockTable {
    let rows: Vec<PersonRecord> = iins.iter().map(|iin| known_person(iin)).collect();
    MockTable::from_rows("persons", &["iin"], &rows)
}

/// A mock registry that knows [`KNOWN`], in the external field names of [`person_endpoints`].
async fn start_mock() -> MockUpstream {
    MockUpstream::start(base_settings(), vec![persons_table(&[KNOWN])])
        .await
        .expect("mock upstream")
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
            ..Default::default()
        },
    )])
}

fn base_settings() -> UpstreamSettings {
    UpstreamSettings {
        timeout_ms: 300,
        connect_timeout_ms: 300,
        max_attempts: 3,
        initial_backoff_ms: 10,
        breaker_failures: 2,
        breaker_open_ms: 60_000,
        endpoints: person_endpoints(),
        ..Default::default()
    }
}

fn registry(mock: &MockUpstream) -> UpstreamRegistry {
    UpstreamRegistry::new(mock.settings_for_me(), None).expect("upstream registry")
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
    let mock = start_mock().await;
    let upstream = registry(&mock);
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
    let mock = start_mock().await;
    mock.set_fault("persons", Fault::Slow(Duration::from_secs(3)));
    let upstream = registry(&mock);
    assert_eq!(
        reason_of(upstream.records(&kinds::PERSONS, &iins()).await),
        ("unavailable", reasons::TIMEOUT)
    );
}

#[tokio::test]
async fn transient_failures_are_retried_and_never_remembered() {
    let mock = start_mock().await;
    mock.queue_faults("persons", [Fault::Status(500), Fault::Status(500)]);
    let upstream = registry(&mock);
    let persons = upstream
        .records(&kinds::PERSONS, &iins())
        .await
        .expect("third attempt succeeds");
    assert_eq!(persons.len(), 1);
    assert_eq!(mock.requests("persons"), 3);
    // The next call asks again: nothing was cached.
    upstream
        .records(&kinds::PERSONS, &iins())
        .await
        .expect("asked again");
    assert_eq!(mock.requests("persons"), 4);
}

#[tokio::test]
async fn a_failing_registry_opens_the_circuit_breaker() {
    let mock = start_mock().await;
    mock.set_fault("persons", Fault::Status(503));
    let upstream = registry(&mock);
    for _ in 0..2 {
        assert_eq!(
            reason_of(upstream.records(&kinds::PERSONS, &iins()).await),
            ("unavailable", reasons::UNAVAILABLE)
        );
    }
    let calls_before = mock.requests("persons");
    assert_eq!(calls_before, 6, "three attempts per call");
    assert_eq!(
        reason_of(upstream.records(&kinds::PERSONS, &iins()).await),
        ("unavailable", reasons::CIRCUIT_OPEN)
    );
    assert_eq!(
        mock.requests("persons"),
        calls_before,
        "not called while open"
    );
}

#[tokio::test]
async fn a_half_open_breaker_lets_exactly_one_trial_call_through() {
    // Fails at once for the first two requests, then answers correctly but slowly: a registry
    // coming back up.
    let mock = start_mock().await;
    mock.queue_faults("persons", [Fault::Status(503), Fault::Status(503)]);
    mock.set_fault("persons", Fault::Slow(Duration::from_millis(300)));
    let settings = UpstreamSettings {
        timeout_ms: 2_000,
        max_attempts: 1,
        breaker_open_ms: 200,
        ..mock.settings_for_me()
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
    assert_eq!(mock.requests("persons"), 3, "one request while half-open");

    // The trial succeeded: the breaker is closed and every call goes through again.
    let again =
        futures::future::join_all((0..2).map(|_| upstream.records(&kinds::PERSONS, &asked))).await;
    assert!(again.iter().all(Result::is_ok), "{again:?}");
    assert_eq!(mock.requests("persons"), 5);
}

#[tokio::test]
async fn malformed_and_partial_answers_are_data_loss() {
    let mock = start_mock().await;
    for (scenario, expected) in [
        (Fault::Malformed, reasons::MALFORMED),
        (Fault::Partial, reasons::PARTIAL),
        (Fault::MissingRequired, reasons::PARTIAL),
        (Fault::Foreign, reasons::MALFORMED),
        (Fault::WrongType, reasons::MALFORMED),
    ] {
        mock.set_fault("persons", scenario.clone());
        let upstream = registry(&mock);
        assert_eq!(
            reason_of(upstream.records(&kinds::PERSONS, &iins()).await),
            ("data_loss", expected),
            "{scenario:?}"
        );
    }
}

#[tokio::test]
async fn the_grpc_service_reports_upstream_failures_with_their_reason() {
    let mock = start_mock().await;
    let call = |scenario: Fault| {
        mock.set_fault("persons", scenario);
        let services = RegistryServices::new(Arc::new(registry(&mock)));
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
    let status = call(Fault::Malformed).await.expect_err("garbage");
    assert_eq!(status.code(), Code::DataLoss);
    assert_eq!(summarize_status(&status).reason, reasons::MALFORMED);

    let status = call(Fault::Slow(Duration::from_secs(3)))
        .await
        .expect_err("slow");
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(summarize_status(&status).reason, reasons::TIMEOUT);

    let person = call(Fault::Ok)
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
    let mock = MockUpstream::start_https(
        base_settings(),
        vec![persons_table(&[KNOWN])],
        Arc::new(server_config),
    )
    .await
    .expect("mock upstream");

    let settings_with = |ca_cert: std::path::PathBuf| {
        let settings = UpstreamSettings {
            ca_cert: Some(ca_cert),
            ..mock.settings_for_me()
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

/// `count` valid IINs of persons born on 1 January 1990 (serials from 1).
fn many_iins(count: usize) -> Vec<Iin> {
    let birth_date = time::macros::date!(1990 - 01 - 01);
    (1..=9_999u16)
        .filter_map(|serial| Iin::from_parts(birth_date, shlyuz_kit::iin::Sex::Male, serial))
        .take(count)
        .collect()
}

#[tokio::test]
async fn a_batch_larger_than_500_iins_is_split_into_calls_of_at_most_500() {
    let asked = many_iins(1_201);
    let known: Vec<&str> = asked.iter().step_by(100).map(Iin::as_str).collect();
    let mock = MockUpstream::start(base_settings(), vec![persons_table(&known)])
        .await
        .expect("mock upstream");
    let upstream = registry(&mock);
    let persons = upstream
        .records(&kinds::PERSONS, &asked)
        .await
        .expect("persons");
    assert_eq!(mock.requests("persons"), 3, "500 + 500 + 201 iins");
    let mut found: Vec<&str> = persons.iter().map(|person| person.iin.as_str()).collect();
    found.sort_unstable();
    let mut expected = known.clone();
    expected.sort_unstable();
    assert_eq!(found, expected);
}

fn get_settings(path: &str) -> UpstreamSettings {
    let mut settings = base_settings();
    let mut persons = settings.endpoints.remove("persons").expect("persons");
    persons.method = EndpointMethod::Get;
    persons.path = path.to_string();
    settings.endpoints = BTreeMap::from([("persons".to_string(), persons)]);
    settings
}

#[tokio::test]
async fn a_get_endpoint_is_asked_once_per_person_and_not_found_means_no_records() {
    let mock = MockUpstream::start(
        get_settings("persons/{iin}/card"),
        vec![persons_table(&[KNOWN])],
    )
    .await
    .expect("mock upstream");
    let upstream = registry(&mock);
    let asked = vec![
        Iin::parse(KNOWN).expect("iin"),
        Iin::parse("850101399906").expect("iin"),
    ];
    let persons = upstream
        .records(&kinds::PERSONS, &asked)
        .await
        .expect("persons");
    assert_eq!(mock.requests("persons"), 2, "one get per iin");
    assert_eq!(persons.len(), 1, "the unknown person's 404 is no records");
    assert_eq!(persons[0].last_name, "Әбдірахманов");

    // A 404 means "not found" only because the mapping says so: with another not-found status,
    // a 404 is the registry refusing the request.
    let mut settings = mock.settings_for_me();
    if let Some(persons) = settings.endpoints.get_mut("persons") {
        persons.not_found_status = Some(204);
    }
    let strict = UpstreamRegistry::new(settings, None).expect("upstream registry");
    assert_eq!(
        reason_of(strict.records(&kinds::PERSONS, &asked).await),
        ("refused", reasons::REFUSED)
    );
}

#[tokio::test]
async fn a_record_two_per_person_answers_hold_is_returned_once() {
    let marriage = MarriageRecord {
        marriage_id: "M-1".to_string(),
        husband_iin: KNOWN.to_string(),
        wife_iin: "850101399906".to_string(),
        registered_on: "2015-06-01".to_string(),
        dissolved_on: String::new(),
    };
    let settings = UpstreamSettings {
        endpoints: BTreeMap::from([(
            "marriages".to_string(),
            EndpointMapping {
                path: "marriages/{iin}".to_string(),
                method: EndpointMethod::Get,
                ..Default::default()
            },
        )]),
        ..base_settings()
    };
    let mock = MockUpstream::start(
        settings,
        vec![MockTable::from_rows(
            "marriages",
            &["husband_iin", "wife_iin"],
            std::slice::from_ref(&marriage),
        )],
    )
    .await
    .expect("mock upstream");
    let spouses = vec![
        Iin::parse(KNOWN).expect("iin"),
        Iin::parse("850101399906").expect("iin"),
    ];
    let marriages = registry(&mock)
        .records(&kinds::MARRIAGES, &spouses)
        .await
        .expect("marriages");
    assert_eq!(mock.requests("marriages"), 2);
    assert_eq!(marriages, vec![marriage]);
}

#[tokio::test]
async fn the_api_key_and_fixed_headers_go_with_every_call() {
    let directory = tempfile::tempdir().expect("temp dir");
    let key_file = directory.path().join("api-key");
    std::fs::write(&key_file, "s3cr3t-key\n").expect("write");
    let settings = UpstreamSettings {
        api_key_header: Some("X-API-Key".to_string()),
        api_key_file: Some(key_file),
        headers: BTreeMap::from([("X-Request-Source".to_string(), "shlyuz".to_string())]),
        ..base_settings()
    };
    let mock = MockUpstream::start(settings, vec![persons_table(&[KNOWN])])
        .await
        .expect("mock upstream");
    let persons = registry(&mock)
        .records(&kinds::PERSONS, &iins())
        .await
        .expect("persons");
    assert_eq!(persons.len(), 1);
    assert_eq!(
        mock.last_header("x-api-key").as_deref(),
        Some("s3cr3t-key"),
        "trimmed"
    );
    assert_eq!(
        mock.last_header("x-request-source").as_deref(),
        Some("shlyuz")
    );

    // The same registry with another key is refused by the external system.
    let wrong_file = directory.path().join("wrong-key");
    std::fs::write(&wrong_file, "other").expect("write");
    let wrong = UpstreamSettings {
        api_key_file: Some(wrong_file),
        ..mock.settings_for_me()
    };
    let refused = UpstreamRegistry::new(wrong, None).expect("upstream registry");
    assert_eq!(
        reason_of(refused.records(&kinds::PERSONS, &iins()).await),
        ("refused", reasons::REFUSED)
    );
    // And the key never shows in the settings' summary.
    assert!(!mock.settings_for_me().summary().contains("s3cr3t"));
}

#[tokio::test]
async fn a_client_certificate_is_presented_for_mutual_tls() {
    shlyuz_kit::install_crypto_provider();
    let directory = tempfile::tempdir().expect("temp dir");
    let pki =
        shlyuz_kit::pki::DevPki::ensure(&directory.path().join("pki"), &["registry", "intake"])
            .expect("pki");
    let server_files = pki.participant("registry").expect("files");
    let client_files = pki.participant("intake").expect("files");
    let mut roots = rustls::RootCertStore::empty();
    for certificate in shlyuz_kit::pki::load_certs(pki.ca_cert_path()).expect("ca") {
        roots.add(certificate).expect("root");
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder(Arc::new(roots))
        .build()
        .expect("verifier");
    let server_config = rustls::ServerConfig::builder()
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            shlyuz_kit::pki::load_certs(&server_files.tls_cert).expect("certs"),
            shlyuz_kit::pki::load_private_key(&server_files.tls_key).expect("key"),
        )
        .expect("server config");
    let mock = MockUpstream::start_https(
        base_settings(),
        vec![persons_table(&[KNOWN])],
        Arc::new(server_config),
    )
    .await
    .expect("mock upstream");
    let with_certificate = UpstreamSettings {
        ca_cert: Some(pki.ca_cert_path().to_path_buf()),
        client_cert: Some(client_files.tls_cert.clone()),
        client_key: Some(client_files.tls_key.clone()),
        ..mock.settings_for_me()
    };
    let persons = UpstreamRegistry::new(with_certificate.clone(), None)
        .expect("registry")
        .records(&kinds::PERSONS, &iins())
        .await
        .expect("answer over mutual tls");
    assert_eq!(persons.len(), 1);

    let without_certificate = UpstreamSettings {
        client_cert: None,
        client_key: None,
        ..with_certificate
    };
    let anonymous = UpstreamRegistry::new(without_certificate, None).expect("registry");
    assert_eq!(
        reason_of(anonymous.records(&kinds::PERSONS, &iins()).await),
        ("unavailable", reasons::UNAVAILABLE)
    );
}

#[test]
fn a_bad_upstream_file_is_refused_at_start_naming_the_key() {
    let directory = tempfile::tempdir().expect("temp dir");
    let key_file = directory.path().join("api-key");
    std::fs::write(&key_file, "key").expect("write");
    let not_pem = directory.path().join("not.pem");
    std::fs::write(&not_pem, "hello").expect("write");
    let missing = directory.path().join("missing");
    let base = "base_url = \"http://127.0.0.1:9\"\n";
    let persons = "[endpoints.persons]\npath = \"persons\"\n";
    let cases = [
        (
            format!("{base}api_key_header = \"X-API-Key\"\n{persons}"),
            "api_key_header",
        ),
        (
            format!(
                "{base}api_key_header = \"X-API-Key\"\napi_key_file = {key_file:?}\napi_key_env = \"HOME\"\n{persons}"
            ),
            "api_key_env",
        ),
        (
            format!("{base}api_key_header = \"X-API-Key\"\napi_key_file = {missing:?}\n{persons}"),
            "api_key_file",
        ),
        (
            format!(
                "{base}api_key_header = \"X-API-Key\"\napi_key_env = \"SHLYUZ_TEST_NO_SUCH_VARIABLE\"\n{persons}"
            ),
            "api_key_env",
        ),
        (
            format!("{base}api_key_file = {key_file:?}\n{persons}"),
            "api_key_header",
        ),
        (
            format!("{base}client_cert = {not_pem:?}\n{persons}"),
            "client_key",
        ),
        (
            format!("{base}client_cert = {not_pem:?}\nclient_key = {not_pem:?}\n{persons}"),
            "client_cert",
        ),
        (format!("{base}ca_cert = {not_pem:?}\n{persons}"), "ca_cert"),
        (
            format!("{base}[headers]\n\"Bad Header\" = \"x\"\n{persons}"),
            "headers.Bad Header",
        ),
        (
            format!("{base}[endpoints.persons]\npath = \"persons/{{iin}}\"\n"),
            "endpoints.persons.path",
        ),
        (
            format!("{base}[endpoints.persons]\npath = \"persons\"\nmethod = \"get\"\n"),
            "endpoints.persons.path",
        ),
        (
            format!("{base}[endpoints.persons]\npath = \"persons\"\nnot_found_status = 404\n"),
            "endpoints.persons.not_found_status",
        ),
        (
            format!("{base}[endpoints.persons]\npath = \"persons\"\nrecords_pointer = \"data\"\n"),
            "endpoints.persons.records_pointer",
        ),
        (
            format!(
                "{base}[endpoints.persons]\npath = \"p\"\nfields = {{ last_name = \"fio\" }}\n"
            ),
            "endpoints.persons.fields.last_name",
        ),
        (
            format!("{base}[endpoints.pets]\npath = \"pets\"\n"),
            "endpoints.pets",
        ),
    ];
    for (text, key) in cases {
        let settings: UpstreamSettings = toml::from_str(&text).expect(&text);
        let Err(error) = UpstreamRegistry::new(settings, None) else {
            panic!("refused: {text}");
        };
        let message = format!("{error:#}");
        assert!(message.contains(&format!("`{key}`")), "{key}: {message}");
    }
}
