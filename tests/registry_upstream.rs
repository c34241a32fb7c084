//! The registry in front of an external registry, behind a real gateway: a person look-up
//! answered from the mock upstream's API (with its API key), and the external registry's
//! refusal reaching the caller as the registry said it.

mod support;

use shlyuz_kit::error::summarize_status;
use shlyuz_kit::fixture_people as people;
use shlyuz_proto::registry::v1 as pb;
use shlyuz_registry::testing::{MockTable, MockUpstream};
use support::TestSystem;
use tonic::Code;

/// An upstream file for the persons of an external ГБД ФЛ, authenticated with an API key.
fn upstream_toml(key_file: &std::path::Path) -> String {
    format!(
        r#"
base_url = "https://gbdfl.example.gov.kz/api"
timeout_ms = 500
max_attempts = 2
initial_backoff_ms = 10
api_key_header = "X-API-Key"
api_key_file = "{}"

[endpoints.persons]
path = "persons/search"
request_field = "iins"
records_pointer = "/persons"
fields = {{ last_name = "/name/last", first_name = "/name/first" }}
"#,
        key_file.display()
    )
}

/// The fixture's clean candidate as the external registry knows them: a surname the embedded
/// fixture does not have, so an answer shows where it came from.
fn mock_table() -> MockTable {
    MockTable::from_rows(
        "persons",
        &["iin"],
        &[serde_json::json!({
            "iin": people::CLEAN_CANDIDATE.iin,
            "last_name": "Сыртқыұлы",
            "first_name": "Арман",
            "birth_date": "1998-05-12",
        })],
    )
}

async fn get_person(system: &TestSystem, iin: &str) -> Result<pb::Person, tonic::Status> {
    support::get_person(system, "intake", "MILITARY_RECRUITMENT", iin, iin).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_is_answered_from_the_external_registry_with_its_api_key() {
    let keys = tempfile::tempdir().expect("dir");
    let key_file = keys.path().join("gbdfl.key");
    std::fs::write(&key_file, "s3cret-key\n").expect("key");
    let mock = MockUpstream::start_toml(&upstream_toml(&key_file), vec![mock_table()])
        .await
        .expect("mock");
    let system = support::spawn_registry_on_upstream(&mock).await;

    let person = get_person(&system, people::CLEAN_CANDIDATE.iin)
        .await
        .expect("the person");
    assert_eq!(
        person.last_name, "Сыртқыұлы",
        "answered by the external registry"
    );
    assert_eq!(mock.requests("persons"), 1);
    assert_eq!(mock.last_header("x-api-key").as_deref(), Some("s3cret-key"));
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_of_the_external_registry_reaches_the_caller_as_the_registry_said_it() {
    let keys = tempfile::tempdir().expect("dir");
    let key_file = keys.path().join("gbdfl.key");
    std::fs::write(&key_file, "the-right-key").expect("key");
    let mock = MockUpstream::start_toml(&upstream_toml(&key_file), vec![mock_table()])
        .await
        .expect("mock");
    // The registry is deployed with a stale key: the external registry answers 401.
    std::fs::write(&key_file, "a-stale-key").expect("key");
    let system = support::spawn_registry_on_upstream(&mock).await;

    for _ in 0..3 {
        let status = get_person(&system, people::CLEAN_CANDIDATE.iin)
            .await
            .expect_err("refused");
        let summary = summarize_status(&status);
        assert_eq!(
            (summary.code, summary.reason.as_str()),
            (Code::FailedPrecondition, "UPSTREAM_REFUSED"),
            "{status:?}"
        );
    }
    // Not retried, by the registry or the gateway: one request per call.
    assert_eq!(mock.requests("persons"), 3);
    system.stop().await;
}
