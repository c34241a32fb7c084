//! The message log against both storage backends: group-committed appends form one intact chain
//! with signed checkpoints; edits, deletions and forged checkpoints are found by verification;
//! listing pages and filters; the subject access log; data minimisation of bodies.

mod harness;

use std::sync::Arc;
use std::time::Duration;

use shlyuz_gateway::message_log::{
    AccessLogApi, Channel, LogRecord, MessageLog, MessageLogApi, MessageLogError, MessageLogOptions,
};
use shlyuz_kit::db::Database;
use shlyuz_kit::error::summarize_status;
use shlyuz_kit::pki::{DevPki, SigningKey};
use shlyuz_kit::telemetry::MetricsRegistry;
use shlyuz_proto::gateway::v1::access_log_service_server::AccessLogService;
use shlyuz_proto::gateway::v1::message_log_service_server::MessageLogService;
use shlyuz_proto::gateway::v1::{
    GetEntryRequest, ListEntriesRequest, ListSubjectAccessRequest, VerifyChainRequest,
    VerifyChainResponse,
};
use tonic::Code;

const SUBJECT: &str = "900101300017";
const OTHER_SUBJECT: &str = "850315400025";

struct Keys {
    _directory: tempfile::TempDir,
    gateway: Arc<SigningKey>,
    stranger: Arc<SigningKey>,
}

fn keys() -> Keys {
    let directory = tempfile::tempdir().expect("temp dir");
    let pki = DevPki::ensure(directory.path(), &["gateway", "stranger"]).expect("pki");
    let load = |participant: &str| {
        let files = pki.participant(participant).expect("participant");
        Arc::new(SigningKey::from_pem_file(&files.signing_key).expect("signing key"))
    };
    Keys {
        gateway: load("gateway"),
        stranger: load("stranger"),
        _directory: directory,
    }
}

fn record(number: usize) -> LogRecord {
    LogRecord {
        time_ms: 1_700_000_000_000 + number as i64,
        message_id: uuid::Uuid::now_v7().to_string(),
        correlation_id: format!("case-{}", number % 3),
        sender: if number.is_multiple_of(2) {
            "intake"
        } else {
            "housing"
        }
        .to_string(),
        user_id: String::new(),
        service: "shlyuz.registry.v1.PersonRegistryService".to_string(),
        method: "GetPerson".to_string(),
        purpose: "MILITARY_RECRUITMENT".to_string(),
        subject_iin: SUBJECT.to_string(),
        request_hash: [number as u8; 32],
        response_hash: Some([1; 32]),
        status_code: 0,
        reason: String::new(),
        duration_us: 150,
        channel: Channel::Sync,
        personal_data: true,
        request_body: Some(vec![1, 2, 3]),
        response_body: Some(vec![4, 5]),
    }
}

async fn start_log(
    database: &Database,
    key: Arc<SigningKey>,
    options: MessageLogOptions,
) -> MessageLog {
    database
        .migrate(&shlyuz_gateway::MIGRATIONS)
        .await
        .expect("migrations");
    MessageLog::start(
        database.clone(),
        key,
        options,
        &MetricsRegistry::default(),
        shlyuz_kit::clock::system_clock(),
    )
    .await
    .expect("message log")
}

async fn verify(api: &MessageLogApi) -> VerifyChainResponse {
    api.verify_chain(tonic::Request::new(VerifyChainRequest::default()))
        .await
        .expect("verify")
        .into_inner()
}

async fn execute(database: &Database, sql: &str) {
    sqlx::query(sql).execute(database.pool()).await.expect(sql);
}

shlyuz_kit::storage_test!(
    concurrent_appends_form_one_intact_signed_chain,
    |database: Database| async move {
        let keys = keys();
        let options = MessageLogOptions {
            max_batch: 64,
            checkpoint_every_entries: 50,
            ..MessageLogOptions::default()
        };
        let log = start_log(&database, keys.gateway.clone(), options).await;
        let mut tasks = Vec::new();
        for number in 0..300 {
            let log = log.clone();
            tasks.push(tokio::spawn(
                async move { log.append(record(number)).await },
            ));
        }
        let mut sequences = Vec::new();
        for task in tasks {
            let position = task.await.expect("task").expect("append");
            assert_eq!(position.chain_id, log.chain_id());
            sequences.push(position.sequence);
        }
        sequences.sort_unstable();
        assert_eq!(
            sequences,
            (1..=300).collect::<Vec<i64>>(),
            "every entry has its own place"
        );
        log.shutdown().await;
        assert_eq!(log.append(record(0)).await, Err(MessageLogError::Closed));

        let api = MessageLogApi::new(database.clone(), vec![keys.gateway.verifying_key()]);
        let report = verify(&api).await;
        assert!(report.intact, "{report:?}");
        assert_eq!(report.chains.len(), 1);
        assert_eq!(report.chains[0].entries, 300);
        // A checkpoint closes the first batch that reaches 50 entries since the last one (so at most
        // 50 + 63 entries apart), and shutdown signs the head.
        assert!(report.chains[0].checkpoints > 300 / (50 + 63), "{report:?}");

        // The same chain checked against a key that is not the gateway's fails at its first checkpoint.
        let stranger_api =
            MessageLogApi::new(database.clone(), vec![keys.stranger.verifying_key()]);
        let report = verify(&stranger_api).await;
        assert!(!report.intact);
        assert!(
            report.chains[0].problem.contains("not a gateway key"),
            "{report:?}"
        );
    }
);

