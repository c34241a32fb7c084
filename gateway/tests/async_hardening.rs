//! The async channel hardened (issue 14): who may receive an outcome (`reply_to`), inbox reads
//! in the subject access log, one form of message id, bounded inbox reads and push streams, a
//! per-sender quota, and every refusal logged with its reason.

mod harness;

use std::time::Duration;

use harness::{Harness, SUBJECT, echo_request, signed};
use prost::Message;
use shlyuz_gateway::envelope::{self, EnvelopeBuilder};
use shlyuz_kit::error::summarize_status;
use shlyuz_proto::gateway::v1::access_log_service_client::AccessLogServiceClient;
use shlyuz_proto::gateway::v1::async_channel_service_client::AsyncChannelServiceClient;
use shlyuz_proto::gateway::v1::message_log_service_client::MessageLogServiceClient;
use shlyuz_proto::gateway::v1::send_message_request::Target;
use shlyuz_proto::gateway::v1::{
    AckMessagesRequest, DeliveryState, GetMessageStatusRequest, GetMessagesRequest,
    ListEntriesRequest, ListSubjectAccessRequest, MessageStatus, SendMessageRequest,
    SendMessageResponse, ServiceTarget, StreamMessagesRequest, SubjectAccess,
};
use tokio_stream::StreamExt;
use tonic::Code;
use tonic::transport::Channel;
use tonic_types::StatusExt;

const SEND: &str = "/shlyuz.gateway.v1.AsyncChannelService/SendMessage";
const ECHO_SERVICE: &str = "shlyuz.echo.v1.EchoService";

/// `stranger` (a certificate of the CA, unregistered in the base directory) registered as a
/// participant that has its own rule for Echo under OPERATIONS and accepts messages from ops —
/// a `reply_to` ops may name — and the access log for ops. Key paths are relative to the
/// directory file, beside which the harness keeps its PKI.
const EXTRA_DIRECTORY: &str = r#"
[[participants]]
id = "stranger"
name = "reply receiver"
signing_public_key = "pki/stranger/signing.pub"
accept_messages_from = ["ops"]

[[rules]]
participant = "stranger"
service = "shlyuz.echo.v1.EchoService"
methods = ["Echo"]
purposes = ["OPERATIONS"]

[[rules]]
participant = "stranger"
service = "shlyuz.gateway.v1.AsyncChannelService"
methods = ["*"]
"#;

/// A harness whose directory registers `stranger` (see [`EXTRA_DIRECTORY`]).
async fn start(database: shlyuz_kit::db::Database) -> Harness {
    start_with(database, harness::fast_async_settings()).await
}

async fn start_with(
    database: shlyuz_kit::db::Database,
    settings: shlyuz_gateway::GatewaySettings,
) -> Harness {
    let extra = format!("{EXTRA_DIRECTORY}{}", harness::ACCESS_LOG_ROUTE);
    Harness::start_custom(database, &extra, true, settings).await
}

fn to_echo(text: &str) -> SendMessageRequest {
    SendMessageRequest {
        target: Some(Target::Service(ServiceTarget {
            service: ECHO_SERVICE.to_string(),
            method: "Echo".to_string(),
        })),
        payload: echo_request(text).encode_to_vec(),
        ..SendMessageRequest::default()
    }
}

fn to_recipient(recipient: &str, payload: Vec<u8>) -> SendMessageRequest {
    SendMessageRequest {
        target: Some(Target::Recipient(recipient.to_string())),
        payload,
        payload_type: "shlyuz.test.v1.Note".to_string(),
        ..SendMessageRequest::default()
    }
}

async fn send(
    harness: &Harness,
    participant: &str,
    builder: &EnvelopeBuilder,
    request: SendMessageRequest,
) -> Result<SendMessageResponse, tonic::Status> {
    let mut client = AsyncChannelServiceClient::new(harness.channel(participant).await);
    client
        .send_message(signed(harness, participant, SEND, builder, request))
        .await
        .map(tonic::Response::into_inner)
}

async fn status_of(
    client: &mut AsyncChannelServiceClient<Channel>,
    message_id: &str,
) -> Result<MessageStatus, tonic::Status> {
    client
        .get_message_status(GetMessageStatusRequest {
            message_id: message_id.to_string(),
        })
        .await
        .map(|response| response.into_inner().status.expect("status"))
}

