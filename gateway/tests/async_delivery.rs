//! Async delivery as a failing database, an edited directory and a killed gateway would try it:
//! nothing is DELIVERED without its message-log entry, a message no longer allowed ends
//! DELIVERY_STOPPED with its reason, a crashed delivery is taken over within its own route's
//! claim, and final messages keep no payload and are deleted after their retention.

mod harness;

use std::time::{Duration, Instant};

use harness::{
    Harness, break_message_log, echo_request, fast_async_settings, final_status_within,
    message_status, signed,
};
use prost::Message;
use shlyuz_gateway::envelope::EnvelopeBuilder;
use shlyuz_kit::db::Database;
use shlyuz_kit::error::summarize_status;
use shlyuz_proto::gateway::v1::async_channel_service_client::AsyncChannelServiceClient;
use shlyuz_proto::gateway::v1::send_message_request::Target;
use shlyuz_proto::gateway::v1::{
    AckMessagesRequest, DeliveryState, GetMessagesRequest, SendMessageRequest, ServiceTarget,
};
use sqlx::Row;
use tonic::Code;
use tonic::transport::Channel;

const SEND: &str = "/shlyuz.gateway.v1.AsyncChannelService/SendMessage";
const ECHO_SERVICE: &str = "shlyuz.echo.v1.EchoService";

/// A message for `Echo` that the echo answers after `delay_ms` with `fail_with_code`.
fn to_echo(text: &str, fail_with_code: Code, delay_ms: i64) -> SendMessageRequest {
    let mut request = echo_request(text);
    request.fail_with_code = fail_with_code as i32;
    request.delay_ms = delay_ms as _;
    SendMessageRequest {
        target: Some(Target::Service(ServiceTarget {
            service: ECHO_SERVICE.to_string(),
            method: "Echo".to_string(),
        })),
        payload: request.encode_to_vec(),
        ..SendMessageRequest::default()
    }
}

async fn send(
    harness: &Harness,
    client: &mut AsyncChannelServiceClient<Channel>,
    participant: &str,
    builder: &EnvelopeBuilder,
    request: SendMessageRequest,
) {
    client
        .send_message(signed(harness, participant, SEND, builder, request))
        .await
        .expect("accepted");
}

/// A message as stored, read past the gateway (whose own calls need the message log).
#[derive(Debug)]
struct Stored {
    state: String,
    last_error: String,
    payload_len: usize,
    response_payload: Option<Vec<u8>>,
}

async fn stored(database: &Database, message_id: &str) -> Option<Stored> {
    let row = sqlx::query(
        "SELECT state, last_error, payload, response_payload FROM async_messages WHERE message_id = $1",
    )
    .bind(message_id.to_string())
    .fetch_optional(database.pool())
    .await
    .expect("read the message")?;
    let payload: Vec<u8> = row.try_get("payload").expect("payload");
    Some(Stored {
        state: row.try_get("state").expect("state"),
        last_error: row.try_get("last_error").expect("last_error"),
        payload_len: payload.len(),
        response_payload: row.try_get("response_payload").expect("response_payload"),
    })
}

async fn inbox_items_of(database: &Database, message_id: &str) -> i64 {
    sqlx::query(
        "SELECT COUNT(*) AS items FROM async_inbox i JOIN async_messages m ON m.id = i.message_row_id \
         WHERE m.message_id = $1",
    )
    .bind(message_id.to_string())
    .fetch_one(database.pool())
    .await
    .expect("count inbox items")
    .try_get("items")
    .expect("items")
}