shlyuz_kit::storage_test!(
    tampering_is_found_at_the_first_broken_entry,
    |database: Database| async move {
        let keys = keys();
        let options = MessageLogOptions {
            checkpoint_every_entries: 5,
            ..MessageLogOptions::default()
        };
        let log = start_log(&database, keys.gateway.clone(), options).await;
        for number in 0..12 {
            log.append(record(number)).await.expect("append");
        }
        log.shutdown().await;
        let api = MessageLogApi::new(database.clone(), vec![keys.gateway.verifying_key()]);
        assert!(verify(&api).await.intact);

        // An edited field.
        execute(
            &database,
            "UPDATE message_log_entries SET purpose = 'OPERATIONS' WHERE sequence = 4",
        )
        .await;
        let report = verify(&api).await;
        assert!(!report.intact);
        assert_eq!(report.chains[0].first_broken_sequence, 4);
        assert_eq!(
            report.chains[0].entries, 3,
            "entries before the break were checked"
        );
        execute(
            &database,
            "UPDATE message_log_entries SET purpose = 'MILITARY_RECRUITMENT' WHERE sequence = 4",
        )
        .await;
        assert!(
            verify(&api).await.intact,
            "restoring the field restores the chain"
        );

        // A forged checkpoint signature.
        execute(
            &database,
            "UPDATE message_log_checkpoints SET time_ms = time_ms + 1 WHERE sequence = 5",
        )
        .await;
        let report = verify(&api).await;
        assert_eq!(report.chains[0].first_broken_sequence, 5, "{report:?}");
        assert!(
            report.chains[0].problem.contains("invalid signature"),
            "{report:?}"
        );
        execute(
            &database,
            "UPDATE message_log_checkpoints SET time_ms = time_ms - 1 WHERE sequence = 5",
        )
        .await;

        // The tail cut off after a checkpoint (the final checkpoint signs entry 12).
        execute(
            &database,
            "DELETE FROM message_log_entries WHERE sequence >= 11",
        )
        .await;
        let report = verify(&api).await;
        assert!(!report.intact);
        assert!(
            report.chains[0].problem.contains("entries were removed"),
            "{report:?}"
        );

        // An entry removed from the middle.
        execute(
            &database,
            "DELETE FROM message_log_entries WHERE sequence = 7",
        )
        .await;
        let report = verify(&api).await;
        assert_eq!(report.chains[0].first_broken_sequence, 7, "{report:?}");
        assert!(report.chains[0].problem.contains("missing"), "{report:?}");
    }
);

shlyuz_kit::storage_test!(
    an_unstorable_record_is_refused_alone,
    |database: Database| async move {
        let keys = keys();
        let log = start_log(
            &database,
            keys.gateway.clone(),
            MessageLogOptions::default(),
        )
        .await;
        let mut poisoned = record(1);
        poisoned.purpose = "BAD\0PURPOSE".to_string();
        let (bad, good) = tokio::join!(log.append(poisoned), log.append(record(2)));
        assert_eq!(bad, Err(MessageLogError::Unstorable("purpose")));
        assert_eq!(good.expect("the other record is written").sequence, 1);
        log.shutdown().await;
    }
);

shlyuz_kit::storage_test!(
    entries_page_newest_first_with_filters,
    |database: Database| async move {
        let keys = keys();
        let log = start_log(
            &database,
            keys.gateway.clone(),
            MessageLogOptions::default(),
        )
        .await;
        let mut message_ids = Vec::new();
        for number in 0..25 {
            let entry = record(number);
            message_ids.push(entry.message_id.clone());
            log.append(entry).await.expect("append");
        }
        log.shutdown().await;
        let api = MessageLogApi::new(database.clone(), vec![keys.gateway.verifying_key()]);

        // Every intake entry (even numbers: 13 of 25), in pages of 5, newest first, no repeats.
        let mut seen = Vec::new();
        let mut page_token = String::new();
        let mut pages = 0;
        loop {
            let page = api
                .list_entries(tonic::Request::new(ListEntriesRequest {
                    sender: "intake".to_string(),
                    page_size: 5,
                    page_token: page_token.clone(),
                    ..ListEntriesRequest::default()
                }))
                .await
                .expect("list")
                .into_inner();
            pages += 1;
            seen.extend(page.entries.iter().map(|entry| entry.time_ms));
            if page.next_page_token.is_empty() {
                break;
            }
            // A token only resumes the listing it came from.
            let misused = api
                .list_entries(tonic::Request::new(ListEntriesRequest {
                    sender: "housing".to_string(),
                    page_token: page.next_page_token.clone(),
                    ..ListEntriesRequest::default()
                }))
                .await
                .expect_err("token of another listing");
            assert_eq!(summarize_status(&misused).fields, vec!["page_token"]);
            page_token = page.next_page_token;
        }
        assert_eq!(pages, 3);
        let expected: Vec<i64> = (0..25)
            .rev()
            .filter(|number| number % 2 == 0)
            .map(|n| 1_700_000_000_000 + n)
            .collect();
        assert_eq!(seen, expected);

        let by_correlation = api
            .list_entries(tonic::Request::new(ListEntriesRequest {
                correlation_id: "case-1".to_string(),
                since_ms: 1_700_000_000_010,
                until_ms: 1_700_000_000_020,
                ..ListEntriesRequest::default()
            }))
            .await
            .expect("list")
            .into_inner();
        let numbers: Vec<i64> = by_correlation
            .entries
            .iter()
            .map(|entry| entry.time_ms - 1_700_000_000_000)
            .collect();
        assert_eq!(numbers, vec![19, 16, 13, 10]);

        let entry = api
            .get_entry(tonic::Request::new(GetEntryRequest {
                message_id: message_ids[7].clone(),
                sender: "housing".to_string(),
            }))
            .await
            .expect("get")
            .into_inner()
            .entry
            .expect("entry");
        assert_eq!(entry.time_ms, 1_700_000_000_007);
        assert!(
            entry.request_body.is_empty(),
            "bodies are not stored by default"
        );

        for (request, field) in [
            (
                ListEntriesRequest {
                    subject_iin: "900101300015".to_string(),
                    ..ListEntriesRequest::default()
                },
                "subject_iin",
            ),
            (
                ListEntriesRequest {
                    since_ms: 10,
                    until_ms: 5,
                    ..ListEntriesRequest::default()
                },
                "until_ms",
            ),
            (
                ListEntriesRequest {
                    page_size: -1,
                    ..ListEntriesRequest::default()
                },
                "page_size",
            ),
            (
                ListEntriesRequest {
                    page_token: "garbage".to_string(),
                    ..ListEntriesRequest::default()
                },
                "page_token",
            ),
        ] {
            let status = api
                .list_entries(tonic::Request::new(request))
                .await
                .expect_err(field);
            assert_eq!(status.code(), Code::InvalidArgument);
            assert_eq!(summarize_status(&status).fields, vec![field.to_string()]);
        }
        let missing = api
            .get_entry(tonic::Request::new(GetEntryRequest {
                message_id: uuid::Uuid::now_v7().to_string(),
                sender: "intake".to_string(),
            }))
            .await
            .expect_err("unknown message");
        assert_eq!(summarize_status(&missing).reason, "ENTRY_NOT_FOUND");
    }
);

