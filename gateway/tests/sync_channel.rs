//! The sync channel end to end over real sockets and mutual TLS: a gateway in front of an echo
//! upstream, called by participants of a development PKI.

mod harness;

use std::time::Duration;

use harness::{Harness, echo_request, signed};
use shlyuz_gateway::envelope::{self, EnvelopeBuilder};
use shlyuz_kit::error::summarize_status;
use shlyuz_proto::echo::v1::echo_service_client::EchoServiceClient;
use shlyuz_proto::echo::v1::{
    EchoBidiStreamRequest, EchoClientStreamRequest, EchoServerStreamRequest,
};
use tokio_stream::StreamExt;
use tonic::Code;

const ECHO: &str = "/shlyuz.echo.v1.EchoService/Echo";

fn assert_refused(
    result: Result<tonic::Response<impl std::fmt::Debug>, tonic::Status>,
    code: Code,
    reason: &str,
) {
    let status = match result {
        Ok(response) => panic!("expected {code:?} {reason}, got {response:?}"),
        Err(status) => status,
    };
    let summary = summarize_status(&status);
    assert_eq!(summary.code, code, "{status:?}");
    assert_eq!(summary.reason, reason, "{status:?}");
}

shlyuz_kit::storage_test!(
    signed_call_reaches_upstream_and_is_logged,
    |database| async move {
        let harness = Harness::start(database, "").await;
        let mut client = harness.echo_client("jauynger-portal").await;
        let builder = EnvelopeBuilder {
            purpose: "MILITARY_RECRUITMENT".to_string(),
            subject_iin: harness::SUBJECT.to_string(),
            correlation_id: "case-42".to_string(),
            ..EnvelopeBuilder::default()
        };
        let message = echo_request("сәлем, шлюз");
        let request = signed(&harness, "jauynger-portal", ECHO, &builder, message.clone());
        let response = client.echo(request).await.expect("call succeeds");

        let metadata = response.metadata().clone();
        let request_hash = metadata
            .get(envelope::REQUEST_HASH)
            .and_then(|value| value.to_str().ok())
            .map(str::to_string);
        assert_eq!(
            request_hash,
            Some(envelope::sha256_hex(&prost::Message::encode_to_vec(
                &message
            )))
        );
        let position = metadata
            .get(envelope::LOG_POSITION)
            .and_then(|value| value.to_str().ok())
            .map(str::to_string)
            .expect("log position in the trailers");

        let body = response.into_inner();
        assert_eq!(body.payload, "сәлем, шлюз");
        assert_eq!(
            body.metadata.get(envelope::SENDER).map(String::as_str),
            Some("jauynger-portal")
        );
        assert_eq!(
            body.metadata.get(envelope::MESSAGE_ID),
            Some(&builder.message_id)
        );
        assert_eq!(
            body.metadata
                .get(envelope::CORRELATION_ID)
                .map(String::as_str),
            Some("case-42")
        );
        assert!(
            body.metadata.contains_key("grpc-timeout"),
            "the deadline is propagated"
        );

        let entry = harness
            .log_entry("jauynger-portal", &builder.message_id)
            .await;
        assert_eq!(format!("{}:{}", entry.chain_id, entry.sequence), position);
        assert_eq!(entry.status_code, 0);
        assert_eq!(entry.service, "shlyuz.echo.v1.EchoService");
        assert_eq!(entry.method, "Echo");
        assert_eq!(entry.purpose, "MILITARY_RECRUITMENT");
        assert_eq!(entry.subject_iin, harness::SUBJECT);
        assert_eq!(entry.correlation_id, "case-42");
        assert!(!entry.response_hash.is_empty());
        assert!(
            entry.request_body.is_empty(),
            "bodies are not stored by default"
        );
        harness.stop().await;
    }
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_and_foreign_signatures_are_refused_before_the_upstream() {
    let harness = Harness::start_sqlite("").await;
    let mut client = harness.echo_client("jauynger-portal").await;
    let builder = harness.personal_envelope();

    let mut forged = signed(
        &harness,
        "jauynger-portal",
        ECHO,
        &builder,
        echo_request("x"),
    );
    forged.metadata_mut().insert(
        envelope::SIGNATURE,
        tonic::metadata::MetadataValue::try_from("A".repeat(86) + "==").expect("value"),
    );
    assert_refused(
        client.echo(forged).await,
        Code::Unauthenticated,
        "SIGNATURE_INVALID",
    );

    // Signed with sdu's key but sent over jauynger-portal's connection.
    let foreign = signed(
        &harness,
        "sdu",
        ECHO,
        &harness.personal_envelope(),
        echo_request("x"),
    );
    assert_refused(
        client.echo(foreign).await,
        Code::Unauthenticated,
        "SIGNATURE_INVALID",
    );

    // A signature over another body.
    let builder_other = harness.personal_envelope();
    let mut swapped = signed(
        &harness,
        "jauynger-portal",
        ECHO,
        &builder_other,
        echo_request("original"),
    );
    *swapped.get_mut() = echo_request("swapped");
    assert_refused(
        client.echo(swapped).await,
        Code::Unauthenticated,
        "SIGNATURE_INVALID",
    );

    assert_eq!(
        harness.echo.received(),
        0,
        "the upstream never saw a refused call"
    );
    let entry = harness
        .log_entry("jauynger-portal", &builder.message_id)
        .await;
    assert_eq!(entry.reason, "SIGNATURE_INVALID");
    assert_eq!(entry.status_code, Code::Unauthenticated as i32);
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envelope_problems_are_invalid_argument_naming_the_metadata() {
    let harness = Harness::start_sqlite("").await;
    let mut client = harness.echo_client("jauynger-portal").await;

    let unsigned = tonic::Request::new(echo_request("x"));
    let status = client.echo(unsigned).await.expect_err("no envelope");
    let summary = summarize_status(&status);
    assert_eq!(summary.code, Code::InvalidArgument);
    assert_eq!(
        summary.fields,
        vec![
            envelope::MESSAGE_ID,
            envelope::TIMESTAMP,
            envelope::SIGNATURE
        ]
    );

    for (key, value) in [
        (envelope::MESSAGE_ID, "not-a-uuid".to_string()),
        (envelope::SUBJECT_IIN, "900101300015".to_string()),
        (envelope::CORRELATION_ID, "x".repeat(200)),
        (envelope::TIMESTAMP, "yesterday".to_string()),
    ] {
        let mut request = signed(
            &harness,
            "jauynger-portal",
            ECHO,
            &harness.personal_envelope(),
            echo_request("x"),
        );
        request.metadata_mut().insert(
            key,
            tonic::metadata::MetadataValue::try_from(value.as_str()).expect("value"),
        );
        let status = client.echo(request).await.expect_err(key);
        let summary = summarize_status(&status);
        assert_eq!(summary.code, Code::InvalidArgument, "{key}");
        assert_eq!(summary.fields, vec![key.to_string()], "{key}");
    }

    let missing_subject = EnvelopeBuilder {
        purpose: "MILITARY_RECRUITMENT".to_string(),
        ..EnvelopeBuilder::default()
    };
    let request = signed(
        &harness,
        "jauynger-portal",
        ECHO,
        &missing_subject,
        echo_request("x"),
    );
    let status = client
        .echo(request)
        .await
        .expect_err("personal data without subject");
    assert_eq!(
        summarize_status(&status).fields,
        vec![envelope::SUBJECT_IIN.to_string()]
    );

    let stale = EnvelopeBuilder {
        timestamp: envelope::format_timestamp(
            time::OffsetDateTime::now_utc() - time::Duration::minutes(30),
        ),
        ..harness.personal_envelope()
    };
    let request = signed(&harness, "jauynger-portal", ECHO, &stale, echo_request("x"));
    assert_refused(
        client.echo(request).await,
        Code::InvalidArgument,
        "MESSAGE_EXPIRED",
    );

    assert_eq!(harness.echo.received(), 0);
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_message_id_is_refused_and_logged() {
    let harness = Harness::start_sqlite("").await;
    let mut client = harness.echo_client("jauynger-portal").await;
    let builder = harness.personal_envelope();
    let first = signed(
        &harness,
        "jauynger-portal",
        ECHO,
        &builder,
        echo_request("once"),
    );
    client.echo(first).await.expect("first call");
    let again = signed(
        &harness,
        "jauynger-portal",
        ECHO,
        &builder,
        echo_request("once"),
    );
    assert_refused(
        client.echo(again).await,
        Code::AlreadyExists,
        "MESSAGE_REPLAYED",
    );
    assert_eq!(
        harness.echo.received(),
        1,
        "the upstream executed the message once"
    );
    let entries = harness
        .log_entries_for_message("jauynger-portal", &builder.message_id)
        .await;
    let reasons: Vec<String> = entries.iter().map(|entry| entry.reason.clone()).collect();
    assert!(
        reasons.contains(&"MESSAGE_REPLAYED".to_string()),
        "{reasons:?}"
    );
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_rules_and_purposes_are_enforced() {
    let harness = Harness::start_sqlite("").await;

    // sdu has no rule for EchoService at all.
    let mut sdu = harness.echo_client("sdu").await;
    let request = signed(
        &harness,
        "sdu",
        ECHO,
        &harness.personal_envelope(),
        echo_request("x"),
    );
    assert_refused(
        sdu.echo(request).await,
        Code::PermissionDenied,
        "ACCESS_DENIED",
    );

    // jauynger-portal may call Echo but not EchoServerStream.
    let mut portal = harness.echo_client("jauynger-portal").await;
    let stream_request = EchoServerStreamRequest {
        payload: "x".to_string(),
        repeat: 2,
    };
    let request = signed(
        &harness,
        "jauynger-portal",
        "/shlyuz.echo.v1.EchoService/EchoServerStream",
        &harness.personal_envelope(),
        stream_request,
    );
    let status = portal
        .echo_server_stream(request)
        .await
        .expect_err("method outside the rule");
    assert_eq!(summarize_status(&status).reason, "ACCESS_DENIED");

    let wrong_purpose = EnvelopeBuilder {
        purpose: "HOUSING_ALLOCATION".to_string(),
        ..harness.personal_envelope()
    };
    let request = signed(
        &harness,
        "jauynger-portal",
        ECHO,
        &wrong_purpose,
        echo_request("x"),
    );
    assert_refused(
        portal.echo(request).await,
        Code::PermissionDenied,
        "PURPOSE_NOT_ALLOWED",
    );

    let unknown = signed(
        &harness,
        "jauynger-portal",
        "/shlyuz.unknown.v1.NowhereService/Go",
        &harness.personal_envelope(),
        echo_request("x"),
    );
    let mut raw = harness.raw_client("jauynger-portal").await;
    let status = raw
        .unary("/shlyuz.unknown.v1.NowhereService/Go", unknown)
        .await
        .expect_err("unknown service");
    assert_eq!(summarize_status(&status).code, Code::Unimplemented);
    assert_eq!(summarize_status(&status).reason, "UNKNOWN_SERVICE");

    assert_eq!(harness.echo.received(), 0);
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_request_is_refused() {
    let harness = Harness::start_sqlite("").await;
    let mut client = harness.echo_client("jauynger-portal").await;
    let big = echo_request(&"я".repeat(40_000));
    let request = signed(
        &harness,
        "jauynger-portal",
        ECHO,
        &harness.personal_envelope(),
        big,
    );
    assert_refused(
        client.echo(request).await,
        Code::ResourceExhausted,
        "MESSAGE_TOO_LARGE",
    );
    assert_eq!(harness.echo.received(), 0);
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untrusted_and_expired_certificates_never_reach_the_gateway_logic() {
    let harness = Harness::start_sqlite("").await;
    for (label, (cert, key)) in [
        (
            "untrusted",
            shlyuz_kit::pki::issue_untrusted_leaf("jauynger-portal").expect("leaf"),
        ),
        ("expired", harness.expired_leaf("jauynger-portal")),
    ] {
        let result = harness.call_with_identity(&cert, &key).await;
        assert!(result.is_err(), "{label} certificate was accepted");
    }
    assert_eq!(harness.echo.received(), 0);
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_status_details_and_deadlines_pass_through() {
    let harness = Harness::start_sqlite("").await;
    let mut client = harness.echo_client("jauynger-portal").await;

    let mut failing = echo_request("x");
    failing.fail_with_code = Code::NotFound as i32;
    let request = signed(
        &harness,
        "jauynger-portal",
        ECHO,
        &harness.personal_envelope(),
        failing,
    );
    let status = client
        .echo(request)
        .await
        .expect_err("upstream says not found");
    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(status.message(), "echo was told to fail");

    // The route allows 2 s; the caller allows 500 ms: the caller's deadline wins.
    let mut slow = echo_request("x");
    slow.delay_ms = 1_000;
    let mut request = signed(
        &harness,
        "jauynger-portal",
        ECHO,
        &harness.personal_envelope(),
        slow,
    );
    request.set_timeout(Duration::from_millis(500));
    let started = std::time::Instant::now();
    let status = client.echo(request).await.expect_err("deadline");
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(
        started.elapsed() < Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_calls_are_proxied() {
    let harness = Harness::start_sqlite("").await;
    let mut client = harness.echo_client("ops").await;

    let request = signed(
        &harness,
        "ops",
        "/shlyuz.echo.v1.EchoService/EchoServerStream",
        &harness.envelope("OPERATIONS"),
        EchoServerStreamRequest {
            payload: "p".to_string(),
            repeat: 5,
        },
    );
    let mut answers = client
        .echo_server_stream(request)
        .await
        .expect("server stream")
        .into_inner();
    let mut indexes = Vec::new();
    while let Some(answer) = answers.next().await {
        indexes.push(answer.expect("answer").index);
    }
    assert_eq!(indexes, vec![0, 1, 2, 3, 4]);

    let parts = tokio_stream::iter(["ә", "ғ", "қ"].map(|payload| EchoClientStreamRequest {
        payload: payload.to_string(),
    }));
    let request = harness::signed_streaming(
        &harness,
        "ops",
        "/shlyuz.echo.v1.EchoService/EchoClientStream",
        parts,
    );
    let joined = client
        .echo_client_stream(request)
        .await
        .expect("client stream")
        .into_inner();
    assert_eq!((joined.payload.as_str(), joined.count), ("әғқ", 3));

    let parts = tokio_stream::iter(["ң", "ө"].map(|payload| EchoBidiStreamRequest {
        payload: payload.to_string(),
    }));
    let request = harness::signed_streaming(
        &harness,
        "ops",
        "/shlyuz.echo.v1.EchoService/EchoBidiStream",
        parts,
    );
    let mut answers = client
        .echo_bidi_stream(request)
        .await
        .expect("bidi")
        .into_inner();
    let mut payloads = Vec::new();
    while let Some(answer) = answers.next().await {
        payloads.push(answer.expect("answer").payload);
    }
    assert_eq!(payloads, vec!["ң", "ө"]);
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_exhaustion_carries_retry_info() {
    let harness = Harness::start_sqlite("").await;
    let mut client = harness.echo_client("sdu-limited").await;
    let mut refusals = Vec::new();
    for _ in 0..4 {
        let request = signed(
            &harness,
            "sdu-limited",
            ECHO,
            &harness.envelope("OPERATIONS"),
            echo_request("x"),
        );
        if let Err(status) = client.echo(request).await {
            refusals.push(summarize_status(&status));
        }
    }
    assert_eq!(refusals.len(), 2, "burst of 2 then refusals");
    assert!(
        refusals
            .iter()
            .all(|summary| summary.reason == "QUOTA_EXCEEDED")
    );
    assert!(refusals.iter().all(|summary| summary.retry_after.is_some()));
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_idempotent_methods_are_retried_and_the_breaker_opens() {
    let harness = Harness::start_sqlite("").await;
    let mut client = harness.echo_client("ops").await;

    // Echo is idempotent on this route: an UNAVAILABLE answer is retried up to 3 attempts.
    let mut unavailable = echo_request("x");
    unavailable.fail_with_code = Code::Unavailable as i32;
    let request = signed(
        &harness,
        "ops",
        ECHO,
        &harness.envelope("OPERATIONS"),
        unavailable,
    );
    let status = client.echo(request).await.expect_err("still unavailable");
    assert_eq!(summarize_status(&status).reason, "UPSTREAM_UNAVAILABLE");
    assert_eq!(harness.echo.received(), 3);

    // A route to a port nobody listens on: refusals, then the breaker opens and answers at once.
    let mut dead = harness.dead_route_client("ops").await;
    for _ in 0..3 {
        let request = signed(
            &harness,
            "ops",
            "/shlyuz.echo.v1.DeadService/Echo",
            &harness.envelope("OPERATIONS"),
            echo_request("x"),
        );
        let status = dead
            .unary("/shlyuz.echo.v1.DeadService/Echo", request)
            .await
            .expect_err("dead upstream");
        assert_eq!(summarize_status(&status).reason, "UPSTREAM_UNAVAILABLE");
    }
    let request = signed(
        &harness,
        "ops",
        "/shlyuz.echo.v1.DeadService/Echo",
        &harness.envelope("OPERATIONS"),
        echo_request("x"),
    );
    let status = dead
        .unary("/shlyuz.echo.v1.DeadService/Echo", request)
        .await
        .expect_err("breaker open");
    assert!(status.message().contains("circuit breaker"), "{status:?}");
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consent_is_checked_when_the_rule_requires_it() {
    let harness = Harness::start_sqlite("").await;
    let mut client = harness.echo_client("intake").await;
    let without = EnvelopeBuilder {
        purpose: "MILITARY_RECRUITMENT".to_string(),
        subject_iin: harness::SUBJECT.to_string(),
        ..EnvelopeBuilder::default()
    };
    let request = signed(&harness, "intake", ECHO, &without, echo_request("x"));
    assert_refused(
        client.echo(request).await,
        Code::PermissionDenied,
        "CONSENT_REQUIRED",
    );

    harness.consents.insert(
        "consent-1",
        shlyuz_gateway::consent::ConsentRecord {
            subject_iin: harness::SUBJECT.to_string(),
            participant: "intake".to_string(),
            purpose: "MILITARY_RECRUITMENT".to_string(),
            expires_at_ms: i64::MAX,
            revoked: false,
        },
    );
    let with_consent = EnvelopeBuilder {
        purpose: "MILITARY_RECRUITMENT".to_string(),
        subject_iin: harness::SUBJECT.to_string(),
        consent_id: "consent-1".to_string(),
        ..EnvelopeBuilder::default()
    };
    let request = signed(&harness, "intake", ECHO, &with_consent, echo_request("x"));
    client.echo(request).await.expect("consented call");

    harness.consents.revoke("consent-1");
    let revoked = EnvelopeBuilder {
        purpose: "MILITARY_RECRUITMENT".to_string(),
        subject_iin: harness::SUBJECT.to_string(),
        consent_id: "consent-1".to_string(),
        ..EnvelopeBuilder::default()
    };
    let request = signed(&harness, "intake", ECHO, &revoked, echo_request("x"));
    assert_refused(
        client.echo(request).await,
        Code::PermissionDenied,
        "CONSENT_REQUIRED",
    );
    assert_eq!(harness.echo.received(), 1);
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_passes_a_consent_rule_with_one_consent_per_subject_in_order() {
    let harness = Harness::start_sqlite("").await;
    let other = "850315400025";
    for (consent_id, subject_iin) in [("consent-1", harness::SUBJECT), ("consent-2", other)] {
        harness.consents.insert(
            consent_id,
            shlyuz_gateway::consent::ConsentRecord {
                subject_iin: subject_iin.to_string(),
                participant: "intake".to_string(),
                purpose: "MILITARY_RECRUITMENT".to_string(),
                expires_at_ms: i64::MAX,
                revoked: false,
            },
        );
    }
    let batch = |consent_id: &str| EnvelopeBuilder {
        purpose: "MILITARY_RECRUITMENT".to_string(),
        subject_iin: format!("{},{other}", harness::SUBJECT),
        consent_id: consent_id.to_string(),
        ..EnvelopeBuilder::default()
    };
    let mut client = harness.echo_client("intake").await;
    let call =
        |builder: EnvelopeBuilder| signed(&harness, "intake", ECHO, &builder, echo_request("x"));

    client
        .echo(call(batch("consent-1,consent-2")))
        .await
        .expect("each subject's consent, in the order of the subjects");
    assert_eq!(harness.echo.received(), 1);

    // The first subject's consent sent again for the second subject.
    let status = client
        .echo(call(batch("consent-1,consent-1")))
        .await
        .expect_err("a consent of another subject");
    let summary = summarize_status(&status);
    assert_eq!(
        (summary.code, summary.reason.as_str()),
        (Code::PermissionDenied, "CONSENT_REQUIRED"),
        "{status:?}"
    );
    assert!(status.message().contains("subject 2 of 2"), "{status:?}");

    let status = client
        .echo(call(batch("consent-2,consent-1")))
        .await
        .expect_err("consents out of order");
    assert_eq!(summarize_status(&status).reason, "CONSENT_REQUIRED");
    assert!(status.message().contains("subject 1 of 2"), "{status:?}");

    let status = client
        .echo(call(batch("consent-1")))
        .await
        .expect_err("fewer consents than subjects");
    let summary = summarize_status(&status);
    assert_eq!(summary.code, Code::InvalidArgument, "{status:?}");
    assert_eq!(summary.fields, vec![envelope::CONSENT_ID.to_string()]);
    assert!(
        status.message().contains("1 consents for 2 subjects"),
        "{status:?}"
    );

    let status = client
        .echo(call(batch("consent-1,consent-2,consent-2")))
        .await
        .expect_err("more consents than subjects");
    assert_eq!(summarize_status(&status).code, Code::InvalidArgument);

    assert_refused(
        client.echo(call(batch(""))).await,
        Code::PermissionDenied,
        "CONSENT_REQUIRED",
    );
    let status = client
        .echo(call(batch("consent-1,")))
        .await
        .expect_err("an empty id in the list");
    assert_eq!(
        summarize_status(&status).fields,
        vec![envelope::CONSENT_ID.to_string()]
    );

    harness.consents.revoke("consent-2");
    let status = client
        .echo(call(batch("consent-1,consent-2")))
        .await
        .expect_err("the second subject revoked");
    assert!(status.message().contains("subject 2 of 2"), "{status:?}");
    assert!(status.message().contains("revoked"), "{status:?}");
    assert_eq!(
        harness.echo.received(),
        1,
        "no refused batch reached the upstream"
    );
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_of_an_unregistered_participant_is_refused_and_logged() {
    let harness = Harness::start_sqlite("").await;
    let mut client = harness.echo_client(harness::STRANGER).await;
    let builder = harness.personal_envelope();
    let request = signed(
        &harness,
        harness::STRANGER,
        ECHO,
        &builder,
        echo_request("x"),
    );
    assert_refused(
        client.echo(request).await,
        Code::Unauthenticated,
        "UNKNOWN_PARTICIPANT",
    );
    assert_eq!(harness.echo.received(), 0);
    let entry = harness
        .log_entry(harness::STRANGER, &builder.message_id)
        .await;
    assert_eq!(entry.reason, "UNKNOWN_PARTICIPANT");
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_response_is_cut_off_with_resource_exhausted() {
    let harness = Harness::start_sqlite("").await;
    let mut client = harness.echo_client("ops").await;
    // Ten answers of 10 KB each against the route's 64 KiB response limit.
    let request = signed(
        &harness,
        "ops",
        "/shlyuz.echo.v1.EchoService/EchoServerStream",
        &harness.envelope("OPERATIONS"),
        EchoServerStreamRequest {
            payload: "ж".repeat(5_000),
            repeat: 10,
        },
    );
    let mut answers = client
        .echo_server_stream(request)
        .await
        .expect("the stream starts")
        .into_inner();
    let mut received = 0;
    let status = loop {
        match answers.next().await {
            Some(Ok(_)) => received += 1,
            Some(Err(status)) => break status,
            None => panic!("the stream ended without the size refusal after {received} answers"),
        }
    };
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(received < 10, "the caller got {received} answers");
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_method_not_marked_idempotent_is_never_retried() {
    let harness = Harness::start_sqlite_with("", false).await;
    let mut client = harness.echo_client("ops").await;
    let mut unavailable = echo_request("x");
    unavailable.fail_with_code = Code::Unavailable as i32;
    let request = signed(
        &harness,
        "ops",
        ECHO,
        &harness.envelope("OPERATIONS"),
        unavailable,
    );
    let status = client.echo(request).await.expect_err("unavailable");
    assert_eq!(summarize_status(&status).reason, "UPSTREAM_UNAVAILABLE");
    assert_eq!(harness.echo.received(), 1, "one attempt only");
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_context_reaches_the_upstream_and_calls_are_counted() {
    let harness = Harness::start_sqlite("").await;
    let mut client = harness.echo_client("jauynger-portal").await;
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let mut request = signed(
        &harness,
        "jauynger-portal",
        ECHO,
        &harness.personal_envelope(),
        echo_request("x"),
    );
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{trace_id}-00f067aa0ba902b7-01")
            .parse()
            .expect("metadata"),
    );
    let answer = client.echo(request).await.expect("call").into_inner();
    let traceparent = answer
        .metadata
        .get("traceparent")
        .cloned()
        .unwrap_or_default();
    assert!(
        traceparent.contains(trace_id),
        "upstream saw traceparent {traceparent:?}"
    );

    let exposition = harness.metrics.encode();
    let counted = exposition.lines().any(|line| {
        line.starts_with("shlyuz_gateway_calls_total{")
            && line.contains("participant=\"jauynger-portal\"")
            && line.contains("method=\"Echo\"")
            && line.contains("code=\"Ok\"")
    });
    assert!(counted, "{exposition}");
    assert!(exposition.contains("shlyuz_gateway_call_duration_seconds_bucket"));
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_call_names_every_subject_in_the_access_log() {
    let harness = Harness::start_sqlite(harness::ACCESS_LOG_ROUTE).await;
    let other = "850315400025";
    let batch = EnvelopeBuilder {
        purpose: "OPERATIONS".to_string(),
        subject_iin: format!("{},{other}", harness::SUBJECT),
        ..EnvelopeBuilder::default()
    };
    let mut client = harness.echo_client("ops").await;
    client
        .echo(signed(&harness, "ops", ECHO, &batch, echo_request("batch")))
        .await
        .expect("batch call");

    let too_many = EnvelopeBuilder {
        subject_iin: vec![harness::SUBJECT; envelope::MAX_SUBJECTS + 1].join(","),
        ..batch.clone()
    };
    let status = client
        .echo(signed(&harness, "ops", ECHO, &too_many, echo_request("x")))
        .await
        .expect_err("too many subjects");
    assert_eq!(
        summarize_status(&status).fields,
        vec![envelope::SUBJECT_IIN.to_string()]
    );

    let mut access_log =
        shlyuz_proto::gateway::v1::access_log_service_client::AccessLogServiceClient::new(
            harness.channel("ops").await,
        );
    let lookup = EnvelopeBuilder {
        purpose: "OPERATIONS".to_string(),
        subject_iin: other.to_string(),
        ..EnvelopeBuilder::default()
    };
    let request = signed(
        &harness,
        "ops",
        "/shlyuz.gateway.v1.AccessLogService/ListSubjectAccess",
        &lookup,
        shlyuz_proto::gateway::v1::ListSubjectAccessRequest {
            subject_iin: other.to_string(),
            ..Default::default()
        },
    );
    let accesses = access_log
        .list_subject_access(request)
        .await
        .expect("access log")
        .into_inner()
        .accesses;
    assert_eq!(accesses.len(), 1, "{accesses:?}");
    assert_eq!(accesses[0].participant_id, "ops");
    assert_eq!(accesses[0].method, "Echo");
    assert_eq!(accesses[0].message_id, batch.message_id);
    harness.stop().await;
}

shlyuz_kit::storage_test!(
    a_replay_sent_to_another_replica_is_refused_when_the_guard_is_shared,
    |database: shlyuz_kit::db::Database| async move {
        use shlyuz_gateway::config::ReplayScope;
        let shared = shlyuz_gateway::GatewaySettings {
            replay_scope: ReplayScope::Shared,
            ..harness::fast_async_settings()
        };
        let harness = Harness::start_custom(database.clone(), "", true, shared.clone()).await;
        let second = harness.second_gateway_with(database.clone(), shared).await;
        let builder = harness.personal_envelope();
        let message = echo_request("once");
        let request = || signed(&harness, "jauynger-portal", ECHO, &builder, message.clone());

        let mut first_replica = harness.echo_client("jauynger-portal").await;
        first_replica
            .echo(request())
            .await
            .expect("the original call");
        let mut second_replica =
            EchoServiceClient::new(harness.channel_to(second.address, "jauynger-portal").await);
        let status = second_replica
            .echo(request())
            .await
            .expect_err("the same signed message at the other replica");
        let summary = summarize_status(&status);
        assert_eq!(
            (summary.code, summary.reason.as_str()),
            (Code::AlreadyExists, "MESSAGE_REPLAYED")
        );
        assert_eq!(
            harness.echo.received(),
            1,
            "the upstream ran the message once"
        );

        // A call refused before the upstream (here: a signature that does not verify) releases its
        // id everywhere, so the sender may correct it and send it again, to either replica.
        let fresh = harness.personal_envelope();
        let mut bad = signed(
            &harness,
            "jauynger-portal",
            ECHO,
            &fresh,
            echo_request("fixed"),
        );
        bad.metadata_mut().insert(
            envelope::SIGNATURE,
            format!("{}==", "A".repeat(86)).parse().expect("ascii"),
        );
        let refused = first_replica.echo(bad).await.expect_err("bad signature");
        assert_eq!(summarize_status(&refused).reason, "SIGNATURE_INVALID");
        second_replica
            .echo(signed(
                &harness,
                "jauynger-portal",
                ECHO,
                &fresh,
                echo_request("fixed"),
            ))
            .await
            .expect("the corrected call at the other replica");
        second.shutdown().await;
        harness.stop().await;
    }
);

shlyuz_kit::storage_test!(
    per_instance_replay_memory_does_not_reach_another_replica,
    |database: shlyuz_kit::db::Database| async move {
        let harness =
            Harness::start_custom(database.clone(), "", true, harness::fast_async_settings()).await;
        let second = harness
            .second_gateway_with(database.clone(), harness::fast_async_settings())
            .await;
        let builder = harness.personal_envelope();
        let message = echo_request("twice");
        let request = || signed(&harness, "jauynger-portal", ECHO, &builder, message.clone());
        harness
            .echo_client("jauynger-portal")
            .await
            .echo(request())
            .await
            .expect("the original call");
        // The default (`instance`): the other replica has not seen it, as decision 21 describes.
        EchoServiceClient::new(harness.channel_to(second.address, "jauynger-portal").await)
            .echo(request())
            .await
            .expect("accepted by a replica that keeps its own memory");
        assert_eq!(harness.echo.received(), 2);
        second.shutdown().await;
        harness.stop().await;
    }
);

shlyuz_kit::storage_test!(
    shared_replay_claims_expire_and_are_purged,
    |database: shlyuz_kit::db::Database| async move {
        use shlyuz_gateway::replay_store::SharedReplayGuard;
        database
            .migrate(&shlyuz_gateway::MIGRATIONS)
            .await
            .expect("migrations");
        let guard = SharedReplayGuard::new(database.clone());
        let id = "0191f5a0-3c1e-7b3a-9a52-5d0b5e0f6c11";
        assert!(
            guard
                .claim("intake", id, 1_000, 301_000)
                .await
                .expect("claim")
        );
        assert!(
            !guard
                .claim("intake", id, 2_000, 302_000)
                .await
                .expect("replay")
        );
        assert!(
            guard.claim("sdu", id, 2_000, 302_000).await.expect("claim"),
            "ids are per sender"
        );
        // After the window the id may be used again (the timestamp check refuses old envelopes).
        assert!(
            guard
                .claim("intake", id, 301_000, 601_000)
                .await
                .expect("claim")
        );
        assert_eq!(guard.purge(400_000).await.expect("purge"), 1, "sdu's claim");
        assert_eq!(
            guard.purge(700_000).await.expect("purge"),
            1,
            "intake's claim"
        );

        // Many calls with one id at once (one batch or several): exactly one wins.
        let racing: Vec<_> = (0..32)
            .map(|_| {
                let guard = guard.clone();
                tokio::spawn(async move {
                    guard
                        .claim(
                            "housing",
                            "0191f5a0-3c1e-7b3a-9a52-5d0b5e0f6c12",
                            1_000,
                            301_000,
                        )
                        .await
                        .expect("claim")
                })
            })
            .collect();
        let mut winners = 0;
        for task in racing {
            winners += usize::from(task.await.expect("task"));
        }
        assert_eq!(winners, 1);
    }
);

/// Sends a request to `EchoServerStream` whatever path it was signed for: a relay tampering with
/// the path after signing.
fn to_server_stream(
    mut request: http::Request<tonic::body::Body>,
) -> http::Request<tonic::body::Body> {
    *request.uri_mut() = http::Uri::from_static("/shlyuz.echo.v1.EchoService/EchoServerStream");
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_through_the_signing_layer_passes_and_a_tampered_path_fails() {
    use shlyuz_kit::gateway_client::{SigningService, with_envelope};
    use tower::ServiceExt as _;
    let harness = Harness::start_sqlite("").await;
    let key = std::sync::Arc::new(harness.signing_key("ops"));
    let channel = harness.channel("ops").await;

    let mut signed = EchoServiceClient::new(SigningService::new(channel.clone(), key.clone()));
    let envelope = harness.envelope("OPERATIONS");
    let message_id = envelope.message_id.clone();
    let answer = signed
        .echo(with_envelope(envelope, echo_request("через слой")))
        .await
        .expect("the gateway accepts the layer's signature")
        .into_inner();
    assert_eq!(answer.payload, "через слой");
    assert_eq!(answer.metadata.get(envelope::MESSAGE_ID), Some(&message_id));
    assert_eq!(
        answer.metadata.get(envelope::SENDER).map(String::as_str),
        Some("ops")
    );

    let mut tampered = EchoServiceClient::new(SigningService::new(
        channel.map_request(to_server_stream),
        key,
    ));
    let refused = tampered
        .echo(with_envelope(
            harness.envelope("OPERATIONS"),
            echo_request("signed for Echo"),
        ))
        .await;
    assert_refused(refused, Code::Unauthenticated, "SIGNATURE_INVALID");
    harness.stop().await;
}
