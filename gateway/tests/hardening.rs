//! The sync channel as a hostile participant and a failing database would try it: no response
//! leaves before its log entry is durable, only exact listed paths are forwarded, the envelope
//! the upstream sees is the one the gateway checked, and refusals are cheap and logged.

mod harness;

use std::time::Duration;

use harness::{Harness, break_message_log, echo_request, signed};
use shlyuz_gateway::envelope::{self, EnvelopeBuilder, EnvelopeVersion};
use shlyuz_kit::db::Database;
use shlyuz_kit::error::summarize_status;
use shlyuz_proto::echo::v1::EchoServerStreamRequest;
use shlyuz_proto::echo::v1::echo_service_client::EchoServiceClient;
use tonic::Code;

const ECHO: &str = "/shlyuz.echo.v1.EchoService/Echo";
const ECHO_STREAM: &str = "/shlyuz.echo.v1.EchoService/EchoServerStream";

fn assert_status(status: &tonic::Status, code: Code, reason: &str) {
    let summary = summarize_status(status);
    assert_eq!(summary.code, code, "{status:?}");
    assert_eq!(summary.reason, reason, "{status:?}");
}

shlyuz_kit::storage_test!(
    a_unary_response_leaves_only_after_its_entry_is_durable,
    |database: Database| async move {
        let harness = Harness::start(database.clone(), "").await;
        let mut raw = harness.raw_client("jauynger-portal").await;
        break_message_log(&database, true).await;
        let builder = harness.personal_envelope();
        let request = signed(
            &harness,
            "jauynger-portal",
            ECHO,
            &builder,
            echo_request("personal data"),
        );
        let (messages, status) = raw.messages_before_status(ECHO, request).await;
        assert!(
            messages.is_empty(),
            "no response byte without a log entry: {messages:?}"
        );
        assert_status(&status, Code::Unavailable, "MESSAGE_LOG_UNAVAILABLE");
        assert_eq!(harness.echo.received(), 1, "the upstream did answer");

        // The gateway keeps serving once its database is back.
        break_message_log(&database, false).await;
        let builder = harness.personal_envelope();
        let request = signed(
            &harness,
            "jauynger-portal",
            ECHO,
            &builder,
            echo_request("again"),
        );
        let (messages, status) = raw.messages_before_status(ECHO, request).await;
        assert_eq!(status.code(), Code::Ok, "{status:?}");
        assert_eq!(messages.len(), 1);
        let entry = harness
            .log_entry("jauynger-portal", &builder.message_id)
            .await;
        assert_eq!(entry.status_code, 0);
        harness.stop().await;
    }
);