shlyuz_kit::storage_test!(
    bodies_are_kept_only_when_configured,
    |database: Database| async move {
        let keys = keys();
        let options = MessageLogOptions {
            store_bodies: true,
            ..MessageLogOptions::default()
        };
        let log = start_log(&database, keys.gateway.clone(), options).await;
        let entry = record(3);
        let message_id = entry.message_id.clone();
        log.append(entry).await.expect("append");
        log.shutdown().await;
        let api = MessageLogApi::new(database.clone(), vec![keys.gateway.verifying_key()]);
        let stored = api
            .get_entry(tonic::Request::new(GetEntryRequest {
                message_id,
                sender: "housing".to_string(),
            }))
            .await
            .expect("get")
            .into_inner()
            .entry
            .expect("entry");
        assert_eq!(
            (stored.request_body, stored.response_body),
            (vec![1, 2, 3], vec![4, 5])
        );
        // A stored body is covered by the chain: swapping it is tampering.
        execute(
            &database,
            "UPDATE message_log_entries SET response_body = request_body",
        )
        .await;
        assert!(!verify(&api).await.intact);
    }
);

fn access_request(
    subject: &str,
    envelope_subjects: &str,
    page_size: i32,
    page_token: &str,
) -> tonic::Request<ListSubjectAccessRequest> {
    let mut request = tonic::Request::new(ListSubjectAccessRequest {
        subject_iin: subject.to_string(),
        page_size,
        page_token: page_token.to_string(),
    });
    request.metadata_mut().insert(
        shlyuz_gateway::envelope::SUBJECT_IIN,
        envelope_subjects.parse().expect("metadata"),
    );
    request
}

