//! The async channel end to end over mutual TLS: accepted at once, delivered durably with the
//! original envelope, outcomes and inbox messages fetched by pull and push, policy applied at send
//! time, duplicates answered with the first receipt, permanent errors and expiry final.

mod harness;

use std::time::Duration;

use harness::{Harness, echo_request, final_status_within, message_status, signed};
use prost::Message;
use shlyuz_gateway::envelope::EnvelopeBuilder;
use shlyuz_kit::error::summarize_status;
use shlyuz_proto::echo::v1::EchoResponse;
use shlyuz_proto::gateway::v1::async_channel_service_client::AsyncChannelServiceClient;
use shlyuz_proto::gateway::v1::send_message_request::Target;
use shlyuz_proto::gateway::v1::{
    AckMessagesRequest, DeliveryState, GetMessageStatusRequest, GetMessagesRequest, InboxItemKind,
    SendMessageRequest, SendMessageResponse, ServiceTarget, StreamMessagesRequest,
};
use tokio_stream::StreamExt;
use tonic::Code;
use tonic::transport::Channel;

const SEND: &str = "/shlyuz.gateway.v1.AsyncChannelService/SendMessage";

fn to_service(service: &str, payload: Vec<u8>) -> SendMessageRequest {
    SendMessageRequest {
        target: Some(Target::Service(ServiceTarget {
            service: service.to_string(),
            method: "Echo".to_string(),
        })),
        payload,
        ..SendMessageRequest::default()
    }
}

fn echo_payload(text: &str, fail_with_code: Code) -> Vec<u8> {
    let mut request = echo_request(text);
    request.fail_with_code = fail_with_code as i32;
    request.encode_to_vec()
}

async fn send(
    harness: &Harness,
    client: &mut AsyncChannelServiceClient<Channel>,
    participant: &str,
    builder: &EnvelopeBuilder,
    request: SendMessageRequest,
) -> Result<SendMessageResponse, tonic::Status> {
    client
        .send_message(signed(harness, participant, SEND, builder, request))
        .await
        .map(tonic::Response::into_inner)
}

