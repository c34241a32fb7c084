//! What a caller gets when the service behind a route fails: a service's reasoned status (any
//! code, with `ErrorInfo`) is its answer — passed through unchanged, never retried, and a success
//! of the hop on the breaker — while the gateway's own hop failures (a refused connection, a bare
//! `UNAVAILABLE`) are retried and counted as before. On the sync channel and on async delivery.

mod harness;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use harness::{
    Harness, SCRIPTED, SCRIPTED_STREAM, ScriptedAnswer, echo_request, final_status_within, signed,
};
use prost::Message;
use shlyuz_kit::error::{ApiError, summarize_status};
use shlyuz_proto::gateway::v1::async_channel_service_client::AsyncChannelServiceClient;
use shlyuz_proto::gateway::v1::send_message_request::Target;
use shlyuz_proto::gateway::v1::{DeliveryState, SendMessageRequest, ServiceTarget};
use tonic::Code;
use tonic_types::StatusExt;

const SEND: &str = "/shlyuz.gateway.v1.AsyncChannelService/SendMessage";

/// What a registry adapter answers when its external system did not answer in time, after its
/// own retries.
fn registry_timeout() -> tonic::Status {
    ApiError::unavailable(
        "UPSTREAM_TIMEOUT",
        "the vehicle registry did not answer within 1500 ms (3 attempts)",
    )
    .with_metadata("registry", "vehicles")
    .into()
}

/// What a registry adapter answers for a permanent 4xx of its external system.
fn registry_refusal() -> tonic::Status {
    ApiError::failed_precondition(
        "UPSTREAM_REFUSED",
        "the vehicle registry refused the request: http 404",
    )
    .with_metadata("http_status", "404")
    .into()
}

fn error_metadata(status: &tonic::Status) -> HashMap<String, String> {
    status
        .get_error_details()
        .error_info()
        .map(|info| info.metadata.clone())
        .unwrap_or_default()
}

/// The caller's view of `sent` equals the service's: code, message, every detail byte.
fn assert_passed_through(received: &tonic::Status, sent: &tonic::Status) {
    assert_eq!(received.code(), sent.code(), "{received:?}");
    assert_eq!(received.message(), sent.message(), "{received:?}");
    assert_eq!(received.details(), sent.details(), "{received:?}");
    assert_eq!(
        summarize_status(received).reason,
        summarize_status(sent).reason
    );
    assert_eq!(error_metadata(received), error_metadata(sent));
}

