//! The notify target behind a real gateway with mutual TLS and the shipped default directory:
//! housing sends an offer naming only the IIN, notify finds the phone in the registry through the
//! gateway, the citizen's SMS reply reaches housing's async-channel inbox, and a stray reply is
//! answered.

mod support;

use std::time::Duration;

use prost::Message as _;
use shlyuz::target::Target;
use shlyuz_kit::fixture_people as people;
use shlyuz_proto::gateway::v1 as gateway_pb;
use shlyuz_proto::notify::v1 as pb;
use shlyuz_proto::registry::v1 as registry_pb;
use support::TestSystem;
use tonic::transport::Channel;

/// A valid IIN that no fixture or generated person has, so it has no phone.
const UNKNOWN_IIN: &str = "850101399906";
/// The phone the rules fixture gives [`people::CLEAN_CANDIDATE`].
const CANDIDATE_PHONE: &str = "+77015550010";

async fn start() -> TestSystem {
    support::spawn_system(&[Target::Gateway, Target::Registry, Target::Notify]).await
}

async fn notification(stack: &TestSystem, id: &str, subject: &str) -> pb::Notification {
    let mut client = pb::notification_service_client::NotificationServiceClient::new(
        stack.channel("housing").await,
    );
    client
        .get_notification(stack.signed(
            "housing",
            "/shlyuz.notify.v1.NotificationService/GetNotification",
            "CITIZEN_NOTIFICATION",
            subject,
            pb::GetNotificationRequest { id: id.to_string() },
        ))
        .await
        .expect("get notification")
        .into_inner()
        .notification
        .expect("notification")
}