shlyuz_kit::storage_test!(
    a_message_is_delivered_with_its_envelope_and_its_result_fetched,
    |database: shlyuz_kit::db::Database| async move {
        let harness = Harness::start(database, "").await;
        let mut client = AsyncChannelServiceClient::new(harness.channel("jauynger-portal").await);
        let builder = EnvelopeBuilder {
            correlation_id: "case-7".to_string(),
            ..harness.personal_envelope()
        };
        let answer = send(
            &harness,
            &mut client,
            "jauynger-portal",
            &builder,
            to_service(
                "shlyuz.echo.v1.EchoService",
                echo_payload("сәлем", Code::Ok),
            ),
        )
        .await
        .expect("accepted");
        let receipt = answer.receipt.expect("receipt");
        assert_eq!(receipt.message_id, builder.message_id);
        assert!(!answer.duplicate);

        let delivered =
            final_status_within(&mut client, &builder.message_id, Duration::from_secs(10)).await;
        assert_eq!(
            delivered.state,
            DeliveryState::Delivered as i32,
            "{delivered:?}"
        );
        assert_eq!(delivered.attempts, 1);
        let response =
            EchoResponse::decode(delivered.response_payload.as_slice()).expect("echo response");
        assert_eq!(response.payload, "сәлем");
        // The target saw the sender's envelope, the gateway's word on the sender, and the channel.
        assert_eq!(
            response.metadata.get("x-shlyuz-message-id"),
            Some(&builder.message_id)
        );
        assert_eq!(
            response.metadata.get("x-shlyuz-sender").map(String::as_str),
            Some("jauynger-portal")
        );
        assert_eq!(
            response
                .metadata
                .get("x-shlyuz-correlation-id")
                .map(String::as_str),
            Some("case-7")
        );
        assert_eq!(
            response
                .metadata
                .get("x-shlyuz-channel")
                .map(String::as_str),
            Some("async")
        );

        // The outcome waits in the sender's inbox until acknowledged.
        let items = client
            .get_messages(GetMessagesRequest::default())
            .await
            .expect("inbox")
            .into_inner()
            .items;
        assert_eq!(items.len(), 1);
        assert_eq!(items[0].kind, InboxItemKind::Result as i32);
        let acknowledged = client
            .ack_messages(AckMessagesRequest {
                item_ids: vec![items[0].item_id.clone()],
            })
            .await
            .expect("ack")
            .into_inner()
            .acknowledged;
        assert_eq!(acknowledged, 1);
        let again = client
            .get_messages(GetMessagesRequest::default())
            .await
            .expect("inbox")
            .into_inner();
        assert!(again.items.is_empty());

        // The delivery attempt is in the message log as an async entry with the subject.
        let entries = harness
            .log_entries_for_message("jauynger-portal", &builder.message_id)
            .await;
        assert!(
            entries.iter().any(|entry| entry.channel == "async"
                && entry.status_code == 0
                && entry.subject_iin == harness::SUBJECT),
            "{entries:?}"
        );
        harness.stop().await;
    }
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_send_returns_the_first_receipt_and_delivers_once() {
    let harness = Harness::start_sqlite("").await;
    let mut client = AsyncChannelServiceClient::new(harness.channel("jauynger-portal").await);
    let builder = harness.personal_envelope();
    let request = to_service("shlyuz.echo.v1.EchoService", echo_payload("once", Code::Ok));
    let first = send(
        &harness,
        &mut client,
        "jauynger-portal",
        &builder,
        request.clone(),
    )
    .await
    .expect("first");
    // The sender retries, re-signing with a fresh timestamp but the same message id.
    let retry_builder = EnvelopeBuilder {
        timestamp: shlyuz_gateway::envelope::format_timestamp(time::OffsetDateTime::now_utc()),
        ..builder.clone()
    };
    let second = send(
        &harness,
        &mut client,
        "jauynger-portal",
        &retry_builder,
        request,
    )
    .await
    .expect("second");
    assert!(second.duplicate);
    assert_eq!(
        second
            .receipt
            .as_ref()
            .map(|receipt| receipt.accepted_at_ms),
        first.receipt.as_ref().map(|receipt| receipt.accepted_at_ms)
    );
    final_status_within(&mut client, &builder.message_id, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        harness.echo.calls_by_message_id().get(&builder.message_id),
        Some(&1)
    );
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permanent_error_ends_not_delivered_with_the_upstream_status() {
    let harness = Harness::start_sqlite("").await;
    let mut client = AsyncChannelServiceClient::new(harness.channel("jauynger-portal").await);
    let builder = harness.personal_envelope();
    send(
        &harness,
        &mut client,
        "jauynger-portal",
        &builder,
        to_service(
            "shlyuz.echo.v1.EchoService",
            echo_payload("x", Code::NotFound),
        ),
    )
    .await
    .expect("accepted");
    let finished =
        final_status_within(&mut client, &builder.message_id, Duration::from_secs(10)).await;
    assert_eq!(finished.state, DeliveryState::NotDelivered as i32);
    assert_eq!(finished.response_code, Code::NotFound as i32);
    assert_eq!(finished.response_message, "echo was told to fail");
    assert_eq!(finished.attempts, 1, "permanent errors are not retried");
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_failures_are_retried_until_the_message_expires() {
    let harness = Harness::start_sqlite("").await;
    let mut client = AsyncChannelServiceClient::new(harness.channel("ops").await);
    let builder = EnvelopeBuilder::default();
    let mut request = to_service("shlyuz.echo.v1.DeadService", echo_payload("x", Code::Ok));
    request.expires_at_ms = time::OffsetDateTime::now_utc().unix_timestamp() * 1000 + 1_500;
    send(&harness, &mut client, "ops", &builder, request)
        .await
        .expect("accepted");
    let finished =
        final_status_within(&mut client, &builder.message_id, Duration::from_secs(10)).await;
    assert_eq!(
        finished.state,
        DeliveryState::DeliveryStopped as i32,
        "{finished:?}"
    );
    assert!(finished.attempts >= 2, "retried: {finished:?}");
    assert!(
        finished.response_message.contains("expired"),
        "{finished:?}"
    );
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_targets_policy_applies_when_a_message_is_sent() {
    let harness = Harness::start_sqlite("").await;
    let mut portal = AsyncChannelServiceClient::new(harness.channel("jauynger-portal").await);

    // jauynger-portal may call Echo but not EchoServerStream.
    let mut request = to_service("shlyuz.echo.v1.EchoService", Vec::new());
    if let Some(Target::Service(target)) = request.target.as_mut() {
        target.method = "EchoServerStream".to_string();
    }
    let status = send(
        &harness,
        &mut portal,
        "jauynger-portal",
        &harness.personal_envelope(),
        request,
    )
    .await
    .expect_err("method outside the rule");
    assert_eq!(summarize_status(&status).reason, "ACCESS_DENIED");

    // Personal data without a subject.
    let no_subject = EnvelopeBuilder {
        purpose: "MILITARY_RECRUITMENT".to_string(),
        ..EnvelopeBuilder::default()
    };
    let status = send(
        &harness,
        &mut portal,
        "jauynger-portal",
        &no_subject,
        to_service("shlyuz.echo.v1.EchoService", echo_payload("x", Code::Ok)),
    )
    .await
    .expect_err("no subject");
    assert_eq!(
        summarize_status(&status).fields,
        vec!["x-shlyuz-subject-iin"]
    );

    // A purpose the rule does not allow.
    let status = send(
        &harness,
        &mut portal,
        "jauynger-portal",
        &harness.envelope("HOUSING_ALLOCATION"),
        to_service("shlyuz.echo.v1.EchoService", echo_payload("x", Code::Ok)),
    )
    .await
    .expect_err("purpose");
    assert_eq!(summarize_status(&status).reason, "PURPOSE_NOT_ALLOWED");

    // Consent required for intake and missing.
    let mut intake = AsyncChannelServiceClient::new(harness.channel("intake").await);
    let status = send(
        &harness,
        &mut intake,
        "intake",
        &harness.personal_envelope(),
        to_service("shlyuz.echo.v1.EchoService", echo_payload("x", Code::Ok)),
    )
    .await
    .expect_err("consent");
    assert_eq!(summarize_status(&status).reason, "CONSENT_REQUIRED");

    // A batch message names one consent per subject: the first subject's consent sent for the
    // second one too is refused, naming the place in the list.
    let other = "850315400025";
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
    let batch = EnvelopeBuilder {
        subject_iin: format!("{},{other}", harness::SUBJECT),
        consent_id: "consent-1,consent-1".to_string(),
        ..harness.personal_envelope()
    };
    let status = send(
        &harness,
        &mut intake,
        "intake",
        &batch,
        to_service("shlyuz.echo.v1.EchoService", echo_payload("x", Code::Ok)),
    )
    .await
    .expect_err("a consent of another subject");
    assert_eq!(summarize_status(&status).reason, "CONSENT_REQUIRED");
    assert!(status.message().contains("subject 2 of 2"), "{status:?}");

    // Unknown service, no target, an expiry in the past, a recipient that does not accept the sender.
    let status = send(
        &harness,
        &mut portal,
        "jauynger-portal",
        &harness.personal_envelope(),
        to_service("shlyuz.nowhere.v1.NoService", Vec::new()),
    )
    .await
    .expect_err("unknown service");
    assert_eq!(summarize_status(&status).reason, "UNKNOWN_SERVICE");
    let status = send(
        &harness,
        &mut portal,
        "jauynger-portal",
        &harness.personal_envelope(),
        SendMessageRequest::default(),
    )
    .await
    .expect_err("no target");
    assert_eq!(summarize_status(&status).fields, vec!["target"]);
    let mut past = to_service("shlyuz.echo.v1.EchoService", echo_payload("x", Code::Ok));
    past.expires_at_ms = 1_000;
    let status = send(
        &harness,
        &mut portal,
        "jauynger-portal",
        &harness.personal_envelope(),
        past,
    )
    .await
    .expect_err("expired");
    assert_eq!(summarize_status(&status).fields, vec!["expires_at_ms"]);
    let to_intake = SendMessageRequest {
        target: Some(Target::Recipient("intake".to_string())),
        payload: b"hello".to_vec(),
        ..SendMessageRequest::default()
    };
    let status = send(
        &harness,
        &mut portal,
        "jauynger-portal",
        &EnvelopeBuilder::default(),
        to_intake,
    )
    .await
    .expect_err("intake accepts messages from ops only");
    assert_eq!(summarize_status(&status).reason, "ACCESS_DENIED");

    assert_eq!(harness.echo.received(), 0, "nothing refused was delivered");
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_participant_receives_messages_by_push_and_acknowledges_them() {
    let harness = Harness::start_sqlite("").await;
    let mut intake = AsyncChannelServiceClient::new(harness.channel("intake").await);
    let mut pushed = intake
        .stream_messages(StreamMessagesRequest::default())
        .await
        .expect("stream")
        .into_inner();

    let mut ops = AsyncChannelServiceClient::new(harness.channel("ops").await);
    let builder = EnvelopeBuilder {
        correlation_id: "reply-6521".to_string(),
        ..EnvelopeBuilder::default()
    };
    let message = SendMessageRequest {
        target: Some(Target::Recipient("intake".to_string())),
        payload: b"6521".to_vec(),
        payload_type: "shlyuz.notify.v1.SmsReply".to_string(),
        ..SendMessageRequest::default()
    };
    send(&harness, &mut ops, "ops", &builder, message)
        .await
        .expect("accepted");

    let item = tokio::time::timeout(Duration::from_secs(5), pushed.next())
        .await
        .expect("pushed within 5 s")
        .expect("an item")
        .expect("not an error")
        .item
        .expect("item");
    assert_eq!(item.kind, InboxItemKind::Message as i32);
    assert_eq!(item.payload, b"6521");
    assert_eq!(item.payload_type, "shlyuz.notify.v1.SmsReply");
    let item_status = item.status.expect("status");
    assert_eq!(
        (
            item_status.sender.as_str(),
            item_status.correlation_id.as_str()
        ),
        ("ops", "reply-6521")
    );
    assert_eq!(
        message_status(&mut ops, &builder.message_id).await.state,
        DeliveryState::OnDelivery as i32
    );

    intake
        .ack_messages(AckMessagesRequest {
            item_ids: vec![item.item_id.clone()],
        })
        .await
        .expect("ack");
    assert_eq!(
        message_status(&mut ops, &builder.message_id).await.state,
        DeliveryState::Delivered as i32
    );
    let unknown = ops
        .get_message_status(GetMessageStatusRequest {
            message_id: uuid::Uuid::now_v7().to_string(),
        })
        .await
        .expect_err("unknown message");
    assert_eq!(summarize_status(&unknown).reason, "MESSAGE_NOT_FOUND");
    harness.stop().await;
}

shlyuz_kit::storage_test!(
    two_gateways_on_one_database_deliver_each_message_once,
    |database: shlyuz_kit::db::Database| async move {
        let harness = Harness::start(database.clone(), "").await;
        let second = harness.second_gateway(database).await;
        let mut client = AsyncChannelServiceClient::new(harness.channel("ops").await);
        let mut message_ids = Vec::new();
        for number in 0..150 {
            let builder = harness.envelope("OPERATIONS");
            let mut payload = echo_request(&format!("m{number}"));
            payload.delay_ms = 5;
            send(
                &harness,
                &mut client,
                "ops",
                &builder,
                to_service("shlyuz.echo.v1.EchoService", payload.encode_to_vec()),
            )
            .await
            .expect("accepted");
            message_ids.push(builder.message_id);
        }
        for message_id in &message_ids {
            assert_eq!(
                final_status_within(&mut client, message_id, Duration::from_secs(10))
                    .await
                    .state,
                DeliveryState::Delivered as i32
            );
        }
        let calls = harness.echo.calls_by_message_id();
        for message_id in &message_ids {
            assert_eq!(
                calls.get(message_id),
                Some(&1),
                "message {message_id} was delivered {:?} times",
                calls.get(message_id)
            );
        }
        second.shutdown().await;
        harness.stop().await;
    }
);