/// Calls the scripted route's unary method as `ops`; returns the status and the message id.
async fn call_scripted(harness: &Harness) -> (Result<String, tonic::Status>, String) {
    let builder = harness.envelope("OPERATIONS");
    let request = signed(harness, "ops", SCRIPTED, &builder, echo_request("x"));
    let mut client = harness.raw_client("ops").await;
    let answer = client
        .unary(SCRIPTED, request)
        .await
        .map(|response| response.into_inner().payload);
    (answer, builder.message_id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_services_reasoned_unavailable_reaches_the_caller_unchanged_after_one_call() {
    let harness = Harness::start_sqlite("").await;
    let sent = registry_timeout();
    harness
        .scripted
        .answer_with(ScriptedAnswer::Status(sent.clone()));

    let (answer, message_id) = call_scripted(&harness).await;
    let received = answer.expect_err("the registry's failure");
    assert_passed_through(&received, &sent);
    assert_eq!(
        error_metadata(&received)
            .get("registry")
            .map(String::as_str),
        Some("vehicles")
    );
    // The route allows 3 attempts of Echo: the registry already retried its external system.
    assert_eq!(harness.scripted.calls(), 1);
    let entry = harness.log_entry("ops", &message_id).await;
    assert_eq!(entry.status_code, Code::Unavailable as i32);
    assert_eq!(entry.reason, "UPSTREAM_TIMEOUT");

    // Details that do not parse as a google.rpc.Status are not the service's reason: bare.
    harness
        .scripted
        .answer_with(ScriptedAnswer::Status(tonic::Status::with_details(
            Code::Unavailable,
            "no healthy upstream",
            bytes::Bytes::from_static(b"\xff\x00 not a google.rpc.Status"),
        )));
    let (answer, _) = call_scripted(&harness).await;
    let unparsed = answer.expect_err("bare unavailable");
    assert_eq!(summarize_status(&unparsed).reason, "UPSTREAM_UNAVAILABLE");
    assert_eq!(harness.scripted.calls(), 4, "retried: three attempts");

    // The gateway's own hop failing is still the gateway's answer: a refused connection.
    let builder = harness.envelope("OPERATIONS");
    let dead_path = "/shlyuz.echo.v1.DeadService/Echo";
    let request = signed(&harness, "ops", dead_path, &builder, echo_request("x"));
    let refused = harness
        .dead_route_client("ops")
        .await
        .unary(dead_path, request)
        .await
        .expect_err("nobody listens");
    assert_eq!(refused.code(), Code::Unavailable);
    assert_eq!(summarize_status(&refused).reason, "UPSTREAM_UNAVAILABLE");
    assert!(refused.message().contains("is unavailable"), "{refused:?}");
    let entry = harness.log_entry("ops", &builder.message_id).await;
    assert_eq!(entry.reason, "UPSTREAM_UNAVAILABLE");
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_services_permanent_refusal_passes_through_and_its_entry_names_the_reason() {
    let harness = Harness::start_sqlite("").await;
    let sent = registry_refusal();

    // Trailers-only, as tonic answers an error.
    harness
        .scripted
        .answer_with(ScriptedAnswer::Status(sent.clone()));
    let (answer, message_id) = call_scripted(&harness).await;
    assert_passed_through(&answer.expect_err("refused"), &sent);
    assert_eq!(harness.scripted.calls(), 1);
    let entry = harness.log_entry("ops", &message_id).await;
    assert_eq!(entry.status_code, Code::FailedPrecondition as i32);
    assert_eq!(entry.reason, "UPSTREAM_REFUSED");

    // The status in trailers after the response headers (read whole before release).
    harness
        .scripted
        .answer_with(ScriptedAnswer::StatusInTrailers(sent.clone()));
    let (answer, message_id) = call_scripted(&harness).await;
    assert_passed_through(&answer.expect_err("refused"), &sent);
    let entry = harness.log_entry("ops", &message_id).await;
    assert_eq!(entry.reason, "UPSTREAM_REFUSED");

    // A server stream that ends with the service's status: the closing entry names its reason.
    let builder = harness.envelope("OPERATIONS");
    let request = signed(
        &harness,
        "ops",
        SCRIPTED_STREAM,
        &builder,
        echo_request("x"),
    );
    let (messages, status) = harness
        .raw_client("ops")
        .await
        .messages_before_status(SCRIPTED_STREAM, request)
        .await;
    assert!(messages.is_empty());
    assert_passed_through(&status, &sent);
    let entries = harness
        .log_entries_for_message("ops", &builder.message_id)
        .await;
    let reasons: Vec<&str> = entries.iter().map(|entry| entry.reason.as_str()).collect();
    assert!(reasons.contains(&"STREAM_OPENED"), "{reasons:?}");
    assert!(reasons.contains(&"UPSTREAM_REFUSED"), "{reasons:?}");
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reasoned_answers_keep_the_breaker_closed_and_a_bare_unavailable_still_opens_it() {
    let harness = Harness::start_sqlite("").await;
    // The route's breaker opens after 3 consecutive failures; 5 reasoned answers in a row.
    let sent = registry_timeout();
    harness
        .scripted
        .answer_with(ScriptedAnswer::Status(sent.clone()));
    for _ in 0..5 {
        let (answer, _) = call_scripted(&harness).await;
        assert_passed_through(&answer.expect_err("the registry's failure"), &sent);
    }
    assert_eq!(harness.scripted.calls(), 5, "each reached the service once");

    // The route still serves everyone.
    harness
        .scripted
        .answer_with(ScriptedAnswer::Ok("still served".to_string()));
    let (answer, _) = call_scripted(&harness).await;
    assert_eq!(answer.expect("served"), "still served");
    assert_eq!(harness.scripted.calls(), 6);

    // A bare UNAVAILABLE (tonic's, a proxy's) is the hop failing: retried, then the breaker opens.
    harness
        .scripted
        .answer_with(ScriptedAnswer::Status(tonic::Status::unavailable(
            "upstream connect error or disconnect/reset before headers",
        )));
    let (answer, message_id) = call_scripted(&harness).await;
    let bare = answer.expect_err("bare unavailable");
    assert_eq!(bare.code(), Code::Unavailable);
    assert_eq!(summarize_status(&bare).reason, "UPSTREAM_UNAVAILABLE");
    assert!(bare.message().contains("reset before headers"), "{bare:?}");
    assert_eq!(harness.scripted.calls(), 9, "three attempts");
    let entry = harness.log_entry("ops", &message_id).await;
    assert_eq!(entry.reason, "UPSTREAM_UNAVAILABLE");
    let (answer, _) = call_scripted(&harness).await;
    let open = answer.expect_err("breaker open");
    assert_eq!(summarize_status(&open).reason, "UPSTREAM_UNAVAILABLE");
    assert!(open.message().contains("circuit breaker"), "{open:?}");
    assert_eq!(harness.scripted.calls(), 9, "refused without a call");
    harness.stop().await;
}

fn to_scripted() -> SendMessageRequest {
    SendMessageRequest {
        target: Some(Target::Service(ServiceTarget {
            service: "shlyuz.echo.v1.ScriptedService".to_string(),
            method: "Echo".to_string(),
        })),
        payload: echo_request("x").encode_to_vec(),
        ..SendMessageRequest::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_async_delivery_keeps_the_targets_reason_and_its_answers_keep_the_breaker_closed() {
    let harness = Harness::start_sqlite("").await;
    let mut client = AsyncChannelServiceClient::new(harness.channel("ops").await);

    // A permanent refusal: NOT_DELIVERED, with the target's code, message and reason.
    let refusal: tonic::Status = ApiError::not_found(
        "VEHICLE_NOT_REGISTERED",
        "no vehicle is registered to this person",
    )
    .into();
    harness
        .scripted
        .answer_with(ScriptedAnswer::Status(refusal.clone()));
    let builder = harness.envelope("OPERATIONS");
    client
        .send_message(signed(&harness, "ops", SEND, &builder, to_scripted()))
        .await
        .expect("accepted");
    let status =
        final_status_within(&mut client, &builder.message_id, Duration::from_secs(10)).await;
    assert_eq!(status.state, DeliveryState::NotDelivered as i32);
    assert_eq!(status.response_code, Code::NotFound as i32);
    assert_eq!(status.response_message, refusal.message());
    assert_eq!(status.reason, "VEHICLE_NOT_REGISTERED");
    let attempts = harness
        .log_entries_for_message("ops", &builder.message_id)
        .await;
    assert!(
        attempts
            .iter()
            .any(|entry| entry.reason == "VEHICLE_NOT_REGISTERED"),
        "{attempts:?}"
    );

    // A transient reasoned answer is attempted again later, and never opens the route's breaker
    // (3 failures) however often it comes.
    harness
        .scripted
        .answer_with(ScriptedAnswer::Status(registry_timeout()));
    let before = harness.scripted.calls();
    let builder = harness.envelope("OPERATIONS");
    client
        .send_message(signed(&harness, "ops", SEND, &builder, to_scripted()))
        .await
        .expect("accepted");
    let deadline = Instant::now() + Duration::from_secs(10);
    while harness.scripted.calls() < before + 5 {
        assert!(
            Instant::now() < deadline,
            "the target got {} attempts",
            harness.scripted.calls() - before
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let waiting = harness::message_status(&mut client, &builder.message_id).await;
    assert_eq!(waiting.state, DeliveryState::OnDelivery as i32);
    assert!(
        waiting.last_error.contains("UPSTREAM_TIMEOUT"),
        "{waiting:?}"
    );
    harness
        .scripted
        .answer_with(ScriptedAnswer::Ok("served".to_string()));
    let (answer, _) = call_scripted(&harness).await;
    assert_eq!(answer.expect("the breaker is closed"), "served");
    let status =
        final_status_within(&mut client, &builder.message_id, Duration::from_secs(10)).await;
    assert_eq!(status.state, DeliveryState::Delivered as i32);
    harness.stop().await;
}