/// Polls until the notice leaves QUEUED (the worker runs every 20 ms).
async fn settled(stack: &TestSystem, id: &str, subject: &str) -> pb::Notification {
    for _ in 0..250 {
        let notification = notification(stack, id, subject).await;
        if notification.state != pb::NotificationState::Queued as i32 {
            return notification;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("notification {id} stayed queued");
}

const SEND: &str = "/shlyuz.notify.v1.NotificationService/SendNotification";
const RECEIVE_SMS: &str = "/shlyuz.notify.v1.InboundSmsService/ReceiveSms";

fn offer(iin: &str, key: &str, correlation_id: &str) -> pb::SendNotificationRequest {
    pb::SendNotificationRequest {
        recipient_iin: iin.to_string(),
        recipient_phone: String::new(),
        channels: vec![pb::Channel::Sms as i32],
        template_id: "housing.offer".to_string(),
        parameters: [
            ("full_name", "Қасымов Ерлан Серікұлы"),
            ("address", "г. Астана, ул. Кенесары, 10, кв. 5"),
            ("rooms", "2"),
            ("area", "54,3"),
        ]
        .into_iter()
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect(),
        language: pb::Language::Ru as i32,
        idempotency_key: key.to_string(),
        conversation: Some(pb::Conversation {
            reply_participant: "housing".to_string(),
            accepted_reply_codes: (6521..=6527).map(|code| code.to_string()).collect(),
            expires_at_ms: shlyuz_kit::clock::system_clock().now_millis() + 48 * 3600 * 1000,
            correlation_id: correlation_id.to_string(),
        }),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_housing_offer_reply_reaches_housing_through_the_gateway() {
    let stack = start().await;
    let mut notifications = pb::notification_service_client::NotificationServiceClient::new(
        stack.channel("housing").await,
    );
    let sent = notifications
        .send_notification(stack.signed(
            "housing",
            SEND,
            "CITIZEN_NOTIFICATION",
            people::CLEAN_CANDIDATE.iin,
            offer(people::CLEAN_CANDIDATE.iin, "offer-1", "offer-1"),
        ))
        .await
        .expect("send offer")
        .into_inner()
        .notification
        .expect("notification");
    let settled = settled(&stack, &sent.id, people::CLEAN_CANDIDATE.iin).await;
    assert_eq!(
        settled.state,
        pb::NotificationState::Sent as i32,
        "{settled:?}"
    );
    assert_eq!(settled.recipient_phone_masked, "+7******0010");
    let sms = stack.wait_for_sms(1).await;
    assert_eq!(sms.len(), 1);
    assert_eq!(
        sms[0]["to"], CANDIDATE_PHONE,
        "the phone came from the registry"
    );
    assert!(
        sms[0]["text"]
            .as_str()
            .is_some_and(|text| text.contains("6521 – Согласен;"))
    );

    // Without a purpose the gateway refuses housing's call before notify sees it.
    let refused = notifications
        .send_notification(stack.signed(
            "housing",
            SEND,
            "",
            people::CLEAN_CANDIDATE.iin,
            offer(people::CLEAN_CANDIDATE.iin, "offer-x", "offer-x"),
        ))
        .await
        .expect_err("no purpose");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    assert!(
        refused.message().contains("x-shlyuz-purpose"),
        "{refused:?}"
    );

    // The citizen answers; the operator's webhook replay goes through the gateway as `ops`.
    let mut inbound =
        pb::inbound_sms_service_client::InboundSmsServiceClient::new(stack.channel("ops").await);
    let received = inbound
        .receive_sms(stack.signed(
            "ops",
            RECEIVE_SMS,
            "",
            "",
            pb::ReceiveSmsRequest {
                from_phone: CANDIDATE_PHONE.to_string(),
                text: "6521".to_string(),
                provider_message_id: "op-1".to_string(),
            },
        ))
        .await
        .expect("receive sms")
        .into_inner();
    assert_eq!(received.outcome, pb::ReplyOutcome::Routed as i32);

    // Housing finds the reply in its async-channel inbox.
    let mut channel = gateway_pb::async_channel_service_client::AsyncChannelServiceClient::new(
        stack.channel("housing").await,
    );
    let mut reply = None;
    for _ in 0..250 {
        let items = channel
            .get_messages(stack.signed(
                "housing",
                "/shlyuz.gateway.v1.AsyncChannelService/GetMessages",
                "",
                "",
                gateway_pb::GetMessagesRequest { page_size: 10 },
            ))
            .await
            .expect("get messages")
            .into_inner()
            .items;
        if let Some(item) = items
            .into_iter()
            .find(|item| item.payload_type == "shlyuz.notify.v1.SmsReply")
        {
            reply = Some(item);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let item = reply.expect("the reply reached housing");
    let status = item.status.clone().unwrap_or_default();
    assert_eq!(status.sender, "notify");
    assert_eq!(status.correlation_id, "offer-1");
    let reply = pb::SmsReply::decode(item.payload.as_slice()).expect("an SmsReply");
    assert_eq!(reply.code, "6521");
    assert_eq!(reply.correlation_id, "offer-1");
    assert_eq!(reply.notification_id, sent.id);
    assert_eq!(reply.recipient_iin, people::CLEAN_CANDIDATE.iin);
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_phones_fail_and_stray_replies_are_answered() {
    let stack = start().await;
    let mut notifications = pb::notification_service_client::NotificationServiceClient::new(
        stack.channel("housing").await,
    );
    let sent = notifications
        .send_notification(stack.signed(
            "housing",
            SEND,
            "CITIZEN_NOTIFICATION",
            UNKNOWN_IIN,
            offer(UNKNOWN_IIN, "offer-nobody", "offer-nobody"),
        ))
        .await
        .expect("send offer")
        .into_inner()
        .notification
        .expect("notification");
    let settled = settled(&stack, &sent.id, UNKNOWN_IIN).await;
    assert_eq!(settled.state, pb::NotificationState::Failed as i32);
    assert!(
        settled.failure_reason.starts_with("PHONE_NOT_FOUND: "),
        "{settled:?}"
    );

    let mut inbound =
        pb::inbound_sms_service_client::InboundSmsServiceClient::new(stack.channel("ops").await);
    let received = inbound
        .receive_sms(stack.signed(
            "ops",
            RECEIVE_SMS,
            "",
            "",
            pb::ReceiveSmsRequest {
                from_phone: "+77019990000".to_string(),
                text: "6521".to_string(),
                provider_message_id: String::new(),
            },
        ))
        .await
        .expect("receive sms")
        .into_inner();
    assert_eq!(
        received.outcome,
        pb::ReplyOutcome::AnsweredNoConversation as i32
    );
    assert!(!received.answer_notification_id.is_empty());
    let sms = stack.wait_for_sms(1).await;
    assert_eq!(sms.len(), 1, "the stray reply was answered");
    assert_eq!(sms[0]["to"], "+77019990000");
    assert_eq!(
        sms[0]["notification_id"].as_str(),
        Some(received.answer_notification_id.as_str())
    );
    stack.stop().await;
}

const REQUEST_CONSENT: &str = "/shlyuz.registry.v1.ConsentService/RequestConsent";
const CONFIRM_CONSENT: &str = "/shlyuz.registry.v1.ConsentService/ConfirmConsent";
const CONSENT_PURPOSE: &str = "PERSONAL_DATA_CONSENT";

/// The portal asks the registry (through the gateway) for the subject's consent to intake.
async fn request_consent(
    stack: &TestSystem,
    consents: &mut registry_pb::consent_service_client::ConsentServiceClient<Channel>,
    subject: &str,
) -> registry_pb::Consent {
    let now_ms = shlyuz_kit::clock::system_clock().now_millis();
    consents
        .request_consent(stack.signed(
            "jauynger-portal",
            REQUEST_CONSENT,
            CONSENT_PURPOSE,
            subject,
            registry_pb::RequestConsentRequest {
                subject_iin: subject.to_string(),
                participant: "intake".to_string(),
                purpose: "MILITARY_RECRUITMENT".to_string(),
                scopes: vec!["shlyuz.registry.v1.PersonRegistryService".to_string()],
                expire_time_ms: now_ms + 3_600_000,
            },
        ))
        .await
        .expect("request consent")
        .into_inner()
        .consent
        .expect("consent")
}

/// The `count`-th consent SMS (1-based) notify sent to `phone`: its text and its code.
async fn consent_sms(stack: &TestSystem, phone: &str, count: usize) -> (String, String) {
    for _ in 0..250 {
        let consent_texts: Vec<String> = stack
            .sms()
            .into_iter()
            .filter(|sms| sms["to"] == phone)
            .filter_map(|sms| sms["text"].as_str().map(str::to_string))
            .filter(|text| text.contains("келісім"))
            .collect();
        if let Some(text) = consent_texts.get(count - 1) {
            let code = text
                .split(|character: char| !character.is_ascii_digit())
                .find(|part| part.len() == 6)
                .expect("a six-digit code")
                .to_string();
            return (text.clone(), code);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("no consent sms {count} to {phone}");
}

fn wrong_code(code: &str) -> String {
    let last = code
        .chars()
        .last()
        .and_then(|digit| digit.to_digit(10))
        .unwrap_or(0);
    format!("{}{}", &code[..5], (last + 1) % 10)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consent_code_from_notify_confirms_the_consent_the_gateway_checks() {
    use shlyuz_gateway::consent::{ConsentChecker, ConsentQuery, ConsentRefusal, RegistryConsents};
    use shlyuz_kit::error::summarize_status;

    let stack = start().await;
    let subject = people::CLEAN_CANDIDATE.iin;
    let mut consents = registry_pb::consent_service_client::ConsentServiceClient::new(
        stack.channel("jauynger-portal").await,
    );
    let confirm = |consent_id: &str, otp: &str, envelope_subject: &str| {
        stack.signed(
            "jauynger-portal",
            CONFIRM_CONSENT,
            CONSENT_PURPOSE,
            envelope_subject,
            registry_pb::ConfirmConsentRequest {
                consent_id: consent_id.to_string(),
                otp: otp.to_string(),
            },
        )
    };

    // The registry has notify's OtpService send the code; the SMS says who asks and for what, in
    // both languages, and goes to the phone of the mobile citizens database.
    let pending = request_consent(&stack, &mut consents, subject).await;
    assert_eq!(pending.state, registry_pb::ConsentState::Pending as i32);
    let (text, code) = consent_sms(&stack, CANDIDATE_PHONE, 1).await;
    assert!(
        text.contains("Растау коды") && text.contains("Код подтверждения"),
        "{text}"
    );
    assert!(
        text.contains("intake") && text.contains("MILITARY_RECRUITMENT"),
        "{text}"
    );

    // A second consent's code does not confirm the first; a wrong code is notify's attempt.
    let second = request_consent(&stack, &mut consents, subject).await;
    let (_, second_code) = consent_sms(&stack, CANDIDATE_PHONE, 2).await;
    let other_code = if second_code == code {
        wrong_code(&code)
    } else {
        second_code
    };
    let refused = consents
        .confirm_consent(confirm(&pending.consent_id, &other_code, subject))
        .await
        .expect_err("another consent's code");
    let summary = summarize_status(&refused);
    assert_eq!(summary.code, tonic::Code::InvalidArgument);
    assert_eq!(summary.reason, "OTP_CODE_WRONG");
    // Someone else cannot confirm it, even with the right code.
    let refused = consents
        .confirm_consent(confirm(
            &pending.consent_id,
            &code,
            people::CONVICTED_CANDIDATE.iin,
        ))
        .await
        .expect_err("another subject");
    assert_eq!(summarize_status(&refused).reason, "SUBJECT_MISMATCH");

    let active = consents
        .confirm_consent(confirm(&pending.consent_id, &code, subject))
        .await
        .expect("the citizen's code confirms the consent")
        .into_inner()
        .consent
        .expect("consent");
    assert_eq!(active.state, registry_pb::ConsentState::Active as i32);
    let replayed = consents
        .confirm_consent(confirm(&pending.consent_id, &code, subject))
        .await
        .expect_err("a replayed confirmation");
    assert_eq!(summarize_status(&replayed).reason, "CONSENT_NOT_PENDING");
    let listed = consents
        .list_consents(stack.signed(
            "jauynger-portal",
            "/shlyuz.registry.v1.ConsentService/ListConsents",
            CONSENT_PURPOSE,
            subject,
            registry_pb::ListConsentsRequest {
                subject_iin: subject.to_string(),
                ..Default::default()
            },
        ))
        .await
        .expect("list consents")
        .into_inner()
        .consents;
    let second_state = listed
        .iter()
        .find(|consent| consent.consent_id == second.consent_id)
        .map(|consent| consent.state);
    assert_eq!(
        second_state,
        Some(registry_pb::ConsentState::Pending as i32),
        "the wrong code took nothing from the second consent"
    );

    // The gateway's checker, asking the registry directly with the gateway's identity; no cache
    // so that the revocation below is seen on the next call.
    let channel = shlyuz_kit::client::connect(&shlyuz_kit::client::ClientSettings {
        address: stack
            .system
            .address(Target::Registry)
            .expect("the registry runs")
            .to_string(),
        tls: support::pki().tls_files("gateway"),
        server_name: "registry".to_string(),
        connect_timeout: Duration::from_secs(5),
    })
    .await
    .expect("channel to the registry");
    let checker = RegistryConsents::new(channel, Duration::ZERO);
    let now_ms = shlyuz_kit::clock::system_clock().now_millis();
    let query = |participant| ConsentQuery {
        participant,
        subject_iin: subject,
        purpose: "MILITARY_RECRUITMENT",
        consent_id: &pending.consent_id,
        now_ms,
    };
    assert_eq!(checker.check(query("intake")).await, Ok(()));
    assert_eq!(
        checker.check(query("housing")).await,
        Err(ConsentRefusal::Mismatch(pending.consent_id.clone()))
    );
    consents
        .revoke_consent(stack.signed(
            "jauynger-portal",
            "/shlyuz.registry.v1.ConsentService/RevokeConsent",
            CONSENT_PURPOSE,
            subject,
            registry_pb::RevokeConsentRequest {
                consent_id: pending.consent_id.clone(),
            },
        ))
        .await
        .expect("revoke");
    assert_eq!(
        checker.check(query("intake")).await,
        Err(ConsentRefusal::Revoked(pending.consent_id.clone()))
    );
    let unknown = "00000000-0000-4000-8000-000000000000".to_string();
    assert_eq!(
        checker
            .check(ConsentQuery {
                consent_id: &unknown,
                ..query("intake")
            })
            .await,
        Err(ConsentRefusal::Unknown(unknown.clone()))
    );
    stack.stop().await;
}