shlyuz_kit::storage_test!(
    subject_access_log_names_every_subject_of_a_batch,
    |database: Database| async move {
        let keys = keys();
        let log = start_log(
            &database,
            keys.gateway.clone(),
            MessageLogOptions::default(),
        )
        .await;
        for number in 0..4 {
            log.append(record(number)).await.expect("append");
        }
        let mut batch = record(10);
        batch.subject_iin = format!("{SUBJECT},{OTHER_SUBJECT}");
        batch.sender = "housing".to_string();
        batch.purpose = "HOUSING_REGISTER_REVIEW".to_string();
        log.append(batch).await.expect("append batch");
        let mut not_personal = record(11);
        not_personal.personal_data = false;
        log.append(not_personal).await.expect("append");
        log.shutdown().await;
        let api = AccessLogApi::new(database.clone());

        let first = api
            .list_subject_access(access_request(SUBJECT, SUBJECT, 3, ""))
            .await
            .expect("first page")
            .into_inner();
        assert_eq!(first.accesses.len(), 3);
        assert_eq!(
            first.accesses[0].purpose, "HOUSING_REGISTER_REVIEW",
            "newest first"
        );
        let second = api
            .list_subject_access(access_request(SUBJECT, SUBJECT, 3, &first.next_page_token))
            .await
            .expect("second page")
            .into_inner();
        assert_eq!(
            second.accesses.len(),
            2,
            "5 personal-data calls named the subject"
        );
        assert!(second.next_page_token.is_empty());

        let other = api
            .list_subject_access(access_request(OTHER_SUBJECT, OTHER_SUBJECT, 0, ""))
            .await
            .expect("other subject")
            .into_inner();
        assert_eq!(other.accesses.len(), 1);
        assert_eq!(other.accesses[0].participant_id, "housing");

        let mismatch = api
            .list_subject_access(access_request(OTHER_SUBJECT, SUBJECT, 0, ""))
            .await
            .expect_err("reading someone else's log");
        assert_eq!(summarize_status(&mismatch).reason, "SUBJECT_MISMATCH");
        let invalid = api
            .list_subject_access(access_request("90010130001", SUBJECT, 0, ""))
            .await
            .expect_err("bad IIN");
        assert_eq!(summarize_status(&invalid).fields, vec!["subject_iin"]);
    }
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_chain_is_checkpointed_on_its_interval() {
    let test_database = shlyuz_kit::db::testing::TestDatabase::sqlite().await;
    let database = test_database.database().clone();
    let keys = keys();
    let options = MessageLogOptions {
        checkpoint_every_entries: 1_000_000,
        checkpoint_interval: Duration::from_millis(50),
        ..MessageLogOptions::default()
    };
    let log = start_log(&database, keys.gateway.clone(), options).await;
    log.append(record(1)).await.expect("append");
    // Wait (bounded) for the writer's timer to sign the head while no entry arrives.
    let mut checkpoints = 0_i64;
    for _ in 0..100 {
        let row: (i64,) = sqlx::query_as("SELECT COUNT(*) FROM message_log_checkpoints")
            .fetch_one(database.pool())
            .await
            .expect("count");
        checkpoints = row.0;
        if checkpoints > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        checkpoints, 1,
        "the idle head was signed without waiting for more entries"
    );
    log.shutdown().await;
    test_database.cleanup().await;
}

shlyuz_kit::storage_test!(
    checkpoints_signed_before_a_key_rotation_stay_verifiable_with_the_retired_key,
    |database: Database| async move {
        // A chain written and checkpointed under the key the gateway had before the rotation.
        let keys = keys();
        let options = MessageLogOptions {
            checkpoint_every_entries: 2,
            ..MessageLogOptions::default()
        };
        let old_log = start_log(&database, keys.stranger.clone(), options).await;
        for number in 0..5 {
            old_log.append(record(number)).await.expect("append");
        }
        old_log.shutdown().await;

        // The gateway now signs with its new key and is told the retired one.
        let settings = shlyuz_gateway::GatewaySettings {
            retired_signing_keys: vec![keys.stranger.verifying_key()],
            ..harness::fast_async_settings()
        };
        let rotated = harness::Harness::start_custom(database.clone(), "", true, settings).await;
        let mut client = rotated.echo_client("jauynger-portal").await;
        client
            .echo(harness::signed(
                &rotated,
                "jauynger-portal",
                "/shlyuz.echo.v1.EchoService/Echo",
                &rotated.personal_envelope(),
                harness::echo_request("after the rotation"),
            ))
            .await
            .expect("a call under the new key");
        let report = verify_through(&rotated).await;
        rotated.stop().await;
        assert!(report.intact, "{report:?}");
        assert_eq!(report.chains.len(), 2, "the old chain and the new one");

        // Without the retired key the old checkpoints are reported, not silently accepted.
        let forgetful = harness::Harness::start_custom(
            database.clone(),
            "",
            true,
            harness::fast_async_settings(),
        )
        .await;
        let report = verify_through(&forgetful).await;
        forgetful.stop().await;
        assert!(!report.intact);
        assert!(
            report
                .chains
                .iter()
                .any(|chain| chain.problem.contains("not a gateway key")),
            "{report:?}"
        );
    }
);

/// `VerifyChain` of every chain, called as `ops` through the served gateway.
async fn verify_through(harness: &harness::Harness) -> VerifyChainResponse {
    shlyuz_proto::gateway::v1::message_log_service_client::MessageLogServiceClient::new(
        harness.channel("ops").await,
    )
    .verify_chain(VerifyChainRequest::default())
    .await
    .expect("VerifyChain through the gateway")
    .into_inner()
}

/// Makes the database refuse every entry whose message id is `poison` (a trigger), as it would
/// refuse a value no check foresaw.
async fn refuse_poison_entries(database: &Database) {
    match database.dialect() {
        shlyuz_kit::db::Dialect::Sqlite => {
            execute(
                database,
                "CREATE TRIGGER refuse_poison BEFORE INSERT ON message_log_entries \
                 WHEN NEW.message_id = 'poison' BEGIN SELECT RAISE(ABORT, 'poison entry'); END",
            )
            .await
        }
        shlyuz_kit::db::Dialect::Postgres => {
            execute(
                database,
                "CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS \
                 $$ BEGIN IF NEW.message_id = 'poison' THEN RAISE EXCEPTION 'poison entry'; END IF; \
                 RETURN NEW; END $$",
            )
            .await;
            execute(
                database,
                "CREATE TRIGGER refuse_poison BEFORE INSERT ON message_log_entries \
                 FOR EACH ROW EXECUTE FUNCTION refuse_poison()",
            )
            .await
        }
    }
}

shlyuz_kit::storage_test!(
    an_entry_the_database_refuses_fails_alone,
    |database: Database| async move {
        let keys = keys();
        let options = MessageLogOptions {
            max_batch: 64,
            checkpoint_every_entries: 25,
            ..MessageLogOptions::default()
        };
        let log = start_log(&database, keys.gateway.clone(), options).await;
        refuse_poison_entries(&database).await;
        // Queue everything before the writer can take any of it, so poison and honest entries
        // share batches.
        let mut tasks = Vec::new();
        for number in 0..120 {
            let log = log.clone();
            let mut record = record(number);
            if number % 10 == 3 {
                record.message_id = "poison".to_string();
            }
            tasks.push(tokio::spawn(async move {
                let poison = record.message_id == "poison";
                (poison, log.append(record).await)
            }));
        }
        let mut positions = Vec::new();
        for task in tasks {
            match task.await.expect("append task") {
                (true, Err(MessageLogError::Unavailable(_))) => {}
                (true, other) => panic!("a refused entry must fail: {other:?}"),
                (false, Ok(position)) => positions.push(position.sequence),
                (false, Err(error)) => panic!("an honest entry failed with the poison: {error}"),
            }
        }
        positions.sort_unstable();
        assert_eq!(positions, (1..=108).collect::<Vec<i64>>());
        log.shutdown().await;
        let api = MessageLogApi::new(database.clone(), vec![keys.gateway.verifying_key()]);
        let verdict = verify(&api).await;
        assert!(verdict.intact, "{verdict:?}");
    }
);

shlyuz_kit::storage_test!(
    a_record_that_cannot_be_indexed_is_refused_before_its_batch,
    |database: Database| async move {
        let keys = keys();
        let log = start_log(
            &database,
            keys.gateway.clone(),
            MessageLogOptions::default(),
        )
        .await;
        let mut long = record(1);
        long.method = "M".repeat(3_000);
        assert_eq!(
            log.append(long).await,
            Err(MessageLogError::Unstorable("method"))
        );
        assert!(log.append(record(2)).await.is_ok());
        log.shutdown().await;
    }
);

shlyuz_kit::storage_test!(
    subject_access_rows_are_verified_against_their_entries,
    |database: Database| async move {
        let keys = keys();
        let log = start_log(
            &database,
            keys.gateway.clone(),
            MessageLogOptions::default(),
        )
        .await;
        let mut batch = record(0);
        batch.subject_iin = format!("{SUBJECT},{OTHER_SUBJECT}");
        let position = log.append(batch).await.expect("append");
        log.append(record(1)).await.expect("append");
        log.shutdown().await;
        let api = MessageLogApi::new(database.clone(), vec![keys.gateway.verifying_key()]);
        assert!(verify(&api).await.intact);
        let chain = position.chain_id.clone();
        let problem_at = |verdict: VerifyChainResponse| {
            let chain = &verdict.chains[0];
            assert!(!verdict.intact, "{verdict:?}");
            (chain.first_broken_sequence, chain.problem.clone())
        };

        // Hiding an access: the row of one person is deleted.
        execute(
            &database,
            &format!(
                "DELETE FROM subject_access WHERE chain_id = '{chain}' AND sequence = 1 AND subject_iin = '{OTHER_SUBJECT}'"
            ),
        )
        .await;
        let (sequence, problem) = problem_at(verify(&api).await);
        assert_eq!(sequence, 1);
        assert!(problem.contains("no row"), "{problem}");

        // Blaming someone else: the row comes back naming another participant.
        execute(
            &database,
            &format!(
                "INSERT INTO subject_access (chain_id, sequence, time_ms, subject_iin, participant_id, user_id, \
                 service, method, purpose, message_id, status_code, personal_data) \
                 SELECT chain_id, sequence, time_ms, '{OTHER_SUBJECT}', 'sdu', user_id, service, method, purpose, \
                 message_id, status_code, personal_data FROM subject_access \
                 WHERE chain_id = '{chain}' AND sequence = 1 AND subject_iin = '{SUBJECT}'"
            ),
        )
        .await;
        let (sequence, problem) = problem_at(verify(&api).await);
        assert_eq!(sequence, 1);
        assert!(problem.contains("does not match"), "{problem}");
        execute(
            &database,
            &format!("UPDATE subject_access SET participant_id = 'intake' WHERE chain_id = '{chain}' AND sequence = 1"),
        )
        .await;
        assert!(verify(&api).await.intact);

        // A forged access: a row for a person the entry does not name, and one without an entry.
        let stranger = (0..10_000)
            .map(|serial| format!("0202025{serial:04}0"))
            .flat_map(|prefix| (0..10).map(move |digit| format!("{}{digit}", &prefix[..11])))
            .find(|candidate| shlyuz_kit::iin::Iin::parse(candidate).is_ok())
            .expect("a valid IIN");
        for (sequence, subject) in [(2, stranger.as_str()), (9, SUBJECT)] {
            execute(
                &database,
                &format!(
                    "INSERT INTO subject_access (chain_id, sequence, time_ms, subject_iin, participant_id, user_id, \
                     service, method, purpose, message_id, status_code, personal_data) \
                     SELECT chain_id, {sequence}, time_ms, '{subject}', participant_id, user_id, service, method, \
                     purpose, message_id, status_code, personal_data FROM subject_access \
                     WHERE chain_id = '{chain}' AND sequence = 2"
                ),
            )
            .await;
            let (broken_at, problem) = problem_at(verify(&api).await);
            assert_eq!(broken_at, sequence, "{problem}");
            execute(
                &database,
                &format!(
                    "DELETE FROM subject_access WHERE chain_id = '{chain}' AND sequence = {sequence} \
                     AND subject_iin = '{subject}'"
                ),
            )
            .await;
        }
        assert!(verify(&api).await.intact);
    }
);

shlyuz_kit::storage_test!(
    a_chain_whose_checkpoints_were_removed_is_reported,
    |database: Database| async move {
        let keys = keys();
        let options = MessageLogOptions {
            max_batch: 4,
            checkpoint_every_entries: 20,
            ..MessageLogOptions::default()
        };
        let log = start_log(&database, keys.gateway.clone(), options.clone()).await;
        let mut tasks = Vec::new();
        for number in 0..100 {
            let log = log.clone();
            tasks.push(tokio::spawn(
                async move { log.append(record(number)).await },
            ));
        }
        for task in tasks {
            task.await.expect("append task").expect("append");
        }
        log.shutdown().await;
        let api = MessageLogApi::new(database.clone(), vec![keys.gateway.verifying_key()])
            .with_checkpoint_spacing(&options);
        let verdict = verify(&api).await;
        assert!(verdict.intact, "{verdict:?}");

        // Checkpoints in the middle removed: the entries there could be rewritten unnoticed.
        let last: i64 = sqlx::query_scalar("SELECT MAX(sequence) FROM message_log_checkpoints")
            .fetch_one(database.pool())
            .await
            .expect("last checkpoint");
        execute(
            &database,
            &format!(
                "DELETE FROM message_log_checkpoints WHERE sequence > 30 AND sequence < {last}"
            ),
        )
        .await;
        let verdict = verify(&api).await;
        assert!(!verdict.intact, "{verdict:?}");
        assert!(
            verdict.chains[0]
                .problem
                .contains("checkpoints are missing"),
            "{verdict:?}"
        );

        // Every checkpoint removed: any entry could now be edited with its hashes recomputed.
        execute(&database, "DELETE FROM message_log_checkpoints").await;
        let verdict = verify(&api).await;
        assert!(!verdict.intact, "{verdict:?}");
        assert!(verdict.chains[0].first_broken_sequence <= 25, "{verdict:?}");
        assert!(
            verdict.chains[0]
                .problem
                .contains("checkpoints are missing"),
            "{verdict:?}"
        );
    }
);

shlyuz_kit::storage_test!(
    checkpoints_can_be_exported_and_checked_outside_the_database,
    |database: Database| async move {
        let keys = keys();
        let options = MessageLogOptions {
            max_batch: 4,
            checkpoint_every_entries: 5,
            ..MessageLogOptions::default()
        };
        let log = start_log(&database, keys.gateway.clone(), options).await;
        let mut chain_id = String::new();
        for number in 0..23 {
            chain_id = log.append(record(number)).await.expect("append").chain_id;
        }
        log.shutdown().await;
        let api = MessageLogApi::new(database.clone(), vec![keys.gateway.verifying_key()]);
        let mut exported = Vec::new();
        let mut page_token = String::new();
        loop {
            let page = api
                .export_checkpoints(tonic::Request::new(
                    shlyuz_proto::gateway::v1::ExportCheckpointsRequest {
                        chain_id: chain_id.clone(),
                        page_size: 2,
                        page_token: page_token.clone(),
                    },
                ))
                .await
                .expect("export")
                .into_inner();
            exported.extend(page.checkpoints);
            if page.next_page_token.is_empty() {
                break;
            }
            page_token = page.next_page_token;
        }
        let stored: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM message_log_checkpoints")
            .fetch_one(database.pool())
            .await
            .expect("count");
        assert_eq!(exported.len() as i64, stored);
        assert_eq!(exported.last().expect("a final checkpoint").sequence, 23);
        let key = keys.gateway.verifying_key();
        for checkpoint in &exported {
            key.verify(checkpoint.signed_message.as_bytes(), &checkpoint.signature)
                .expect("each exported head verifies with the gateway's public key alone");
            assert!(
                checkpoint.signed_message.contains(&checkpoint.entry_hash),
                "{checkpoint:?}"
            );
        }
        let refused = api
            .export_checkpoints(tonic::Request::new(
                shlyuz_proto::gateway::v1::ExportCheckpointsRequest::default(),
            ))
            .await
            .expect_err("no chain named");
        assert_eq!(refused.code(), Code::InvalidArgument);
        assert!(
            summarize_status(&refused)
                .fields
                .contains(&"chain_id".to_string()),
            "{refused:?}"
        );
    }
);

/// A log on `clock` (a manual clock lets a test age a chain's heartbeat past the lease).
async fn start_log_at(
    database: &Database,
    key: Arc<SigningKey>,
    options: MessageLogOptions,
    clock: &shlyuz_kit::clock::ManualClock,
) -> MessageLog {
    database
        .migrate(&shlyuz_gateway::MIGRATIONS)
        .await
        .expect("migrations");
    MessageLog::start(
        database.clone(),
        key,
        options,
        &MetricsRegistry::default(),
        clock.shared(),
    )
    .await
    .expect("message log")
}

fn chain_of<'a>(
    report: &'a VerifyChainResponse,
    chain_id: &str,
) -> &'a shlyuz_proto::gateway::v1::ChainVerification {
    report
        .chains
        .iter()
        .find(|chain| chain.chain_id == chain_id)
        .unwrap_or_else(|| panic!("chain {chain_id} in {report:?}"))
}