/// Polls the stored row until `done` holds, for at most 10 s.
async fn stored_until(
    database: &Database,
    message_id: &str,
    done: impl Fn(&Stored) -> bool,
) -> Stored {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let current = stored(database, message_id).await.expect("stored");
        if done(&current) {
            return current;
        }
        assert!(Instant::now() < deadline, "still {current:?} after 10 s");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Waits until the echo has received `calls` calls of `message_id` (at most 10 s).
async fn echo_received(harness: &Harness, message_id: &str, calls: u32) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while harness
        .echo
        .calls_by_message_id()
        .get(message_id)
        .copied()
        .unwrap_or(0)
        < calls
    {
        assert!(Instant::now() < deadline, "the echo never got {message_id}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

shlyuz_kit::storage_test!(
    a_delivery_whose_entry_cannot_be_written_is_not_delivered,
    |database: Database| async move {
        let harness = Harness::start(database.clone(), "").await;
        let mut client = AsyncChannelServiceClient::new(harness.channel("jauynger-portal").await);
        let builder = harness.personal_envelope();
        // The echo holds the answer long enough for the log to break while the call runs.
        send(
            &harness,
            &mut client,
            "jauynger-portal",
            &builder,
            to_echo("personal data", Code::Ok, 700),
        )
        .await;
        echo_received(&harness, &builder.message_id, 1).await;
        break_message_log(&database, true).await;

        let retried = stored_until(&database, &builder.message_id, |message| {
            message.last_error.starts_with("MESSAGE_LOG_UNAVAILABLE")
        })
        .await;
        assert_eq!(retried.state, "ON_DELIVERY", "{retried:?}");
        assert_eq!(retried.response_payload, None, "{retried:?}");

        // Once the log is back the message is delivered, and its delivery is in the log.
        break_message_log(&database, false).await;
        let delivered =
            final_status_within(&mut client, &builder.message_id, Duration::from_secs(10)).await;
        assert_eq!(
            delivered.state,
            DeliveryState::Delivered as i32,
            "{delivered:?}"
        );
        assert!(delivered.attempts >= 2, "{delivered:?}");
        let entries = harness
            .log_entries_for_message("jauynger-portal", &builder.message_id)
            .await;
        assert!(
            entries
                .iter()
                .any(|entry| entry.channel == "async" && entry.status_code == 0),
            "{entries:?}"
        );
        harness.stop().await;
    }
);

shlyuz_kit::storage_test!(
    an_acknowledgement_whose_entry_cannot_be_written_acknowledges_nothing,
    |database: Database| async move {
        let harness = Harness::start(database.clone(), "").await;
        let mut ops = AsyncChannelServiceClient::new(harness.channel("ops").await);
        let mut intake = AsyncChannelServiceClient::new(harness.channel("intake").await);
        let builder = EnvelopeBuilder::default();
        let message = SendMessageRequest {
            target: Some(Target::Recipient("intake".to_string())),
            payload: b"6521".to_vec(),
            payload_type: "shlyuz.notify.v1.SmsReply".to_string(),
            ..SendMessageRequest::default()
        };
        send(&harness, &mut ops, "ops", &builder, message).await;
        let items = intake
            .get_messages(GetMessagesRequest::default())
            .await
            .expect("inbox")
            .into_inner()
            .items;
        assert_eq!(items.len(), 1);
        let ack = AckMessagesRequest {
            item_ids: vec![items[0].item_id.clone()],
        };

        break_message_log(&database, true).await;
        let refused = intake
            .ack_messages(ack.clone())
            .await
            .expect_err("no acknowledgement without its entry");
        let summary = summarize_status(&refused);
        assert_eq!(
            (summary.code, summary.reason.as_str()),
            (Code::Unavailable, "MESSAGE_LOG_UNAVAILABLE"),
            "{refused:?}"
        );
        let pending = stored(&database, &builder.message_id)
            .await
            .expect("stored");
        assert_eq!(pending.state, "ON_DELIVERY", "{pending:?}");
        assert_eq!(pending.payload_len, 4, "the recipient may fetch it again");

        break_message_log(&database, false).await;
        let acknowledged = intake
            .ack_messages(ack)
            .await
            .expect("acknowledged")
            .into_inner()
            .acknowledged;
        assert_eq!(acknowledged, 1);
        let delivered = stored(&database, &builder.message_id)
            .await
            .expect("stored");
        assert_eq!(delivered.state, "DELIVERED");
        let entries = harness
            .log_entries_for_message("ops", &builder.message_id)
            .await;
        assert!(
            entries
                .iter()
                .any(|entry| entry.channel == "async" && entry.status_code == 0),
            "{entries:?}"
        );
        harness.stop().await;
    }
);

/// `text` without the `[[participants]]` entry of `participant` and its rules.
fn without_participant(text: String, participant: &str) -> String {
    let mut directory: toml::Table = text.parse().expect("directory toml");
    for (key, field) in [("participants", "id"), ("rules", "participant")] {
        if let Some(toml::Value::Array(entries)) = directory.get_mut(key) {
            entries.retain(|entry| {
                entry.get(field).and_then(toml::Value::as_str) != Some(participant)
            });
        }
    }
    toml::to_string(&directory).expect("directory toml")
}

/// `text` without `participant`'s rule for `service`.
fn without_rule(text: String, participant: &str, service: &str) -> String {
    let mut directory: toml::Table = text.parse().expect("directory toml");
    if let Some(toml::Value::Array(rules)) = directory.get_mut("rules") {
        rules.retain(|rule| {
            rule.get("participant").and_then(toml::Value::as_str) != Some(participant)
                || rule.get("service").and_then(toml::Value::as_str) != Some(service)
        });
    }
    toml::to_string(&directory).expect("directory toml")
}

/// Sends a message whose first attempts fail (the target is unavailable), waits until the echo
/// has seen it, applies `change`, and returns the message's final status and how many calls the
/// echo had got by then.
async fn stopped_after(
    harness: &Harness,
    database: &Database,
    sender: &str,
    builder: &EnvelopeBuilder,
    change: impl FnOnce(),
) -> (Stored, String, u32) {
    let mut client = AsyncChannelServiceClient::new(harness.channel(sender).await);
    send(
        harness,
        &mut client,
        sender,
        builder,
        to_echo("held", Code::Unavailable, 0),
    )
    .await;
    echo_received(harness, &builder.message_id, 1).await;
    change();
    let finished = stored_until(database, &builder.message_id, |message| {
        message.state != "ON_DELIVERY"
    })
    .await;
    let reason: String = sqlx::query("SELECT reason FROM async_messages WHERE message_id = $1")
        .bind(builder.message_id.clone())
        .fetch_one(database.pool())
        .await
        .expect("reason")
        .try_get("reason")
        .expect("reason");
    let calls = harness
        .echo
        .calls_by_message_id()
        .get(&builder.message_id)
        .copied()
        .unwrap_or(0);
    (finished, reason, calls)
}

shlyuz_kit::storage_test!(
    a_message_whose_sender_was_removed_is_stopped_at_delivery,
    |database: Database| async move {
        let harness = Harness::start(database.clone(), "").await;
        let builder = harness.personal_envelope();
        let (finished, reason, calls) =
            stopped_after(&harness, &database, "jauynger-portal", &builder, || {
                harness.edit_directory(|text| without_participant(text, "jauynger-portal"));
            })
            .await;
        assert_eq!(finished.state, "DELIVERY_STOPPED", "{finished:?}");
        assert_eq!(reason, "UNKNOWN_PARTICIPANT");
        assert_eq!(
            finished.payload_len, 0,
            "no payload kept after the final state"
        );
        let entries = harness
            .log_entries_for_message("jauynger-portal", &builder.message_id)
            .await;
        assert!(
            entries
                .iter()
                .any(|entry| entry.reason == "UNKNOWN_PARTICIPANT"),
            "the stop is logged: {entries:?}"
        );
        assert_eq!(
            harness
                .echo
                .calls_by_message_id()
                .get(&builder.message_id)
                .copied(),
            Some(calls),
            "not attempted after it was stopped"
        );
        harness.stop().await;
    }
);

shlyuz_kit::storage_test!(
    a_message_whose_rule_was_removed_is_stopped_with_the_reason_in_its_status,
    |database: Database| async move {
        let harness = Harness::start(database.clone(), "").await;
        let builder = harness.personal_envelope();
        let (finished, reason, _) =
            stopped_after(&harness, &database, "jauynger-portal", &builder, || {
                harness.edit_directory(|text| without_rule(text, "jauynger-portal", ECHO_SERVICE));
            })
            .await;
        assert_eq!(finished.state, "DELIVERY_STOPPED", "{finished:?}");
        assert_eq!(reason, "ACCESS_DENIED");
        // The sender sees why in the status.
        let mut client = AsyncChannelServiceClient::new(harness.channel("jauynger-portal").await);
        let seen = message_status(&mut client, &builder.message_id).await;
        assert_eq!(seen.state, DeliveryState::DeliveryStopped as i32);
        assert_eq!(seen.reason, "ACCESS_DENIED");
        assert_eq!(seen.response_code, Code::PermissionDenied as i32);
        harness.stop().await;
    }
);

shlyuz_kit::storage_test!(
    a_message_whose_consent_was_revoked_is_stopped_at_delivery,
    |database: Database| async move {
        let harness = Harness::start(database.clone(), "").await;
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
        let builder = EnvelopeBuilder {
            consent_id: "consent-1".to_string(),
            ..harness.personal_envelope()
        };
        let (finished, reason, _) = stopped_after(&harness, &database, "intake", &builder, || {
            harness.consents.revoke("consent-1");
        })
        .await;
        assert_eq!(finished.state, "DELIVERY_STOPPED", "{finished:?}");
        assert_eq!(reason, "CONSENT_REQUIRED");
        let mut client = AsyncChannelServiceClient::new(harness.channel("intake").await);
        let seen = message_status(&mut client, &builder.message_id).await;
        assert_eq!(seen.reason, "CONSENT_REQUIRED");
        harness.stop().await;
    }
);

/// A service with a long timeout, so that a claim sized by the longest route would hold ≈600 s.
const SLOW_ROUTE: &str = r#"
[[services]]
name = "shlyuz.echo.v1.SlowReviewService"
upstream = "127.0.0.1:9"
upstream_server_name = "registry"
timeout_ms = 600000
personal_data = false
methods = ["Review"]
"#;

shlyuz_kit::storage_test!(
    a_delivery_killed_on_a_short_route_is_taken_over_within_its_claim_once,
    |database: Database| async move {
        let margin = Duration::from_millis(500);
        let mut held = fast_async_settings();
        held.async_channel.deliver = false;
        held.async_channel.lease_margin = margin;
        let harness = Harness::start_custom(database.clone(), SLOW_ROUTE, true, held).await;
        let mut delivering = fast_async_settings();
        delivering.async_channel.lease_margin = margin;
        let doomed = harness
            .killable_gateway(&database, delivering.clone())
            .await;

        let mut client = AsyncChannelServiceClient::new(harness.channel("jauynger-portal").await);
        let builder = harness.personal_envelope();
        // Echo's route times out after 2 s; the echo answers after 1 s.
        send(
            &harness,
            &mut client,
            "jauynger-portal",
            &builder,
            to_echo("once", Code::Ok, 1000),
        )
        .await;
        echo_received(&harness, &builder.message_id, 1).await;
        doomed.kill();
        let killed_at = Instant::now();

        let restarted = harness
            .second_gateway_with(database.clone(), delivering.clone())
            .await;
        let route_timeout = Duration::from_secs(2);
        let echo_delay = Duration::from_secs(1);
        let bound = route_timeout + margin + delivering.async_channel.retry_max + echo_delay;
        let delivered = final_status_within(
            &mut client,
            &builder.message_id,
            bound + Duration::from_secs(1),
        )
        .await;
        assert_eq!(
            delivered.state,
            DeliveryState::Delivered as i32,
            "{delivered:?}"
        );
        assert!(
            killed_at.elapsed() <= bound + Duration::from_secs(1),
            "delivered {:?} after the kill",
            killed_at.elapsed()
        );
        assert_eq!(delivered.attempts, 2, "{delivered:?}");
        assert_eq!(harness.echo.served(), 1, "answered once");
        let entries = harness
            .log_entries_for_message("jauynger-portal", &builder.message_id)
            .await;
        assert_eq!(
            entries
                .iter()
                .filter(|entry| entry.channel == "async" && entry.status_code == 0)
                .count(),
            1,
            "{entries:?}"
        );
        restarted.shutdown().await;
        harness.stop().await;
    }
);

shlyuz_kit::storage_test!(
    final_messages_keep_no_payload_and_are_deleted_after_their_retention,
    |database: Database| async move {
        let retention = Duration::from_secs(3);
        let mut settings = fast_async_settings();
        settings.async_channel.retention = retention;
        let harness = Harness::start_custom(database.clone(), "", true, settings).await;
        let mut client = AsyncChannelServiceClient::new(harness.channel("jauynger-portal").await);
        let builder = harness.personal_envelope();
        send(
            &harness,
            &mut client,
            "jauynger-portal",
            &builder,
            to_echo("personal data", Code::Ok, 0),
        )
        .await;
        let delivered =
            final_status_within(&mut client, &builder.message_id, Duration::from_secs(10)).await;
        assert_eq!(delivered.state, DeliveryState::Delivered as i32);
        assert!(
            !delivered.response_payload.is_empty(),
            "the outcome waits for the sender"
        );
        let kept = stored(&database, &builder.message_id)
            .await
            .expect("stored");
        assert_eq!(
            kept.payload_len, 0,
            "the sent payload is gone once final: {kept:?}"
        );

        // The sender fetches the outcome; once acknowledged, the response is gone too.
        let items = client
            .get_messages(GetMessagesRequest::default())
            .await
            .expect("inbox")
            .into_inner()
            .items;
        assert_eq!(items.len(), 1);
        client
            .ack_messages(AckMessagesRequest {
                item_ids: vec![items[0].item_id.clone()],
            })
            .await
            .expect("ack");
        let acknowledged = stored(&database, &builder.message_id)
            .await
            .expect("stored");
        assert_eq!(acknowledged.response_payload, None, "{acknowledged:?}");
        assert_eq!(inbox_items_of(&database, &builder.message_id).await, 1);

        // After the retention the message and its inbox item are deleted; the log keeps its
        // entries, without bodies.
        let deadline = Instant::now() + retention + Duration::from_secs(5);
        while stored(&database, &builder.message_id).await.is_some() {
            assert!(Instant::now() < deadline, "not deleted after its retention");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let orphans: i64 = sqlx::query("SELECT COUNT(*) AS items FROM async_inbox")
            .fetch_one(database.pool())
            .await
            .expect("count inbox items")
            .try_get("items")
            .expect("items");
        assert_eq!(orphans, 0);
        let entries = harness
            .log_entries_for_message("jauynger-portal", &builder.message_id)
            .await;
        assert!(
            entries
                .iter()
                .any(|entry| entry.channel == "async" && entry.status_code == 0),
            "{entries:?}"
        );
        let bodies: i64 = sqlx::query(
            "SELECT COUNT(*) AS bodies FROM message_log_entries WHERE request_body IS NOT NULL OR response_body IS NOT NULL",
        )
        .fetch_one(database.pool())
        .await
        .expect("count bodies")
        .try_get("bodies")
        .expect("bodies");
        assert_eq!(bodies, 0);
        harness.stop().await;
    }
);