/// Polls until the message leaves ON_DELIVERY (bounded: 10 s).
async fn final_status(
    client: &mut AsyncChannelServiceClient<Channel>,
    message_id: &str,
) -> MessageStatus {
    for _ in 0..200 {
        let current = status_of(client, message_id).await.expect("status");
        if current.state != DeliveryState::OnDelivery as i32 {
            return current;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("message {message_id} is still on delivery after 10 s");
}

/// The subject's access log as ops reads it (signed, purpose OPERATIONS, naming the subject).
async fn accesses_of(harness: &Harness, subject: &str) -> Vec<SubjectAccess> {
    let read = EnvelopeBuilder {
        purpose: "OPERATIONS".to_string(),
        subject_iin: subject.to_string(),
        ..EnvelopeBuilder::default()
    };
    let request = ListSubjectAccessRequest {
        subject_iin: subject.to_string(),
        page_size: 1000,
        ..ListSubjectAccessRequest::default()
    };
    AccessLogServiceClient::new(harness.channel("ops").await)
        .list_subject_access(signed(
            harness,
            "ops",
            "/shlyuz.gateway.v1.AccessLogService/ListSubjectAccess",
            &read,
            request,
        ))
        .await
        .expect("read the access log")
        .into_inner()
        .accesses
}

fn read_by(accesses: &[SubjectAccess], participant: &str, method: &str) -> bool {
    accesses.iter().any(|access| {
        access.participant_id == participant
            && access.method == method
            && access.service == "shlyuz.gateway.v1.AsyncChannelService"
    })
}

shlyuz_kit::storage_test!(
    reply_to_names_only_a_participant_that_could_ask_itself,
    |database: shlyuz_kit::db::Database| async move {
        let harness = start(database).await;
        let operations = harness.envelope("OPERATIONS");

        // sdu has no rule for Echo and accepts nothing from ops; intake accepts ops but its
        // rule allows MILITARY_RECRUITMENT only; jauynger-portal's outcome may not go to intake,
        // which does not accept messages from it.
        for (sender, builder, reply_to) in [
            ("ops", operations.clone(), "sdu"),
            ("ops", harness.envelope("OPERATIONS"), "intake"),
            ("jauynger-portal", harness.personal_envelope(), "intake"),
        ] {
            let mut request = to_echo("x");
            request.reply_to = reply_to.to_string();
            let refused = send(&harness, sender, &builder, request)
                .await
                .expect_err("reply_to not allowed");
            assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
            assert_eq!(summarize_status(&refused).reason, "REPLY_TO_NOT_ALLOWED");
            // Logged with its reason.
            let entry = harness.log_entry(sender, &builder.message_id).await;
            assert_eq!(
                (entry.status_code, entry.reason.as_str()),
                (Code::PermissionDenied as i32, "REPLY_TO_NOT_ALLOWED")
            );
        }
        // A recipient message has no outcome to send elsewhere.
        let mut to_intake = to_recipient("intake", b"note".to_vec());
        to_intake.reply_to = "stranger".to_string();
        let refused = send(&harness, "ops", &EnvelopeBuilder::default(), to_intake)
            .await
            .expect_err("reply_to on a recipient message");
        assert_eq!(summarize_status(&refused).reason, "REPLY_TO_NOT_ALLOWED");
        assert_eq!(harness.echo.received(), 0, "nothing refused was delivered");

        // The sender itself, named explicitly, and a participant with its own rule that accepts
        // the sender.
        let mut to_self = to_echo("self");
        to_self.reply_to = "ops".to_string();
        send(&harness, "ops", &harness.envelope("OPERATIONS"), to_self)
            .await
            .expect("reply_to the sender");
        let mut to_stranger = to_echo("for the stranger");
        to_stranger.reply_to = "stranger".to_string();
        let builder = harness.envelope("OPERATIONS");
        send(&harness, "ops", &builder, to_stranger)
            .await
            .expect("reply_to a participant that could ask itself");
        let mut ops = AsyncChannelServiceClient::new(harness.channel("ops").await);
        final_status(&mut ops, &builder.message_id).await;
        let mut stranger = AsyncChannelServiceClient::new(harness.channel("stranger").await);
        let items = stranger
            .get_messages(GetMessagesRequest::default())
            .await
            .expect("the stranger's inbox")
            .into_inner()
            .items;
        assert_eq!(items.len(), 1, "{items:?}");
        assert_eq!(
            items[0]
                .status
                .as_ref()
                .map(|status| status.message_id.as_str()),
            Some(builder.message_id.as_str())
        );
        harness.stop().await;
    }
);

shlyuz_kit::storage_test!(
    inbox_reads_name_the_reader_in_the_subjects_access_log,
    |database: shlyuz_kit::db::Database| async move {
        let harness = start(database).await;

        // A RESULT with a personal-data response, read by pull and by status.
        let builder = harness.personal_envelope();
        send(&harness, "jauynger-portal", &builder, to_echo("dossier"))
            .await
            .expect("accepted");
        let mut portal = AsyncChannelServiceClient::new(harness.channel("jauynger-portal").await);
        final_status(&mut portal, &builder.message_id).await;
        let items = portal
            .get_messages(GetMessagesRequest::default())
            .await
            .expect("inbox")
            .into_inner()
            .items;
        assert_eq!(items.len(), 1);

        // A MESSAGE about the subject, pushed to intake.
        let mut intake = AsyncChannelServiceClient::new(harness.channel("intake").await);
        let mut pushed = intake
            .stream_messages(StreamMessagesRequest::default())
            .await
            .expect("stream")
            .into_inner();
        let about = EnvelopeBuilder {
            purpose: "OPERATIONS".to_string(),
            subject_iin: SUBJECT.to_string(),
            ..EnvelopeBuilder::default()
        };
        send(
            &harness,
            "ops",
            &about,
            to_recipient("intake", b"about the subject".to_vec()),
        )
        .await
        .expect("accepted");
        let item = tokio::time::timeout(Duration::from_secs(5), pushed.next())
            .await
            .expect("pushed within 5 s")
            .expect("an item")
            .expect("not an error");
        assert_eq!(
            item.item
                .and_then(|item| item.status)
                .map(|status| status.subject_iin),
            Some(SUBJECT.to_string())
        );

        let accesses = accesses_of(&harness, SUBJECT).await;
        assert!(
            read_by(&accesses, "jauynger-portal", "GetMessages"),
            "{accesses:?}"
        );
        assert!(
            read_by(&accesses, "jauynger-portal", "GetMessageStatus"),
            "{accesses:?}"
        );
        assert!(
            read_by(&accesses, "intake", "StreamMessages"),
            "{accesses:?}"
        );
        drop(pushed);
        harness.stop().await;
    }
);

/// `builder` signed (the canonical string holds the id in lower case, as documented) and sent
/// with the message id spelled `sent_id`.
fn signed_with_id(
    harness: &Harness,
    participant: &str,
    builder: &EnvelopeBuilder,
    sent_id: &str,
    request: SendMessageRequest,
) -> tonic::Request<SendMessageRequest> {
    let mut signed_request = signed(harness, participant, SEND, builder, request);
    signed_request.metadata_mut().insert(
        envelope::MESSAGE_ID,
        sent_id.parse().expect("ascii message id"),
    );
    signed_request
}

shlyuz_kit::storage_test!(
    a_message_id_is_one_message_in_upper_and_lower_case,
    |database: shlyuz_kit::db::Database| async move {
        let harness = start(database).await;
        let lower = harness.envelope("OPERATIONS");
        let upper_id = lower.message_id.to_uppercase();
        assert_ne!(upper_id, lower.message_id);
        let mut client = AsyncChannelServiceClient::new(harness.channel("ops").await);

        let first = client
            .send_message(signed_with_id(
                &harness,
                "ops",
                &lower,
                &upper_id,
                to_echo("once"),
            ))
            .await
            .expect("sent in upper case")
            .into_inner();
        assert!(!first.duplicate);
        assert_eq!(
            first
                .receipt
                .as_ref()
                .map(|receipt| receipt.message_id.as_str()),
            Some(lower.message_id.as_str())
        );
        let resent = EnvelopeBuilder {
            timestamp: envelope::format_timestamp(time::OffsetDateTime::now_utc()),
            ..lower.clone()
        };
        let second = client
            .send_message(signed(&harness, "ops", SEND, &resent, to_echo("once")))
            .await
            .expect("sent again in lower case")
            .into_inner();
        assert!(second.duplicate, "{second:?}");

        let delivered = final_status(&mut client, &upper_id).await;
        assert_eq!(delivered.state, DeliveryState::Delivered as i32);
        assert_eq!(delivered.message_id, lower.message_id);
        let by_lower = status_of(&mut client, &lower.message_id)
            .await
            .expect("found by the lower-case id");
        assert_eq!(by_lower.accepted_at_ms, delivered.accepted_at_ms);
        assert_eq!(
            harness.echo.calls_by_message_id().get(&lower.message_id),
            Some(&1)
        );
        let malformed = status_of(&mut client, "not-a-uuid")
            .await
            .expect_err("not a message id");
        assert_eq!(summarize_status(&malformed).fields, vec!["message_id"]);
        harness.stop().await;
    }
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_messages_stays_within_the_routes_response_limit() {
    let harness = Harness::start_sqlite("").await;
    // The harness's routes let 65,536 response bytes out: three 20,000-byte messages fit, a
    // fourth would not.
    let mut sent = Vec::new();
    for number in 0..5 {
        let builder = EnvelopeBuilder::default();
        send(
            &harness,
            "ops",
            &builder,
            to_recipient("intake", vec![b'a' + number; 20_000]),
        )
        .await
        .expect("accepted");
        sent.push(builder.message_id);
    }
    let mut intake = AsyncChannelServiceClient::new(harness.channel("intake").await);
    let first = intake
        .get_messages(GetMessagesRequest::default())
        .await
        .expect("a page within the limit")
        .into_inner()
        .items;
    assert_eq!(first.len(), 3, "oldest first, as many as fit");
    intake
        .ack_messages(AckMessagesRequest {
            item_ids: first.iter().map(|item| item.item_id.clone()).collect(),
        })
        .await
        .expect("ack");
    let rest = intake
        .get_messages(GetMessagesRequest::default())
        .await
        .expect("the rest")
        .into_inner()
        .items;
    assert_eq!(rest.len(), 2);
    assert_eq!(rest[0].payload, vec![b'd'; 20_000]);
    intake
        .ack_messages(AckMessagesRequest {
            item_ids: rest.iter().map(|item| item.item_id.clone()).collect(),
        })
        .await
        .expect("ack");

    // One item alone larger than a response may be is refused clearly, naming the item, which
    // can be acknowledged to skip it.
    send(
        &harness,
        "ops",
        &EnvelopeBuilder::default(),
        to_recipient("intake", vec![b'z'; 65_400]),
    )
    .await
    .expect("accepted: within the request limit");
    let refused = intake
        .get_messages(GetMessagesRequest::default())
        .await
        .expect_err("too large for one response");
    assert_eq!(refused.code(), Code::ResourceExhausted);
    assert_eq!(summarize_status(&refused).reason, "MESSAGE_TOO_LARGE");
    let item_id = refused
        .get_error_details()
        .error_info()
        .and_then(|info| info.metadata.get("item_id").cloned())
        .expect("the item is named");
    let acknowledged = intake
        .ack_messages(AckMessagesRequest {
            item_ids: vec![item_id],
        })
        .await
        .expect("ack")
        .into_inner()
        .acknowledged;
    assert_eq!(acknowledged, 1);
    assert!(
        intake
            .get_messages(GetMessagesRequest::default())
            .await
            .expect("empty")
            .into_inner()
            .items
            .is_empty()
    );
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_stream_ends_at_its_deadline() {
    let harness = Harness::start_sqlite("").await;
    let mut intake = AsyncChannelServiceClient::new(harness.channel("intake").await);

    // The caller's deadline.
    let mut request = tonic::Request::new(StreamMessagesRequest::default());
    request.set_timeout(Duration::from_millis(700));
    let mut stream = intake
        .stream_messages(request)
        .await
        .expect("stream")
        .into_inner();
    let ended = tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .expect("the stream ends by itself")
        .expect("a status")
        .expect_err("ended at the deadline");
    assert_eq!(ended.code(), Code::DeadlineExceeded, "{ended:?}");
    assert_eq!(summarize_status(&ended).reason, "STREAM_DEADLINE");
    // The stream's closing entry says why it ended.
    let entries = MessageLogServiceClient::new(harness.channel("ops").await)
        .list_entries(ListEntriesRequest {
            sender: "intake".to_string(),
            method: "StreamMessages".to_string(),
            page_size: 10,
            ..ListEntriesRequest::default()
        })
        .await
        .expect("list entries")
        .into_inner()
        .entries;
    assert!(
        entries
            .iter()
            .any(|entry| entry.status_code == Code::DeadlineExceeded as i32
                && entry.reason == "STREAM_DEADLINE"),
        "{entries:?}"
    );

    // Without one, the route's timeout (2 s in the harness) bounds it.
    let mut unbounded = intake
        .stream_messages(StreamMessagesRequest::default())
        .await
        .expect("stream")
        .into_inner();
    let ended = tokio::time::timeout(Duration::from_secs(6), unbounded.next())
        .await
        .expect("the route's timeout ends the stream")
        .expect("a status")
        .expect_err("ended at the route's timeout");
    assert_eq!(summarize_status(&ended).reason, "STREAM_DEADLINE");
    harness.stop().await;
}

fn metric(harness: &Harness, name: &str) -> f64 {
    harness
        .metrics
        .encode()
        .lines()
        .find_map(|line| {
            let (key, value) = line.split_once(' ')?;
            (key == name).then(|| value.parse().ok())?
        })
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_streams_share_one_inbox_poller() {
    let harness = Harness::start_sqlite("").await;
    let mut streams = Vec::new();
    for participant in ["intake", "ops"] {
        let mut client = AsyncChannelServiceClient::new(harness.channel(participant).await);
        for _ in 0..15 {
            streams.push(
                client
                    .stream_messages(StreamMessagesRequest::default())
                    .await
                    .expect("stream")
                    .into_inner(),
            );
        }
    }
    assert_eq!(metric(&harness, "shlyuz_gateway_async_inbox_streams"), 30.0);

    // Over one second with nothing arriving, the poller (every 250 ms with the harness's
    // settings) reads the two inboxes a handful of times — not once per stream.
    let before = metric(&harness, "shlyuz_gateway_async_inbox_stream_reads_total");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let reads = metric(&harness, "shlyuz_gateway_async_inbox_stream_reads_total") - before;
    assert!(
        (1.0..=16.0).contains(&reads),
        "{reads} inbox reads in 1 s for 30 streams of 2 participants"
    );

    // Every stream still gets what arrives.
    send(
        &harness,
        "ops",
        &EnvelopeBuilder::default(),
        to_recipient("intake", b"to every intake stream".to_vec()),
    )
    .await
    .expect("accepted");
    for stream in streams.iter_mut().take(15) {
        let item = tokio::time::timeout(Duration::from_secs(5), stream.next())
            .await
            .expect("pushed within 5 s")
            .expect("an item")
            .expect("not an error");
        assert_eq!(
            item.item.map(|item| item.payload),
            Some(b"to every intake stream".to_vec())
        );
    }
    drop(streams);
    harness.stop().await;
}

fn quota_settings(messages: u64, bytes: u64) -> shlyuz_gateway::GatewaySettings {
    let mut settings = harness::fast_async_settings();
    settings.async_channel.quota_messages = messages;
    settings.async_channel.quota_bytes = bytes;
    settings
}

shlyuz_kit::storage_test!(
    a_sender_has_a_bounded_number_of_messages_in_flight,
    |database: shlyuz_kit::db::Database| async move {
        let harness = start_with(database, quota_settings(3, 1_000_000)).await;
        // Messages to a recipient stay on delivery until it acknowledges them.
        let mut first = None;
        for _ in 0..3 {
            let builder = EnvelopeBuilder::default();
            send(
                &harness,
                "ops",
                &builder,
                to_recipient("intake", b"n".to_vec()),
            )
            .await
            .expect("within the quota");
            first.get_or_insert(builder);
        }
        let over = EnvelopeBuilder::default();
        let refused = send(
            &harness,
            "ops",
            &over,
            to_recipient("intake", b"n".to_vec()),
        )
        .await
        .expect_err("over the quota");
        assert_eq!(refused.code(), Code::ResourceExhausted);
        assert_eq!(summarize_status(&refused).reason, "ASYNC_QUOTA_EXCEEDED");
        let entry = harness.log_entry("ops", &over.message_id).await;
        assert_eq!(entry.reason, "ASYNC_QUOTA_EXCEEDED");

        // A message already accepted still gets its receipt; another sender is not affected.
        let first = first.expect("first");
        let resent = EnvelopeBuilder {
            timestamp: envelope::format_timestamp(time::OffsetDateTime::now_utc()),
            ..first.clone()
        };
        let again = send(
            &harness,
            "ops",
            &resent,
            to_recipient("intake", b"n".to_vec()),
        )
        .await
        .expect("the first receipt");
        assert!(again.duplicate);
        send(
            &harness,
            "jauynger-portal",
            &harness.personal_envelope(),
            to_echo("other sender"),
        )
        .await
        .expect("another sender's quota");

        // Acknowledged messages make room again (within the quota's refresh of 1 s).
        let mut intake = AsyncChannelServiceClient::new(harness.channel("intake").await);
        let items = intake
            .get_messages(GetMessagesRequest::default())
            .await
            .expect("inbox")
            .into_inner()
            .items;
        intake
            .ack_messages(AckMessagesRequest {
                item_ids: items.iter().map(|item| item.item_id.clone()).collect(),
            })
            .await
            .expect("ack");
        let mut accepted = false;
        for _ in 0..40 {
            let retry = EnvelopeBuilder::default();
            match send(
                &harness,
                "ops",
                &retry,
                to_recipient("intake", b"n".to_vec()),
            )
            .await
            {
                Ok(_) => {
                    accepted = true;
                    break;
                }
                Err(status) => {
                    assert_eq!(summarize_status(&status).reason, "ASYNC_QUOTA_EXCEEDED");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        assert!(accepted, "room again after the acknowledgements");
        harness.stop().await;
    }
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sender_has_a_bounded_number_of_bytes_in_flight() {
    let test_database = shlyuz_kit::db::testing::TestDatabase::sqlite().await;
    let harness = start_with(test_database.database().clone(), quota_settings(100, 1_000)).await;
    send(
        &harness,
        "ops",
        &EnvelopeBuilder::default(),
        to_recipient("intake", vec![1; 600]),
    )
    .await
    .expect("600 of 1,000 bytes");
    let refused = send(
        &harness,
        "ops",
        &EnvelopeBuilder::default(),
        to_recipient("intake", vec![2; 600]),
    )
    .await
    .expect_err("1,200 of 1,000 bytes");
    assert_eq!(summarize_status(&refused).reason, "ASYNC_QUOTA_EXCEEDED");
    send(
        &harness,
        "ops",
        &EnvelopeBuilder::default(),
        to_recipient("intake", vec![3; 400]),
    )
    .await
    .expect("exactly 1,000 bytes");
    harness.stop().await;
    test_database.cleanup().await;
}

shlyuz_kit::storage_test!(
    send_message_refusals_are_logged_with_their_reason,
    |database: shlyuz_kit::db::Database| async move {
        let harness = Harness::start(database, "").await;
        let mut outside_rule = to_echo("x");
        if let Some(Target::Service(target)) = outside_rule.target.as_mut() {
            target.method = "EchoServerStream".to_string();
        }
        let no_subject = EnvelopeBuilder {
            purpose: "MILITARY_RECRUITMENT".to_string(),
            ..EnvelopeBuilder::default()
        };
        let mut too_late = to_echo("x");
        too_late.expires_at_ms = i64::MAX / 2;
        let cases = [
            (
                harness.personal_envelope(),
                outside_rule,
                Code::PermissionDenied,
                "ACCESS_DENIED",
            ),
            (
                harness.envelope("HOUSING_ALLOCATION"),
                to_echo("x"),
                Code::PermissionDenied,
                "PURPOSE_NOT_ALLOWED",
            ),
            (
                no_subject,
                to_echo("x"),
                Code::InvalidArgument,
                "INVALID_ARGUMENT",
            ),
            (
                EnvelopeBuilder::default(),
                to_recipient("intake", b"x".to_vec()),
                Code::PermissionDenied,
                "ACCESS_DENIED",
            ),
            (
                harness.personal_envelope(),
                too_late,
                Code::InvalidArgument,
                "INVALID_ARGUMENT",
            ),
        ];
        for (builder, request, code, reason) in cases {
            let refused = send(&harness, "jauynger-portal", &builder, request)
                .await
                .expect_err("refused by the target's rules");
            assert_eq!(
                (refused.code(), summarize_status(&refused).reason.as_str()),
                (code, reason)
            );
            let entry = harness
                .log_entry("jauynger-portal", &builder.message_id)
                .await;
            assert_eq!(
                (entry.status_code, entry.reason.as_str()),
                (code as i32, reason),
                "{entry:?}"
            );
        }

        // A `*` rule grants only the methods the route lists, and no other shape of path.
        for method in ["DeletePerson", "Echo/../Echo", "Echo?admin=1"] {
            let mut request = to_echo("x");
            if let Some(Target::Service(target)) = request.target.as_mut() {
                target.method = method.to_string();
            }
            let builder = harness.envelope("OPERATIONS");
            let refused = send(&harness, "ops", &builder, request)
                .await
                .expect_err("a method the route does not list");
            assert_eq!(
                (refused.code(), summarize_status(&refused).reason.as_str()),
                (Code::Unimplemented, "UNKNOWN_METHOD"),
                "{method}"
            );
            let entry = harness.log_entry("ops", &builder.message_id).await;
            assert_eq!(entry.reason, "UNKNOWN_METHOD");
        }
        assert_eq!(harness.echo.received(), 0, "nothing refused was delivered");
        harness.stop().await;
    }
);