/// Options whose chains get no checkpoint before their end, so a killed run's entries are unsigned,
/// and whose heartbeat is refreshed only by writes (the first timed beat is an hour after start),
/// so only the test's clock ages it.
fn unsigned_options() -> MessageLogOptions {
    MessageLogOptions {
        checkpoint_every_entries: 1_000_000,
        heartbeat_interval: Duration::from_secs(3_600),
        ..MessageLogOptions::default()
    }
}

shlyuz_kit::storage_test!(
    a_killed_runs_chain_is_closed_by_the_next_start_but_a_live_replicas_is_not,
    |database: Database| async move {
        let keys = keys();
        let clock = shlyuz_kit::clock::ManualClock::new(time::OffsetDateTime::now_utc());
        let options = unsigned_options();
        let replica = start_log_at(&database, keys.gateway.clone(), options.clone(), &clock).await;
        let killed = start_log_at(&database, keys.gateway.clone(), options.clone(), &clock).await;
        let killed_chain = killed.chain_id();
        for number in 0..3 {
            killed.append(record(number)).await.expect("append");
        }
        killed.abort().await;
        assert_eq!(killed.append(record(9)).await, Err(MessageLogError::Closed));
        let api = MessageLogApi::new(database.clone(), vec![keys.gateway.verifying_key()])
            .with_checkpoint_spacing(&options)
            .with_clock(clock.shared());
        let report = verify(&api).await;
        let chain = chain_of(&report, &killed_chain);
        assert!(chain.intact && !chain.closed, "{report:?}");
        assert_eq!(chain.checkpoints, 0, "a killed run signs nothing");

        // The lease passes; the replica goes on writing (its batch refreshes its heartbeat).
        clock.advance(time::Duration::seconds(31));
        replica.append(record(4)).await.expect("replica append");
        let report = verify(&api).await;
        let chain = chain_of(&report, &killed_chain);
        assert!(chain.intact && !chain.closed && !chain.live, "{report:?}");
        assert!(chain.problem.contains("never closed"), "{report:?}");

        let next = start_log_at(&database, keys.gateway.clone(), options.clone(), &clock).await;
        let report = verify(&api).await;
        assert!(report.intact, "{report:?}");
        let chain = chain_of(&report, &killed_chain);
        assert!(chain.closed && chain.problem.is_empty(), "{report:?}");
        assert_eq!((chain.entries, chain.checkpoints), (3, 1), "{report:?}");
        let closed_by: String =
            sqlx::query_scalar("SELECT closed_by FROM message_log_chains WHERE chain_id = $1")
                .bind(killed_chain.clone())
                .fetch_one(database.pool())
                .await
                .expect("closed by");
        assert_eq!(closed_by, next.chain_id());
        let live = chain_of(&report, &replica.chain_id());
        assert!(
            live.live && !live.closed,
            "a live replica's chain stays open: {report:?}"
        );
        assert_eq!(
            chain_of(&report, &next.chain_id()).previous_chain_id,
            killed_chain,
            "the new chain links to the chain closed last"
        );

        // A clean shutdown closes its own chain.
        replica.shutdown().await;
        next.shutdown().await;
        let report = verify(&api).await;
        assert!(report.intact, "{report:?}");
        assert!(report.chains.iter().all(|chain| chain.closed), "{report:?}");
    }
);