shlyuz_kit::storage_test!(
    a_server_stream_opens_a_durable_entry_before_its_first_message,
    |database: Database| async move {
        let harness = Harness::start(database.clone(), "").await;
        let mut client = harness.echo_client("ops").await;
        let stream_request = EchoServerStreamRequest {
            payload: "p".to_string(),
            repeat: 3,
        };
        let builder = harness.envelope("OPERATIONS");
        let request = signed(
            &harness,
            "ops",
            ECHO_STREAM,
            &builder,
            stream_request.clone(),
        );
        let mut stream = client
            .echo_server_stream(request)
            .await
            .expect("stream opens")
            .into_inner();
        let mut received = 0;
        while let Some(message) = stream.message().await.expect("message") {
            assert_eq!(message.payload, "p");
            received += 1;
        }
        assert_eq!(received, 3);
        let mut entries = harness
            .log_entries_for_message("ops", &builder.message_id)
            .await;
        entries.sort_by_key(|entry| entry.sequence);
        let reasons: Vec<&str> = entries.iter().map(|entry| entry.reason.as_str()).collect();
        assert_eq!(reasons, vec!["STREAM_OPENED", ""], "{entries:?}");
        assert!(entries[0].response_hash.is_empty());
        assert!(!entries[1].response_hash.is_empty());

        break_message_log(&database, true).await;
        let builder = harness.envelope("OPERATIONS");
        let request = signed(&harness, "ops", ECHO_STREAM, &builder, stream_request);
        let refused = match client.echo_server_stream(request).await {
            Err(status) => status,
            Ok(response) => {
                let mut stream = response.into_inner();
                match stream.message().await {
                    Ok(message) => panic!("a message left without a log entry: {message:?}"),
                    Err(status) => status,
                }
            }
        };
        assert_status(&refused, Code::Unavailable, "MESSAGE_LOG_UNAVAILABLE");
        break_message_log(&database, false).await;
        harness.stop().await;
    }
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_the_upstream_may_have_run_keeps_its_message_id_spent() {
    let harness = Harness::start_sqlite("").await;
    let mut client = harness.echo_client("ops").await;
    let builder = harness.envelope("OPERATIONS");
    let mut slow = echo_request("slow");
    slow.delay_ms = 1_500;
    let send = |builder: &EnvelopeBuilder| {
        let mut request = signed(&harness, "ops", ECHO, builder, slow.clone());
        request.set_timeout(Duration::from_millis(400));
        request
    };
    let timed_out = client.echo(send(&builder)).await.expect_err("times out");
    assert_status(&timed_out, Code::DeadlineExceeded, "UPSTREAM_TIMEOUT");
    // The byte-identical request again: the upstream may have acted on the first.
    let resent = client.echo(send(&builder)).await.expect_err("replay");
    assert_status(&resent, Code::AlreadyExists, "MESSAGE_REPLAYED");
    assert_eq!(harness.echo.received(), 1);

    // A refusal raised before the upstream still frees the id for a corrected call.
    let corrected = harness.envelope("OPERATIONS");
    let mut wrong_purpose = corrected.clone();
    wrong_purpose.purpose = "HOUSING_ALLOCATION".to_string();
    let refused = client
        .echo(signed(
            &harness,
            "ops",
            ECHO,
            &wrong_purpose,
            echo_request("x"),
        ))
        .await
        .expect_err("purpose not allowed");
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    client
        .echo(signed(&harness, "ops", ECHO, &corrected, echo_request("x")))
        .await
        .expect("the same message id, corrected");
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_exact_listed_paths_are_forwarded() {
    let harness = Harness::start_sqlite("").await;
    let mut raw = harness.raw_client("ops").await;
    let odd_paths = [
        (
            "//shlyuz.echo.v1.EchoService/Echo",
            "shlyuz.echo.v1.EchoService/Echo",
        ),
        ("/shlyuz.echo.v1.EchoService/Echo/", "Echo/"),
        ("/shlyuz.echo.v1.EchoService/./Echo", "./Echo"),
        (
            "/shlyuz.echo.v1.EchoService/../shlyuz.echo.v1.DeadService/Echo",
            "../shlyuz.echo.v1.DeadService/Echo",
        ),
        ("/shlyuz.echo.v1.EchoService/Echo?admin=1", "Echo?admin=1"),
        // Granted by ops's `*` rule, but not a method the route lists.
        ("/shlyuz.echo.v1.EchoService/DeletePerson", "DeletePerson"),
    ];
    for (path, logged_method) in odd_paths {
        let builder = harness.envelope("OPERATIONS");
        let request = signed(&harness, "ops", path, &builder, echo_request("x"));
        let refused = raw.unary(path, request).await.expect_err(path);
        assert_status(&refused, Code::Unimplemented, "UNKNOWN_METHOD");
        let entry = harness.log_entry("ops", &builder.message_id).await;
        assert_eq!(entry.method, logged_method, "{path} is logged as asked");
        assert_eq!(entry.reason, "UNKNOWN_METHOD");
    }
    assert_eq!(
        harness.echo.received(),
        0,
        "no odd path reached the upstream"
    );
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_envelope_key_is_refused_naming_it() {
    let harness = Harness::start_sqlite("").await;
    let mut client = harness.echo_client("jauynger-portal").await;
    for key in [
        envelope::MESSAGE_ID,
        envelope::PURPOSE,
        envelope::SUBJECT_IIN,
        envelope::SIGNATURE,
    ] {
        let builder = harness.personal_envelope();
        let mut request = signed(
            &harness,
            "jauynger-portal",
            ECHO,
            &builder,
            echo_request("x"),
        );
        let second = match key {
            envelope::SUBJECT_IIN => "850315400025".to_string(),
            envelope::PURPOSE => "OPERATIONS".to_string(),
            _ => request
                .metadata()
                .get(key)
                .and_then(|value| value.to_str().ok())
                .unwrap_or_default()
                .to_string(),
        };
        request
            .metadata_mut()
            .append(key, second.parse().expect("ascii"));
        let refused = client.echo(request).await.expect_err(key);
        assert_status(&refused, Code::InvalidArgument, "INVALID_ARGUMENT");
        let details =
            tonic_types::StatusExt::get_details_bad_request(&refused).expect("field violations");
        assert_eq!(details.field_violations[0].field, key);
    }
    assert_eq!(harness.echo.received(), 0);
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upstream_sees_only_the_checked_envelope_and_the_gateways_own_headers() {
    let harness = Harness::start_sqlite("").await;
    let mut client = harness.echo_client("jauynger-portal").await;
    let mut builder = harness.personal_envelope();
    builder.message_id = builder.message_id.to_uppercase();
    let mut request = signed(
        &harness,
        "jauynger-portal",
        ECHO,
        &builder,
        echo_request("x"),
    );
    for (name, value) in [
        ("x-shlyuz-channel", "async"),
        ("x-shlyuz-sender", "ops"),
        ("x-shlyuz-approved-by", "head"),
    ] {
        request
            .metadata_mut()
            .insert(name, value.parse().expect("ascii"));
    }
    // The signature covers the normal (lower-case) form of the message id.
    let lower = EnvelopeBuilder {
        message_id: builder.message_id.to_lowercase(),
        ..builder.clone()
    };
    let signed_lower = signed(&harness, "jauynger-portal", ECHO, &lower, echo_request("x"));
    let signature = signed_lower
        .metadata()
        .get(envelope::SIGNATURE)
        .expect("signature")
        .clone();
    request
        .metadata_mut()
        .insert(envelope::SIGNATURE, signature);
    let seen = client
        .echo(request)
        .await
        .expect("call succeeds")
        .into_inner()
        .metadata;
    assert_eq!(
        seen.get(envelope::SENDER).map(String::as_str),
        Some("jauynger-portal")
    );
    assert!(!seen.contains_key("x-shlyuz-channel"), "{seen:?}");
    assert!(!seen.contains_key("x-shlyuz-approved-by"), "{seen:?}");
    assert_eq!(
        seen.get(envelope::MESSAGE_ID).map(String::as_str),
        Some(lower.message_id.as_str()),
        "one normal form of the message id"
    );
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envelope_v2_carries_the_signed_role_and_v1_can_be_switched_off() {
    let harness = Harness::start_sqlite("").await;
    let mut client = harness.echo_client("jauynger-portal").await;
    let v2 = EnvelopeBuilder {
        user_role: "candidate".to_string(),
        user_region: "110000000".to_string(),
        ..harness.personal_envelope()
    };
    let seen = client
        .echo(signed(
            &harness,
            "jauynger-portal",
            ECHO,
            &v2,
            echo_request("x"),
        ))
        .await
        .expect("v2 call")
        .into_inner()
        .metadata;
    assert_eq!(
        seen.get(envelope::USER_ROLE).map(String::as_str),
        Some("candidate")
    );
    assert_eq!(
        seen.get(envelope::USER_REGION).map(String::as_str),
        Some("110000000")
    );

    // A role added after signing is not covered by the signature.
    let mut forged = signed(
        &harness,
        "jauynger-portal",
        ECHO,
        &harness.personal_envelope(),
        echo_request("x"),
    );
    forged
        .metadata_mut()
        .insert(envelope::USER_ROLE, "head".parse().expect("ascii"));
    let refused = client.echo(forged).await.expect_err("unsigned role");
    assert_status(&refused, Code::Unauthenticated, "SIGNATURE_INVALID");

    // v1 is accepted by default, without a role.
    let v1 = EnvelopeBuilder {
        version: EnvelopeVersion::V1,
        ..harness.personal_envelope()
    };
    client
        .echo(signed(
            &harness,
            "jauynger-portal",
            ECHO,
            &v1,
            echo_request("x"),
        ))
        .await
        .expect("v1 accepted while gateway.accept_envelope_v1 is on");
    harness.stop().await;

    let mut settings = harness::fast_async_settings();
    settings.sync.accept_envelope_v1 = false;
    let test_database = shlyuz_kit::db::testing::TestDatabase::sqlite().await;
    let strict = Harness::start_custom(test_database.database().clone(), "", true, settings).await;
    let mut client = strict.echo_client("jauynger-portal").await;
    let v1 = EnvelopeBuilder {
        version: EnvelopeVersion::V1,
        ..strict.personal_envelope()
    };
    let refused = client
        .echo(signed(
            &strict,
            "jauynger-portal",
            ECHO,
            &v1,
            echo_request("x"),
        ))
        .await
        .expect_err("v1 switched off");
    assert_status(
        &refused,
        Code::InvalidArgument,
        "ENVELOPE_VERSION_UNSUPPORTED",
    );
    assert_eq!(strict.echo.received(), 0);
    strict.stop().await;
    test_database.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_personal_data_route_of_the_gateway_needs_a_signed_envelope() {
    let harness = Harness::start_sqlite(harness::ACCESS_LOG_ROUTE).await;
    let victim = "850315400025";
    let cover = harness::SUBJECT;
    let subjects = format!("{cover},{cover},{cover},{cover},{cover},{victim}");
    let mut client =
        shlyuz_proto::gateway::v1::access_log_service_client::AccessLogServiceClient::new(
            harness.channel("ops").await,
        );
    let mut request = tonic::Request::new(shlyuz_proto::gateway::v1::ListSubjectAccessRequest {
        subject_iin: victim.to_string(),
        ..Default::default()
    });
    request
        .metadata_mut()
        .insert(envelope::SUBJECT_IIN, subjects.parse().expect("ascii"));
    request
        .metadata_mut()
        .insert(envelope::PURPOSE, "OPERATIONS".parse().expect("ascii"));
    let refused = client
        .list_subject_access(request)
        .await
        .expect_err("unsigned read of someone's access log");
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");

    // The refusal names every subject the call asked about, not a truncated list.
    let mut log =
        shlyuz_proto::gateway::v1::message_log_service_client::MessageLogServiceClient::new(
            harness.channel("ops").await,
        );
    let entries = log
        .list_entries(shlyuz_proto::gateway::v1::ListEntriesRequest {
            sender: "ops".to_string(),
            service: "shlyuz.gateway.v1.AccessLogService".to_string(),
            page_size: 10,
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner()
        .entries;
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0].subject_iin, subjects);
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_is_rate_limited_before_its_calls_are_checked() {
    let mut settings = harness::fast_async_settings();
    settings.sync.caller_rate_per_second = 0.001;
    settings.sync.caller_burst = 3;
    let test_database = shlyuz_kit::db::testing::TestDatabase::sqlite().await;
    let harness = Harness::start_custom(test_database.database().clone(), "", true, settings).await;
    // `sdu` has no rule for the echo service: every call it makes is refused.
    let mut client = EchoServiceClient::new(harness.channel("sdu").await);
    let mut reasons = Vec::new();
    for _ in 0..6 {
        let request = signed(
            &harness,
            "sdu",
            ECHO,
            &harness.personal_envelope(),
            echo_request("x"),
        );
        let refused = client.echo(request).await.expect_err("refused");
        reasons.push(summarize_status(&refused).reason);
    }
    assert_eq!(
        reasons,
        vec![
            "ACCESS_DENIED",
            "ACCESS_DENIED",
            "ACCESS_DENIED",
            "RATE_LIMITED",
            "RATE_LIMITED",
            "RATE_LIMITED"
        ]
    );
    harness.stop().await;
    test_database.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pass_through_never_forwards_a_callers_sender_header() {
    let mut settings = harness::fast_async_settings();
    settings.mode = shlyuz_gateway::proxy::PolicyMode::PassThrough;
    let test_database = shlyuz_kit::db::testing::TestDatabase::sqlite().await;
    let harness = Harness::start_custom(test_database.database().clone(), "", true, settings).await;
    let mut client = harness.echo_client("jauynger-portal").await;
    let mut request = tonic::Request::new(echo_request("x"));
    request
        .metadata_mut()
        .insert(envelope::SENDER, "ops".parse().expect("ascii"));
    let seen = client
        .echo(request)
        .await
        .expect("routed")
        .into_inner()
        .metadata;
    assert!(!seen.contains_key(envelope::SENDER), "{seen:?}");
    harness.stop().await;
    test_database.cleanup().await;
}

shlyuz_kit::storage_test!(
    the_persons_an_answer_is_about_get_subject_access_rows,
    |database: Database| async move {
        let harness = Harness::start(database, harness::ACCESS_LOG_ROUTE).await;
        let other = "850315400025";
        let mut client = harness.echo_client("jauynger-portal").await;
        let builder = harness.personal_envelope();
        let mut message = echo_request("a list naming someone else");
        message.response_subjects = other.to_string();
        let response = client
            .echo(signed(&harness, "jauynger-portal", ECHO, &builder, message))
            .await
            .expect("call succeeds");
        assert!(
            response
                .metadata()
                .get(envelope::RESPONSE_SUBJECTS)
                .is_none(),
            "the declaration is the gateway's, not the caller's"
        );
        let entry = harness
            .log_entry("jauynger-portal", &builder.message_id)
            .await;
        assert_eq!(entry.subject_iin, format!("{},{other}", harness::SUBJECT));

        let path = "/shlyuz.gateway.v1.AccessLogService/ListSubjectAccess";
        let request = shlyuz_proto::gateway::v1::ListSubjectAccessRequest {
            subject_iin: other.to_string(),
            ..Default::default()
        };
        let read = EnvelopeBuilder {
            purpose: "OPERATIONS".to_string(),
            subject_iin: other.to_string(),
            ..EnvelopeBuilder::default()
        };
        let mut access_log =
            shlyuz_proto::gateway::v1::access_log_service_client::AccessLogServiceClient::new(
                harness.channel("ops").await,
            );
        let accesses = access_log
            .list_subject_access(signed(&harness, "ops", path, &read, request))
            .await
            .expect("read the access log")
            .into_inner()
            .accesses;
        assert!(
            accesses
                .iter()
                .any(|access| access.participant_id == "jauynger-portal"
                    && access.message_id == builder.message_id),
            "{accesses:?}"
        );

        // An answer naming its subjects wrongly does not leave.
        let mut raw = harness.raw_client("jauynger-portal").await;
        let mut message = echo_request("x");
        message.response_subjects = "not-an-iin".to_string();
        let request = signed(
            &harness,
            "jauynger-portal",
            ECHO,
            &harness.personal_envelope(),
            message,
        );
        let (messages, status) = raw.messages_before_status(ECHO, request).await;
        assert!(messages.is_empty(), "{messages:?}");
        assert_status(&status, Code::Internal, "UPSTREAM_PROTOCOL_ERROR");
        harness.stop().await;
    }
);

/// `count` distinct valid IINs spread over birth dates and serials (a fixed pseudo-random
/// sequence), so that a list of them does not compress: PostgreSQL compresses index rows, and a
/// list of neighbouring IINs would slip under its limit.
fn many_iins(count: usize) -> Vec<String> {
    let mut state: u64 = 0x5eed;
    let mut found = std::collections::BTreeSet::new();
    let mut iins = Vec::with_capacity(count);
    while iins.len() < count {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let value = state >> 20;
        let candidate = format!(
            "{:02}{:02}{:02}{}{:05}",
            value % 100,
            (value / 100) % 12 + 1,
            (value / 1_200) % 28 + 1,
            (value / 33_600) % 2 + 3,
            (value / 67_200) % 100_000
        );
        if shlyuz_kit::iin::Iin::parse(&candidate).is_ok() && found.insert(candidate.clone()) {
            iins.push(candidate);
        }
    }
    iins
}

shlyuz_kit::storage_test!(
    one_entry_can_never_fail_others,
    |database: Database| async move {
        let harness = Harness::start(database, "").await;
        let batch_subjects = many_iins(500).join(",");
        let poison_subjects = many_iins(300).join(",");
        let mut tasks = Vec::new();
        for number in 0..30 {
            let client = harness.echo_client("jauynger-portal").await;
            // Honest single-subject calls, honest 500-subject batch calls and unsigned calls
            // naming 300 persons (refused, and logged with the whole list) run together.
            let kind = number % 3;
            let mut builder = harness.personal_envelope();
            let request = match kind {
                0 => signed(
                    &harness,
                    "jauynger-portal",
                    ECHO,
                    &builder,
                    echo_request("one"),
                ),
                1 => {
                    builder.subject_iin = batch_subjects.clone();
                    signed(
                        &harness,
                        "jauynger-portal",
                        ECHO,
                        &builder,
                        echo_request("batch"),
                    )
                }
                _ => {
                    let mut request = tonic::Request::new(echo_request("poison"));
                    let metadata = request.metadata_mut();
                    for (name, value) in [
                        (envelope::MESSAGE_ID, builder.message_id.as_str()),
                        (envelope::PURPOSE, "MILITARY_RECRUITMENT"),
                        (envelope::SUBJECT_IIN, poison_subjects.as_str()),
                    ] {
                        metadata.insert(name, value.parse().expect("ascii"));
                    }
                    request
                }
            };
            let message_id = builder.message_id.clone();
            tasks.push(tokio::spawn(async move {
                let mut client = client;
                (kind, message_id, client.echo(request).await)
            }));
        }
        for task in tasks {
            let (kind, message_id, outcome) = task.await.expect("call task");
            match (kind, outcome) {
                (0 | 1, Ok(_)) => {}
                (0 | 1, Err(status)) => panic!("an honest call failed: {status:?}"),
                (_, Ok(_)) => panic!("an unsigned personal-data call was answered"),
                (_, Err(status)) => assert_ne!(
                    summarize_status(&status).reason,
                    "MESSAGE_LOG_UNAVAILABLE",
                    "the refusal is logged: {status:?}"
                ),
            }
            let entry = harness.log_entry("jauynger-portal", &message_id).await;
            let expected = match kind {
                0 => harness::SUBJECT,
                1 => batch_subjects.as_str(),
                _ => poison_subjects.as_str(),
            };
            assert_eq!(entry.subject_iin, expected, "every call has its entry");
        }
        harness.stop().await;
    }
);

shlyuz_kit::storage_test!(
    reading_the_log_about_a_person_is_in_that_persons_access_log,
    |database: Database| async move {
        let harness = Harness::start(database, harness::ACCESS_LOG_ROUTE).await;
        let subjects = many_iins(500);
        let person = subjects[250].clone();
        // Twelve batch entries naming 500 persons each (≈ 7 KiB apiece): together more than the
        // 64 KiB a local route may answer.
        let mut client = harness.echo_client("jauynger-portal").await;
        let mut message_ids = Vec::new();
        for _ in 0..12 {
            let mut builder = harness.personal_envelope();
            builder.subject_iin = subjects.join(",");
            client
                .echo(signed(
                    &harness,
                    "jauynger-portal",
                    ECHO,
                    &builder,
                    echo_request("batch"),
                ))
                .await
                .expect("batch call");
            message_ids.push(builder.message_id);
        }
        let mut log =
            shlyuz_proto::gateway::v1::message_log_service_client::MessageLogServiceClient::new(
                harness.channel("ops").await,
            );
        let mut found = Vec::new();
        let mut page_token = String::new();
        let mut pages = 0;
        loop {
            let page = log
                .list_entries(shlyuz_proto::gateway::v1::ListEntriesRequest {
                    subject_iin: person.clone(),
                    page_size: 100,
                    page_token: page_token.clone(),
                    ..Default::default()
                })
                .await
                .expect("a page fits the route's response limit")
                .into_inner();
            pages += 1;
            found.extend(page.entries.into_iter().map(|entry| entry.message_id));
            if page.next_page_token.is_empty() {
                break;
            }
            page_token = page.next_page_token;
        }
        assert!(pages > 1, "the listing is paged by size");
        found.reverse();
        assert_eq!(
            found, message_ids,
            "every batch entry naming the person is found"
        );

        // The person's access log shows who read the log about them.
        let path = "/shlyuz.gateway.v1.AccessLogService/ListSubjectAccess";
        let read = EnvelopeBuilder {
            purpose: "OPERATIONS".to_string(),
            subject_iin: person.clone(),
            ..EnvelopeBuilder::default()
        };
        let request = shlyuz_proto::gateway::v1::ListSubjectAccessRequest {
            subject_iin: person.clone(),
            page_size: 100,
            ..Default::default()
        };
        let mut access_log =
            shlyuz_proto::gateway::v1::access_log_service_client::AccessLogServiceClient::new(
                harness.channel("ops").await,
            );
        let accesses = access_log
            .list_subject_access(signed(&harness, "ops", path, &read, request))
            .await
            .expect("read the access log")
            .into_inner()
            .accesses;
        let reads = accesses
            .iter()
            .filter(|access| {
                access.participant_id == "ops"
                    && access.service == "shlyuz.gateway.v1.MessageLogService"
                    && access.method == "ListEntries"
            })
            .count();
        assert_eq!(reads, pages, "{accesses:?}");
        harness.stop().await;
    }
);
