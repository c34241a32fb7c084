//! The registry target behind a real gateway with mutual TLS and the shipped default directory:
//! participants call the registry services with signed envelopes, as intake and housing will.

mod support;

use std::net::SocketAddr;
use std::time::Duration;
use support::PARTICIPANTS;

use shlyuz_gateway::Gateway;
use shlyuz_gateway::envelope::EnvelopeBuilder;
use shlyuz_kit::db::testing::TestDatabase;
use shlyuz_kit::error::summarize_status;
use shlyuz_kit::pki::{DevPki, SigningKey};
use shlyuz_kit::shutdown::{ShutdownTrigger, shutdown_channel};
use shlyuz_kit::telemetry::MetricsRegistry;
use shlyuz_proto::registry::v1 as pb;
use shlyuz_registry::embedded::EmbeddedRegistry;
use shlyuz_registry::fixtures::rules;
use tonic::Code;
use tonic::transport::Channel;

/// A valid IIN that no fixture or generated person has (serial 9990 is never generated).
const UNKNOWN_IIN: &str = "850101399906";

struct Stack {
    _data_dir: tempfile::TempDir,
    pki: DevPki,
    gateway_address: SocketAddr,
    gateway: Gateway,
    trigger: ShutdownTrigger,
    tasks: Vec<tokio::task::JoinHandle<anyhow::Result<()>>>,
    databases: Vec<TestDatabase>,
}

impl Stack {
    async fn start() -> Stack {
        shlyuz_kit::install_crypto_provider();
        let data_dir = tempfile::tempdir().expect("temp dir");
        let pki = DevPki::ensure(&data_dir.path().join("pki"), &PARTICIPANTS).expect("pki");
        let metrics = MetricsRegistry::default();
        let (trigger, signal) = shutdown_channel();

        let registry = support::start_registry(&pki, &metrics, 500, signal.clone()).await;
        let registry_address = registry.address;
        let registry_database = registry.database;
        let mut tasks = vec![registry.task];

        // The default directory routes every service; only the registry runs here.
        let gateway = support::bind_gateway(&pki, &metrics)
            .await
            .start(
                &pki,
                &metrics,
                data_dir.path(),
                &[("registry", registry_address.to_string())],
                signal,
            )
            .await;
        tasks.push(gateway.task);
        let gateway_address = gateway.address;
        Stack {
            _data_dir: data_dir,
            pki,
            gateway_address,
            gateway: gateway.gateway,
            trigger,
            tasks,
            databases: vec![registry_database, gateway.database],
        }
    }

    async fn channel(&self, participant: &str) -> Channel {
        support::gateway_channel(&self.pki, self.gateway_address, participant).await
    }

    /// `message` signed by `participant` for `path`, about `subject`, for `purpose`.
    fn signed<M: prost::Message>(
        &self,
        participant: &str,
        path: &str,
        purpose: &str,
        subject: &str,
        message: M,
    ) -> tonic::Request<M> {
        let key = SigningKey::from_pem_file(
            &self
                .pki
                .participant(participant)
                .expect("participant")
                .signing_key,
        )
        .expect("signing key");
        let builder = EnvelopeBuilder {
            purpose: purpose.to_string(),
            subject_iin: subject.to_string(),
            ..EnvelopeBuilder::default()
        };
        let encoded = message.encode_to_vec();
        let mut request = tonic::Request::new(message);
        for (name, value) in builder.sign(&key, path, Some(&encoded)) {
            request.metadata_mut().insert(
                name,
                tonic::metadata::MetadataValue::try_from(value.as_str()).expect("metadata"),
            );
        }
        request
    }

    async fn stop(mut self) {
        self.trigger.trigger();
        for task in self.tasks.drain(..) {
            let _ = task.await;
        }
        self.gateway.shutdown().await;
        for database in self.databases.drain(..) {
            database.cleanup().await;
        }
    }
}

const GET_PERSON: &str = "/shlyuz.registry.v1.PersonRegistryService/GetPerson";
const RECRUITMENT: &str = "MILITARY_RECRUITMENT";
const REVIEW: &str = "HOUSING_REGISTER_REVIEW";

