//! The registry target behind a real gateway with mutual TLS and the shipped default directory:
//! participants call the registry services with signed envelopes, as intake and housing will.

mod support;

use std::time::Duration;

use shlyuz::target::Target;
use shlyuz_kit::error::summarize_status;
use shlyuz_kit::fixture_people as people;
use shlyuz_proto::registry::v1 as pb;
use sqlx::Row;
use support::TestSystem;
use tonic::Code;

/// A valid IIN that no fixture or generated person has (serial 9990 is never generated).
const UNKNOWN_IIN: &str = "850101399906";

/// The gateway and the registry, with 500 synthetic persons (seed 5) and the rules fixture;
/// notify does not run, so the registry cannot have consent codes sent.
async fn start() -> TestSystem {
    support::spawn_system_with(&[Target::Gateway, Target::Registry], |config| {
        config.registry.seed_if_empty = Some(shlyuz_registry::config::SeedConfig {
            population: 500,
            seed: 5,
            rules_fixture: true,
        });
    })
    .await
}

const GET_PERSON: &str = "/shlyuz.registry.v1.PersonRegistryService/GetPerson";
const RECRUITMENT: &str = "MILITARY_RECRUITMENT";
const REVIEW: &str = "HOUSING_REGISTER_REVIEW";

async fn get_person_as_intake(
    stack: &TestSystem,
    subject: &str,
    iin: &str,
) -> Result<pb::Person, tonic::Status> {
    support::get_person(stack, "intake", RECRUITMENT, subject, iin).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intake_reads_a_candidate_through_the_gateway() {
    let stack = start().await;
    let person = get_person_as_intake(
        &stack,
        people::CLEAN_CANDIDATE.iin,
        people::CLEAN_CANDIDATE.iin,
    )
    .await
    .expect("get person");
    assert_eq!(person.last_name, "Қасымов");
    assert_eq!(person.patronymic, "Серікұлы");
    let address = person.registered_address.unwrap_or_default();
    assert_eq!(
        address.region_kato, "110000000",
        "Akmola: the ДДО that examines"
    );

    let mut medical = pb::medical_registry_service_client::MedicalRegistryServiceClient::new(
        stack.channel("intake").await,
    );
    let records = medical
        .list_dispensary_records(stack.signed(
            "intake",
            "/shlyuz.registry.v1.MedicalRegistryService/ListDispensaryRecords",
            RECRUITMENT,
            people::NARCOLOGICAL_CANDIDATE.iin,
            pb::ListDispensaryRecordsRequest {
                iin: people::NARCOLOGICAL_CANDIDATE.iin.to_string(),
                ..Default::default()
            },
        ))
        .await
        .expect("dispensary records")
        .into_inner()
        .records;
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].dispensary, pb::Dispensary::Narcological as i32);
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_bad_iin_is_invalid_argument_naming_the_field() {
    let stack = start().await;
    let wrong_check_digit = {
        let mut digits = people::CLEAN_CANDIDATE.iin.to_string();
        let last = digits.pop().expect("digit");
        let changed = if last == '9' {
            '0'
        } else {
            char::from(last as u8 + 1)
        };
        digits.push(changed);
        digits
    };
    for (case, bad) in [
        ("length", "98051239101".to_string()),
        ("non-digits", "98051239101A".to_string()),
        ("impossible date", "981332391010".to_string()),
        ("check digit", wrong_check_digit),
    ] {
        let status = get_person_as_intake(&stack, people::CLEAN_CANDIDATE.iin, &bad)
            .await
            .expect_err(case);
        let summary = summarize_status(&status);
        assert_eq!(summary.code, Code::InvalidArgument, "{case}: {status:?}");
        assert_eq!(summary.fields, vec!["iin".to_string()], "{case}");
    }
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_person_is_not_found_but_record_searches_are_empty() {
    let stack = start().await;
    let status = get_person_as_intake(&stack, UNKNOWN_IIN, UNKNOWN_IIN)
        .await
        .expect_err("unknown");
    let summary = summarize_status(&status);
    assert_eq!(summary.code, Code::NotFound);
    assert_eq!(summary.reason, "PERSON_NOT_FOUND");

    let mut criminal = pb::criminal_records_service_client::CriminalRecordsServiceClient::new(
        stack.channel("intake").await,
    );
    let status = criminal
        .get_criminal_record(stack.signed(
            "intake",
            "/shlyuz.registry.v1.CriminalRecordsService/GetCriminalRecord",
            RECRUITMENT,
            UNKNOWN_IIN,
            pb::GetCriminalRecordRequest {
                iin: UNKNOWN_IIN.to_string(),
            },
        ))
        .await
        .expect_err("unknown person");
    assert_eq!(summarize_status(&status).reason, "PERSON_NOT_FOUND");

    let mut equity = pb::equity_registry_service_client::EquityRegistryServiceClient::new(
        stack.channel("housing").await,
    );
    let contracts = equity
        .list_equity_contracts(stack.signed(
            "housing",
            "/shlyuz.registry.v1.EquityRegistryService/ListEquityContracts",
            REVIEW,
            UNKNOWN_IIN,
            pb::ListEquityContractsRequest {
                iin: UNKNOWN_IIN.to_string(),
                ..Default::default()
            },
        ))
        .await
        .expect("a record search is never NOT_FOUND")
        .into_inner();
    assert!(contracts.contracts.is_empty());
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_about_someone_not_in_the_envelope_is_subject_mismatch() {
    let stack = start().await;
    let status = get_person_as_intake(
        &stack,
        people::CLEAN_CANDIDATE.iin,
        people::CONVICTED_CANDIDATE.iin,
    )
    .await
    .expect_err("mismatch");
    let summary = summarize_status(&status);
    assert_eq!(summary.code, Code::PermissionDenied);
    assert_eq!(summary.reason, "SUBJECT_MISMATCH");
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_access_rules_keep_participants_to_their_registries() {
    let stack = start().await;
    // notify may resolve phones, but not read the individuals database.
    let mut persons = pb::person_registry_service_client::PersonRegistryServiceClient::new(
        stack.channel("notify").await,
    );
    let status = persons
        .get_person(stack.signed(
            "notify",
            GET_PERSON,
            "CITIZEN_NOTIFICATION",
            people::CLEAN_CANDIDATE.iin,
            pb::GetPersonRequest {
                iin: people::CLEAN_CANDIDATE.iin.to_string(),
            },
        ))
        .await
        .expect_err("notify may not read persons");
    assert_eq!(status.code(), Code::PermissionDenied);
    assert_eq!(summarize_status(&status).reason, "ACCESS_DENIED");

    let mut phones = pb::mobile_citizens_service_client::MobileCitizensServiceClient::new(
        stack.channel("notify").await,
    );
    let phone = phones
        .get_phone(stack.signed(
            "notify",
            "/shlyuz.registry.v1.MobileCitizensService/GetPhone",
            "CITIZEN_NOTIFICATION",
            people::CLEAN_CANDIDATE.iin,
            pb::GetPhoneRequest {
                iin: people::CLEAN_CANDIDATE.iin.to_string(),
            },
        ))
        .await
        .expect("notify resolves the phone")
        .into_inner()
        .phone
        .unwrap_or_default();
    assert!(phone.phone_number.starts_with("+7701"));

    // housing may not read dispensary records.
    let mut medical = pb::medical_registry_service_client::MedicalRegistryServiceClient::new(
        stack.channel("housing").await,
    );
    let status = medical
        .list_dispensary_records(stack.signed(
            "housing",
            "/shlyuz.registry.v1.MedicalRegistryService/ListDispensaryRecords",
            REVIEW,
            people::SERVICEMAN_CLEAN.iin,
            pb::ListDispensaryRecordsRequest {
                iin: people::SERVICEMAN_CLEAN.iin.to_string(),
                ..Default::default()
            },
        ))
        .await
        .expect_err("housing may not read dispensaries");
    assert_eq!(status.code(), Code::PermissionDenied);
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn housing_review_batches_find_each_removal_reason() {
    let stack = start().await;
    let channel = stack.channel("housing").await;

    let mut property =
        pb::state_property_registry_service_client::StatePropertyRegistryServiceClient::new(
            channel.clone(),
        );
    let privatised = property
        .batch_list_privatisation_contracts(stack.signed(
            "housing",
            "/shlyuz.registry.v1.StatePropertyRegistryService/BatchListPrivatisationContracts",
            REVIEW,
            people::SERVICEMAN_PRIVATISED.iin,
            pb::BatchListPrivatisationContractsRequest {
                iins: vec![people::SERVICEMAN_PRIVATISED.iin.to_string()],
            },
        ))
        .await
        .expect("privatisation batch")
        .into_inner();
    assert_eq!(privatised.results.len(), 1);
    assert_eq!(privatised.results[0].contracts.len(), 1);

    let mut military =
        pb::military_register_service_client::MilitaryRegisterServiceClient::new(channel.clone());
    let housing = military
        .batch_list_service_housing(stack.signed(
            "housing",
            "/shlyuz.registry.v1.MilitaryRegisterService/BatchListServiceHousing",
            REVIEW,
            people::SERVICEMAN_EARLIER_HOUSING.iin,
            pb::BatchListServiceHousingRequest {
                iins: vec![people::SERVICEMAN_EARLIER_HOUSING.iin.to_string()],
            },
        ))
        .await
        .expect("service housing batch")
        .into_inner();
    let earlier = &housing.results[0].housing;
    assert_eq!(earlier.len(), 1);
    assert_eq!(
        earlier[0].address.clone().unwrap_or_default().locality_name,
        "Ақтау"
    );

    // The spouse holds state housing in permanent use in Astana (the serviceman's locality).
    let mut cadastre =
        pb::real_estate_cadastre_service_client::RealEstateCadastreServiceClient::new(
            channel.clone(),
        );
    let rights = cadastre
        .batch_list_real_estate_rights(stack.signed(
            "housing",
            "/shlyuz.registry.v1.RealEstateCadastreService/BatchListRealEstateRights",
            REVIEW,
            people::SERVICEMAN_SPOUSE_STATE_HOUSING_SPOUSE.iin,
            pb::BatchListRealEstateRightsRequest {
                iins: vec![people::SERVICEMAN_SPOUSE_STATE_HOUSING_SPOUSE.iin.to_string()],
                only_in_force: true,
                locality_kato: "711110000".to_string(),
            },
        ))
        .await
        .expect("cadastre batch")
        .into_inner();
    assert_eq!(
        rights.results[0].rights[0].right_type,
        pb::RightType::PermanentUseStateHousing as i32
    );

    // The family of a serviceman, then the status of the spouse: missing.
    let mut civil =
        pb::civil_registry_service_client::CivilRegistryServiceClient::new(channel.clone());
    let family = civil
        .get_family(stack.signed(
            "housing",
            "/shlyuz.registry.v1.CivilRegistryService/GetFamily",
            REVIEW,
            people::SERVICEMAN_SPOUSE_MISSING.iin,
            pb::GetFamilyRequest {
                iin: people::SERVICEMAN_SPOUSE_MISSING.iin.to_string(),
            },
        ))
        .await
        .expect("family")
        .into_inner()
        .family
        .unwrap_or_default();
    assert!(family.married);
    let spouse = family.marriages[0].spouse_iin.clone();
    assert_eq!(spouse, people::SERVICEMAN_SPOUSE_MISSING_SPOUSE.iin);
    let mut persons =
        pb::person_registry_service_client::PersonRegistryServiceClient::new(channel.clone());
    let batch = persons
        .batch_get_persons(stack.signed(
            "housing",
            "/shlyuz.registry.v1.PersonRegistryService/BatchGetPersons",
            REVIEW,
            &spouse,
            pb::BatchGetPersonsRequest {
                iins: vec![spouse.clone()],
            },
        ))
        .await
        .expect("persons batch")
        .into_inner();
    assert_eq!(batch.persons[0].life_status, pb::LifeStatus::Missing as i32);

    // More than 500 IINs in one call is refused before anything is read.
    let too_many = vec![people::SERVICEMAN_CLEAN.iin.to_string(); 501];
    let status = persons
        .batch_get_persons(stack.signed(
            "housing",
            "/shlyuz.registry.v1.PersonRegistryService/BatchGetPersons",
            REVIEW,
            people::SERVICEMAN_CLEAN.iin,
            pb::BatchGetPersonsRequest { iins: too_many },
        ))
        .await
        .expect_err("501 iins");
    let summary = summarize_status(&status);
    assert_eq!(summary.code, Code::InvalidArgument);
    assert_eq!(summary.fields, vec!["iins".to_string()]);
    stack.stop().await;
}

/// The consent flow with notify's codes is tests/notify.rs's; here notify cannot be reached.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_notify_a_consent_request_is_unavailable_and_stores_nothing() {
    let stack = start().await;
    let subject = people::CLEAN_CANDIDATE.iin;
    let mut consents = pb::consent_service_client::ConsentServiceClient::new(
        stack.channel("jauynger-portal").await,
    );
    let now_ms = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_millis(),
    )
    .expect("millis");
    let status = consents
        .request_consent(stack.signed(
            "jauynger-portal",
            "/shlyuz.registry.v1.ConsentService/RequestConsent",
            "PERSONAL_DATA_CONSENT",
            subject,
            pb::RequestConsentRequest {
                subject_iin: subject.to_string(),
                participant: "intake".to_string(),
                purpose: RECRUITMENT.to_string(),
                scopes: vec!["shlyuz.registry.v1.PersonRegistryService".to_string()],
                expire_time_ms: now_ms + 3_600_000,
            },
        ))
        .await
        .expect_err("no notify, no code");
    // The registry answers UNAVAILABLE OTP_UNAVAILABLE, and the gateway passes its reasoned
    // status through as it came (decision 132).
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(
        summarize_status(&status).reason,
        "OTP_UNAVAILABLE",
        "{status:?}"
    );
    assert!(
        status.message().contains("consent codes cannot be sent"),
        "{status:?}"
    );
    let listed = consents
        .list_consents(stack.signed(
            "jauynger-portal",
            "/shlyuz.registry.v1.ConsentService/ListConsents",
            "PERSONAL_DATA_CONSENT",
            subject,
            pb::ListConsentsRequest {
                subject_iin: subject.to_string(),
                ..Default::default()
            },
        ))
        .await
        .expect("list consents")
        .into_inner();
    assert!(listed.consents.is_empty(), "{:?}", listed.consents);
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_registry_bench_runs_both_paths_without_errors() {
    let figures = shlyuz::bench::registry::run(shlyuz::bench::registry::RegistryBenchOptions {
        persons: 300,
        duration: Duration::from_millis(300),
        concurrency: 2,
        postgres_url: None,
    })
    .await
    .expect("bench");
    let runs = &figures[0].runs;
    assert_eq!(runs.len(), 2);
    for run in runs {
        assert!(run.calls > 0, "{}: no successful call", run.path);
        assert_eq!(run.errors, 0, "{}", run.path);
    }
}

fn run_seed(data_dir: &std::path::Path, extra: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_shlyuz"))
        .args(["seed", "--data-dir"])
        .arg(data_dir)
        .args(extra)
        .args(["--log-level", "warn"])
        .env_remove("SHLYUZ_CONFIG")
        .output()
        .expect("run shlyuz seed")
}

async fn stored_iins(data_dir: &std::path::Path) -> (i64, Vec<String>) {
    let url = shlyuz_kit::db::default_sqlite_url(data_dir, "registry");
    let database = shlyuz_kit::db::Database::connect(&url, 1)
        .await
        .expect("registry database");
    let count: i64 = sqlx::query("SELECT COUNT(*) AS persons FROM persons")
        .fetch_one(database.pool())
        .await
        .expect("count")
        .try_get("persons")
        .expect("a count");
    let iins = sqlx::query("SELECT iin FROM persons ORDER BY iin LIMIT 1000")
        .fetch_all(database.pool())
        .await
        .expect("iins")
        .iter()
        .map(|row| row.try_get("iin").expect("an iin"))
        .collect();
    database.close().await;
    (count, iins)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shlyuz_seed_is_deterministic_and_loads_fixtures() {
    let first = tempfile::tempdir().expect("temp dir");
    let second = tempfile::tempdir().expect("temp dir");
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("services/registry/fixtures/rules.toml");
    let output = run_seed(
        first.path(),
        &[
            "--population",
            "400",
            "--seed",
            "9",
            "--fixture",
            fixture.to_str().expect("utf-8"),
        ],
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("seeded 400 persons"));
    let output = run_seed(second.path(), &["--population", "400", "--seed", "9"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    let (with_fixture, _) = stored_iins(first.path()).await;
    assert_eq!(
        with_fixture, 420,
        "400 generated and 20 hand-picked persons"
    );
    // Seeding again replaces the data: same seed, same people.
    let output = run_seed(first.path(), &["--population", "400", "--seed", "9"]);
    assert!(output.status.success());
    assert_eq!(
        stored_iins(first.path()).await,
        stored_iins(second.path()).await
    );

    let output = run_seed(first.path(), &["--population", "many"]);
    assert_eq!(output.status.code(), Some(2), "clap refuses a non-number");
}

/// Collects the text of every warning logged on the thread it is the default for.
#[derive(Clone, Default)]
struct Warnings(std::sync::Arc<parking_lot::Mutex<Vec<String>>>);

impl tracing::Subscriber for Warnings {
    fn enabled(&self, metadata: &tracing::Metadata<'_>) -> bool {
        metadata.is_event() && *metadata.level() <= tracing::Level::WARN
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        struct Text(String);
        impl tracing::field::Visit for Text {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                self.0.push_str(&format!(" {}={value:?}", field.name()));
            }
        }
        let mut text = Text(String::new());
        event.record(&mut text);
        self.0.lock().push(text.0);
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shlyuz_up_warns_of_each_registry_route_shorter_than_the_upstream_budget() {
    let upstream_dir = tempfile::tempdir().expect("temp dir");
    let upstream_file = upstream_dir.path().join("upstream.toml");
    // 3000 ms × 2 attempts + 1000 ms × 150 % = 7500 ms, above the default routes' 7000 ms.
    std::fs::write(
        &upstream_file,
        "base_url = \"https://registry.test\"\ntimeout_ms = 3000\nmax_attempts = 2\ninitial_backoff_ms = 1000\n",
    )
    .expect("write the upstream file");
    let warnings = Warnings::default();
    let stack = {
        // The targets start on this thread: what they log there is captured.
        let _capture = tracing::subscriber::set_default(warnings.clone());
        support::spawn_system_with(&[Target::Gateway, Target::Registry], |config| {
            config.registry.upstream_file = upstream_file.clone();
        })
        .await
    };
    let logged = warnings.0.lock().clone();
    let about_the_budget: Vec<&String> = logged
        .iter()
        .filter(|text| text.contains("upstream budget"))
        .collect();
    let person_route: Vec<&&String> = about_the_budget
        .iter()
        .filter(|text| text.contains("route=shlyuz.registry.v1.PersonRegistryService"))
        .collect();
    assert_eq!(person_route.len(), 1, "{logged:#?}");
    for expected in [
        "route_timeout_ms=7000",
        "registry_budget_ms=7500",
        "timeout_ms ≥",
    ] {
        assert!(person_route[0].contains(expected), "{}", person_route[0]);
    }
    assert!(
        about_the_budget
            .iter()
            .all(|text| text.contains("route=shlyuz.registry.v1.")),
        "{about_the_budget:#?}"
    );
    stack.stop().await;
}