shlyuz_kit::storage_test!(
    a_killed_runs_chain_is_closed_by_a_running_instance_without_a_restart,
    |database: Database| async move {
        let keys = keys();
        let clock = shlyuz_kit::clock::ManualClock::new(time::OffsetDateTime::now_utc());
        let options = MessageLogOptions {
            heartbeat_interval: Duration::from_millis(20),
            ..unsigned_options()
        };
        let killed = start_log_at(&database, keys.gateway.clone(), options.clone(), &clock).await;
        let killed_chain = killed.chain_id();
        for number in 0..3 {
            killed.append(record(number)).await.expect("append");
        }
        killed.abort().await;
        // The restart came within the lease, so its start closed nothing.
        let running = start_log_at(&database, keys.gateway.clone(), options.clone(), &clock).await;
        let api = MessageLogApi::new(database.clone(), vec![keys.gateway.verifying_key()])
            .with_checkpoint_spacing(&options)
            .with_clock(clock.shared());
        assert!(!chain_of(&verify(&api).await, &killed_chain).closed);

        clock.advance(time::Duration::seconds(31));
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let report = loop {
            let report = verify(&api).await;
            if chain_of(&report, &killed_chain).closed {
                break report;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the running instance did not close the killed run's chain: {report:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert!(report.intact, "{report:?}");
        assert_eq!(
            (
                chain_of(&report, &killed_chain).entries,
                chain_of(&report, &killed_chain).checkpoints
            ),
            (3, 1),
            "the killed run's last entry is signed: {report:?}"
        );
        let own = chain_of(&report, &running.chain_id());
        assert!(own.live && !own.closed, "{report:?}");
        running.shutdown().await;
    }
);

shlyuz_kit::storage_test!(
    a_writer_whose_chain_was_closed_goes_on_in_a_new_chain,
    |database: Database| async move {
        let keys = keys();
        let clock = shlyuz_kit::clock::ManualClock::new(time::OffsetDateTime::now_utc());
        let options = unsigned_options();
        let paused = start_log_at(&database, keys.gateway.clone(), options.clone(), &clock).await;
        let first_chain = paused.chain_id();
        for number in 0..2 {
            paused.append(record(number)).await.expect("append");
        }
        // The writer is paused past the lease; another instance starts and closes its chain.
        clock.advance(time::Duration::seconds(31));
        let other = start_log_at(&database, keys.gateway.clone(), options.clone(), &clock).await;
        let position = paused
            .append(record(2))
            .await
            .expect("append after the closure");
        assert_ne!(
            position.chain_id, first_chain,
            "nothing is appended after the closure"
        );
        assert_eq!(position.sequence, 1);
        assert_eq!(paused.chain_id(), position.chain_id);

        let api = MessageLogApi::new(database.clone(), vec![keys.gateway.verifying_key()])
            .with_checkpoint_spacing(&options)
            .with_clock(clock.shared());
        let report = verify(&api).await;
        assert!(report.intact, "{report:?}");
        let closed = chain_of(&report, &first_chain);
        assert!(closed.closed, "{report:?}");
        assert_eq!((closed.entries, closed.checkpoints), (2, 1), "{report:?}");
        assert_eq!(
            chain_of(&report, &position.chain_id).previous_chain_id,
            first_chain
        );
        paused.shutdown().await;
        other.shutdown().await;
        assert!(verify(&api).await.intact);
    }
);

shlyuz_kit::storage_test!(
    a_deleted_earlier_chain_is_reported_by_its_successors_link,
    |database: Database| async move {
        let keys = keys();
        let options = unsigned_options();
        let first = start_log(&database, keys.gateway.clone(), options.clone()).await;
        let first_chain = first.chain_id();
        for number in 0..3 {
            first.append(record(number)).await.expect("append");
        }
        first.shutdown().await;
        let second = start_log(&database, keys.gateway.clone(), options.clone()).await;
        let second_chain = second.chain_id();
        second.append(record(3)).await.expect("append");
        second.shutdown().await;
        let api = MessageLogApi::new(database.clone(), vec![keys.gateway.verifying_key()])
            .with_checkpoint_spacing(&options);
        let report = verify(&api).await;
        assert!(report.intact, "{report:?}");
        assert_eq!(
            chain_of(&report, &second_chain).previous_chain_id,
            first_chain
        );

        // The link leaves the database with the checkpoints, and verifies with the public key.
        let export = api
            .export_checkpoints(tonic::Request::new(
                shlyuz_proto::gateway::v1::ExportCheckpointsRequest {
                    chain_id: second_chain.clone(),
                    ..Default::default()
                },
            ))
            .await
            .expect("export")
            .into_inner();
        let link = export.link.expect("the chain's link");
        assert_eq!(link.previous_chain_id, first_chain);
        assert_eq!(link.previous_sequence, 3);
        assert!(link.closed);
        keys.gateway
            .verifying_key()
            .verify(link.signed_message.as_bytes(), &link.signature)
            .expect("the link verifies with the gateway's public key");

        // The whole first chain deleted: entries, checkpoints, subject-access rows, record.
        for table in [
            "message_log_entries",
            "message_log_checkpoints",
            "subject_access",
            "message_log_chains",
        ] {
            sqlx::query(&format!("DELETE FROM {table} WHERE chain_id = $1"))
                .bind(first_chain.clone())
                .execute(database.pool())
                .await
                .expect("delete");
        }
        let report = verify(&api).await;
        assert!(!report.intact, "{report:?}");
        let second = chain_of(&report, &second_chain);
        assert_eq!(second.first_broken_sequence, 1, "{report:?}");
        assert!(second.problem.contains("is missing"), "{report:?}");
    }
);

/// Stores `entry` as a database writer would, without the gateway.
async fn insert_entry(database: &Database, entry: &shlyuz_gateway::message_log::StoredEntry) {
    sqlx::query(
        "INSERT INTO message_log_entries (chain_id, sequence, time_ms, message_id, correlation_id, sender, \
         user_id, service, method, purpose, subject_iin, request_hash, response_hash, status_code, reason, \
         duration_us, channel, personal_data, request_body, response_body, previous_hash, entry_hash) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22)",
    )
    .bind(entry.chain_id.clone())
    .bind(entry.sequence)
    .bind(entry.time_ms)
    .bind(entry.message_id.clone())
    .bind(entry.correlation_id.clone())
    .bind(entry.sender.clone())
    .bind(entry.user_id.clone())
    .bind(entry.service.clone())
    .bind(entry.method.clone())
    .bind(entry.purpose.clone())
    .bind(entry.subject_iin.clone())
    .bind(entry.request_hash.to_vec())
    .bind(entry.response_hash.map(|hash| hash.to_vec()))
    .bind(i64::from(entry.status_code))
    .bind(entry.reason.clone())
    .bind(entry.duration_us)
    .bind(entry.channel.as_str().to_string())
    .bind(i64::from(entry.personal_data))
    .bind(entry.request_body.clone())
    .bind(entry.response_body.clone())
    .bind(entry.previous_hash.to_vec())
    .bind(entry.entry_hash.to_vec())
    .execute(database.pool())
    .await
    .expect("forged entry");
}

shlyuz_kit::storage_test!(
    a_forged_chain_is_reported,
    |database: Database| async move {
        let keys = keys();
        let options = unsigned_options();
        let log = start_log(&database, keys.gateway.clone(), options.clone()).await;
        let real_chain = log.chain_id();
        log.append(record(0)).await.expect("append");
        log.shutdown().await;
        let api = MessageLogApi::new(database.clone(), vec![keys.gateway.verifying_key()])
            .with_checkpoint_spacing(&options);
        assert!(verify(&api).await.intact);

        // A short chain with correct hashes (fewer entries than a checkpoint is due after) and a
        // subject-access row per entry, but nothing signed: no record.
        let forged_chain = uuid::Uuid::now_v7().to_string();
        let mut previous_hash = shlyuz_gateway::message_log::GENESIS_HASH;
        for sequence in 1..=2 {
            let mut forged = record(sequence as usize);
            forged.personal_data = false;
            let entry = shlyuz_gateway::message_log::StoredEntry::seal(
                forged_chain.clone(),
                sequence,
                previous_hash,
                forged,
                false,
            );
            previous_hash = entry.entry_hash;
            insert_entry(&database, &entry).await;
        }
        let report = verify(&api).await;
        assert!(!report.intact, "{report:?}");
        let forged = chain_of(&report, &forged_chain);
        assert!(forged.problem.contains("no chain record"), "{report:?}");

        // With a record whose link claims the gateway's key but whose signature is not its.
        let message = shlyuz_gateway::message_log::chain_link_message(
            &forged_chain,
            1_700_000_000_000,
            "",
            0,
            &[],
            &[],
        );
        sqlx::query(
            "INSERT INTO message_log_chains (chain_id, started_ms, heartbeat_ms, closed_ms, closed_sequence, \
             closed_by, previous_chain_id, previous_sequence, previous_entry_hash, link_signature, \
             signer_public_key, legacy_chains_digest, legacy) \
             VALUES ($1, 1700000000000, 1700000000000, NULL, NULL, '', '', 0, $2, $3, $4, $5, 0)",
        )
        .bind(forged_chain.clone())
        .bind(Vec::<u8>::new())
        .bind(keys.stranger.sign(message.as_bytes()).to_vec())
        .bind(hex::encode(keys.gateway.verifying_key().as_bytes()))
        .bind(Vec::<u8>::new())
        .execute(database.pool())
        .await
        .expect("forged record");
        let report = verify(&api).await;
        let forged = chain_of(&report, &forged_chain);
        assert!(!forged.intact, "{report:?}");
        assert!(forged.problem.contains("invalid signature"), "{report:?}");

        // Passed off as a chain from before chain records: every signed link counts those.
        sqlx::query("UPDATE message_log_chains SET legacy = 1 WHERE chain_id = $1")
            .bind(forged_chain.clone())
            .execute(database.pool())
            .await
            .expect("legacy");
        let report = verify(&api).await;
        assert!(!report.intact, "{report:?}");
        let real = chain_of(&report, &real_chain);
        assert!(
            real.problem.contains("one was added or removed"),
            "{report:?}"
        );
    }
);

shlyuz_kit::storage_test!(
    chains_from_before_chain_records_are_closed_by_the_first_start_after_the_upgrade,
    |database: Database| async move {
        let keys = keys();
        // A database written by a gateway without chain records, whose last run was killed: its
        // entries are unsigned.
        let before = shlyuz_kit::db::Migrations {
            sqlite: &shlyuz_gateway::MIGRATIONS.sqlite[..6],
            postgres: &shlyuz_gateway::MIGRATIONS.postgres[..6],
        };
        database
            .migrate(&before)
            .await
            .expect("migrations up to 0006");
        let old_chain = uuid::Uuid::now_v7().to_string();
        let mut previous_hash = shlyuz_gateway::message_log::GENESIS_HASH;
        for sequence in 1..=2 {
            let mut old = record(sequence as usize);
            old.personal_data = false;
            let entry = shlyuz_gateway::message_log::StoredEntry::seal(
                old_chain.clone(),
                sequence,
                previous_hash,
                old,
                false,
            );
            previous_hash = entry.entry_hash;
            insert_entry(&database, &entry).await;
        }

        let log = start_log(&database, keys.gateway.clone(), unsigned_options()).await;
        let api = MessageLogApi::new(database.clone(), vec![keys.gateway.verifying_key()])
            .with_checkpoint_spacing(&unsigned_options());
        let report = verify(&api).await;
        assert!(report.intact, "{report:?}");
        let old = chain_of(&report, &old_chain);
        assert!(old.closed, "{report:?}");
        assert_eq!((old.entries, old.checkpoints), (2, 1), "{report:?}");
        assert_eq!(old.previous_chain_id, "", "a legacy chain has no link");
        assert_eq!(
            chain_of(&report, &log.chain_id()).previous_chain_id,
            old_chain
        );
        log.shutdown().await;
    }
);

shlyuz_kit::storage_test!(
    a_closed_chain_appended_to_or_without_its_closing_checkpoint_is_reported,
    |database: Database| async move {
        let keys = keys();
        let options = unsigned_options();
        let log = start_log(&database, keys.gateway.clone(), options.clone()).await;
        let chain = log.chain_id();
        for number in 0..2 {
            log.append(record(number)).await.expect("append");
        }
        log.shutdown().await;
        let api = MessageLogApi::new(database.clone(), vec![keys.gateway.verifying_key()])
            .with_checkpoint_spacing(&options);
        let report = verify(&api).await;
        assert!(
            report.intact && chain_of(&report, &chain).closed,
            "{report:?}"
        );

        // An entry with correct links appended after the closure.
        let head: Vec<u8> = sqlx::query_scalar(
            "SELECT entry_hash FROM message_log_entries WHERE chain_id = $1 AND sequence = 2",
        )
        .bind(chain.clone())
        .fetch_one(database.pool())
        .await
        .expect("head");
        let appended = shlyuz_gateway::message_log::StoredEntry::seal(
            chain.clone(),
            3,
            head.try_into().expect("hash"),
            LogRecord {
                personal_data: false,
                ..record(3)
            },
            false,
        );
        insert_entry(&database, &appended).await;
        let report = verify(&api).await;
        let verdict = chain_of(&report, &chain);
        assert_eq!(verdict.first_broken_sequence, 3, "{report:?}");
        assert!(
            verdict.problem.contains("where the chain was closed"),
            "{report:?}"
        );
        execute(
            &database,
            "DELETE FROM message_log_entries WHERE sequence = 3",
        )
        .await;
        assert!(verify(&api).await.intact);

        // The closing checkpoint removed (the chain is shorter than the checkpoint spacing).
        execute(&database, "DELETE FROM message_log_checkpoints").await;
        let report = verify(&api).await;
        let verdict = chain_of(&report, &chain);
        assert!(!verdict.intact, "{report:?}");
        assert!(
            verdict
                .problem
                .contains("no checkpoint signs its last entry"),
            "{report:?}"
        );
    }
);