async fn get_person_as_intake(
    stack: &Stack,
    subject: &str,
    iin: &str,
) -> Result<pb::Person, tonic::Status> {
    let mut client = pb::person_registry_service_client::PersonRegistryServiceClient::new(
        stack.channel("intake").await,
    );
    let request = stack.signed(
        "intake",
        GET_PERSON,
        RECRUITMENT,
        subject,
        pb::GetPersonRequest {
            iin: iin.to_string(),
        },
    );
    client
        .get_person(request)
        .await
        .map(|response| response.into_inner().person.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intake_reads_a_candidate_through_the_gateway() {
    let stack = Stack::start().await;
    let person = get_person_as_intake(&stack, rules::CLEAN_CANDIDATE, rules::CLEAN_CANDIDATE)
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
            rules::NARCOLOGICAL_CANDIDATE,
            pb::ListDispensaryRecordsRequest {
                iin: rules::NARCOLOGICAL_CANDIDATE.to_string(),
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
    let stack = Stack::start().await;
    let wrong_check_digit = {
        let mut digits = rules::CLEAN_CANDIDATE.to_string();
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
        let status = get_person_as_intake(&stack, rules::CLEAN_CANDIDATE, &bad)
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
    let stack = Stack::start().await;
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
    let stack = Stack::start().await;
    let status = get_person_as_intake(&stack, rules::CLEAN_CANDIDATE, rules::CONVICTED_CANDIDATE)
        .await
        .expect_err("mismatch");
    let summary = summarize_status(&status);
    assert_eq!(summary.code, Code::PermissionDenied);
    assert_eq!(summary.reason, "SUBJECT_MISMATCH");
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_access_rules_keep_participants_to_their_registries() {
    let stack = Stack::start().await;
    // notify may resolve phones, but not read the individuals database.
    let mut persons = pb::person_registry_service_client::PersonRegistryServiceClient::new(
        stack.channel("notify").await,
    );
    let status = persons
        .get_person(stack.signed(
            "notify",
            GET_PERSON,
            "CITIZEN_NOTIFICATION",
            rules::CLEAN_CANDIDATE,
            pb::GetPersonRequest {
                iin: rules::CLEAN_CANDIDATE.to_string(),
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
            rules::CLEAN_CANDIDATE,
            pb::GetPhoneRequest {
                iin: rules::CLEAN_CANDIDATE.to_string(),
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
            rules::SERVICEMAN_CLEAN,
            pb::ListDispensaryRecordsRequest {
                iin: rules::SERVICEMAN_CLEAN.to_string(),
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
    let stack = Stack::start().await;
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
            rules::SERVICEMAN_PRIVATISED,
            pb::BatchListPrivatisationContractsRequest {
                iins: vec![rules::SERVICEMAN_PRIVATISED.to_string()],
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
            rules::SERVICEMAN_EARLIER_HOUSING,
            pb::BatchListServiceHousingRequest {
                iins: vec![rules::SERVICEMAN_EARLIER_HOUSING.to_string()],
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
            rules::SERVICEMAN_SPOUSE_STATE_HOUSING_SPOUSE,
            pb::BatchListRealEstateRightsRequest {
                iins: vec![rules::SERVICEMAN_SPOUSE_STATE_HOUSING_SPOUSE.to_string()],
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
            rules::SERVICEMAN_SPOUSE_MISSING,
            pb::GetFamilyRequest {
                iin: rules::SERVICEMAN_SPOUSE_MISSING.to_string(),
            },
        ))
        .await
        .expect("family")
        .into_inner()
        .family
        .unwrap_or_default();
    assert!(family.married);
    let spouse = family.marriages[0].spouse_iin.clone();
    assert_eq!(spouse, rules::SERVICEMAN_SPOUSE_MISSING_SPOUSE);
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
    let too_many = vec![rules::SERVICEMAN_CLEAN.to_string(); 501];
    let status = persons
        .batch_get_persons(stack.signed(
            "housing",
            "/shlyuz.registry.v1.PersonRegistryService/BatchGetPersons",
            REVIEW,
            rules::SERVICEMAN_CLEAN,
            pb::BatchGetPersonsRequest { iins: too_many },
        ))
        .await
        .expect_err("501 iins");
    let summary = summarize_status(&status);
    assert_eq!(summary.code, Code::InvalidArgument);
    assert_eq!(summary.fields, vec!["iins".to_string()]);
    stack.stop().await;
}

/// The consent flow with notify's codes is tests/notify.rs's; here the registry has no gateway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_gateway_a_consent_request_is_unavailable_and_stores_nothing() {
    let stack = Stack::start().await;
    let subject = rules::CLEAN_CANDIDATE;
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
        .expect_err("no gateway, no code");
    // The registry answers UNAVAILABLE OTP_UNAVAILABLE; the gateway reports any UNAVAILABLE of an
    // upstream as its own UPSTREAM_UNAVAILABLE, with the registry's message.
    assert_eq!(status.code(), Code::Unavailable);
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
    let registry = EmbeddedRegistry::new(database.clone());
    let count = registry.person_count().await.expect("count");
    let iins = registry.sample_iins(1_000).await.expect("iins");
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
