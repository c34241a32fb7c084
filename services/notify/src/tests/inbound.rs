//! Inbound SMS on SQLite and PostgreSQL: a valid code for an open conversation reaches its
//! participant (also after the gateway was down), anything else is answered, nothing is dropped.

use std::sync::Arc;
use std::time::Duration;

use crate::inbound::{
    InboundSms, OUTCOME_INVALID_CODE, OUTCOME_NO_CONVERSATION, OUTCOME_ROUTED, ReplyRelay,
};
use crate::notifier::SendCommand;
use crate::phone::NoPhoneDirectory;
use crate::sms::Language;
use crate::store::{self, NewConversation};
use crate::tests::common::{RecordingForwarder, fast_retries, harness, iin};
use shlyuz_kit::db::Database;

const PHONE: &str = "+77011234567";

async fn send_offer(harness: &crate::tests::common::Harness, key: &str) -> String {
    let expires_ms = harness.clock.shared().now_millis() + 48 * 3600 * 1000;
    let accepted = harness
        .notifier
        .send(SendCommand {
            recipient_iin: iin(1),
            recipient_phone: PHONE.to_string(),
            sms: true,
            cabinet: false,
            template_id: "housing.offer".to_string(),
            parameters: [
                ("full_name", "Серіков Асхат"),
                ("address", "г. Астана, ул. Кенесары, 10, кв. 5"),
                ("rooms", "2"),
                ("area", "54,3"),
            ]
            .into_iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect(),
            language: Language::Ru,
            idempotency_key: key.to_string(),
            conversation: Some(NewConversation {
                reply_participant: "housing".to_string(),
                accepted_codes: (6521..=6527).map(|code| code.to_string()).collect(),
                correlation_id: "offer-1".to_string(),
                expires_ms,
            }),
        })
        .await
        .expect("offer accepted");
    accepted.notification.id
}

shlyuz_kit::storage_test!(
    a_valid_code_reaches_the_participant_once,
    |database: Database| async move {
        let harness = harness(database).await;
        let offer = send_offer(&harness, "housing/offer-1").await;
        let worker = harness.worker(Arc::new(NoPhoneDirectory), fast_retries(3));
        worker.run_once().await.expect("offer sent");
        let inbound = InboundSms::new(harness.notifier.clone());
        let forwarder = Arc::new(RecordingForwarder::default());
        let relay = ReplyRelay::new(
            harness.database.clone(),
            forwarder.clone(),
            harness.clock.shared(),
            Duration::from_millis(10),
        );

        let outcome = inbound
            .receive("8 (701) 123-45-67", " 6521 ", "")
            .await
            .expect("received");
        assert_eq!(outcome.outcome, OUTCOME_ROUTED);
        assert!(outcome.answer_notification_id.is_empty());
        assert_eq!(relay.run_once().await.expect("relay"), 1);
        let forwarded = forwarder.forwarded();
        assert_eq!(forwarded.len(), 1);
        let (participant, message_id, correlation_id, reply) = &forwarded[0];
        assert_eq!(participant, "housing");
        assert_eq!(message_id, &outcome.reply_id);
        assert_eq!(correlation_id, "offer-1");
        assert_eq!(reply.code, "6521");
        assert_eq!(reply.notification_id, offer);
        assert_eq!(reply.recipient_iin, iin(1));
        assert_eq!(reply.from_phone, PHONE);
        assert_eq!(relay.run_once().await.expect("relay"), 0, "forwarded once");

        // The window closed with the answer: a second code is answered, not forwarded.
        let second = inbound.receive(PHONE, "6526", "").await.expect("received");
        assert_eq!(second.outcome, OUTCOME_NO_CONVERSATION);
        assert_eq!(relay.run_once().await.expect("relay"), 0);
        assert_eq!(forwarder.forwarded().len(), 1);
    }
);

shlyuz_kit::storage_test!(
    unknown_replies_are_answered_with_the_valid_codes,
    |database: Database| async move {
        let harness = harness(database).await;
        send_offer(&harness, "housing/offer-2").await;
        let worker = harness.worker(Arc::new(NoPhoneDirectory), fast_retries(3));
        worker.run_once().await.expect("offer sent");
        let inbound = InboundSms::new(harness.notifier.clone());

        let malformed = inbound
            .receive(PHONE, "да, согласен", "")
            .await
            .expect("received");
        assert_eq!(malformed.outcome, OUTCOME_INVALID_CODE);
        let unknown_code = inbound.receive(PHONE, "6599", "").await.expect("received");
        assert_eq!(unknown_code.outcome, OUTCOME_INVALID_CODE);
        worker.run_once().await.expect("answers sent");
        let sent = harness.sms.sent();
        assert_eq!(sent.len(), 3);
        assert_eq!(sent[1].phone, PHONE);
        assert_eq!(
            sent[1].text,
            "Ответ не распознан. Отправьте один из кодов: 6521, 6522, 6523, 6524, 6525, 6526, 6527."
        );
        let answer = store::get_notification(&harness.database, &malformed.answer_notification_id)
            .await
            .expect("read")
            .expect("stored");
        assert_eq!(answer.state, store::STATE_SENT);

        // After 48 hours the window is shut: the code is answered, not routed.
        harness.clock.advance(time::Duration::hours(48));
        let late = inbound.receive(PHONE, "6521", "").await.expect("received");
        assert_eq!(late.outcome, OUTCOME_NO_CONVERSATION);
        assert!(!late.answer_notification_id.is_empty());
    }
);

shlyuz_kit::storage_test!(
    a_reply_with_no_conversation_is_answered_once_per_provider_message,
    |database: Database| async move {
        let harness = harness(database).await;
        let inbound = InboundSms::new(harness.notifier.clone());
        let first = inbound
            .receive("+77017770000", "6521", "prov-77")
            .await
            .expect("received");
        assert_eq!(first.outcome, OUTCOME_NO_CONVERSATION);
        assert!(!first.duplicate);
        let retried = inbound
            .receive("+77017770000", "6521", "prov-77")
            .await
            .expect("received");
        assert!(retried.duplicate);
        assert_eq!(retried.reply_id, first.reply_id);
        harness
            .worker(Arc::new(NoPhoneDirectory), fast_retries(3))
            .run_once()
            .await
            .expect("answer sent");
        let sent = harness.sms.sent();
        assert_eq!(sent.len(), 1, "one answer for one provider message");
        assert_eq!(sent[0].phone, "+77017770000");
        assert!(
            sent[0]
                .text
                .starts_with("Бұл нөмірге жауап күтетін ұсыныс жоқ.")
        );
        let bad = inbound
            .receive("12", "6521", "")
            .await
            .expect_err("bad phone");
        assert_eq!(bad.field_violations()[0].field, "from_phone");
    }
);

shlyuz_kit::storage_test!(
    replies_wait_while_the_gateway_is_down,
    |database: Database| async move {
        let harness = harness(database).await;
        send_offer(&harness, "housing/offer-3").await;
        let inbound = InboundSms::new(harness.notifier.clone());
        let forwarder = Arc::new(RecordingForwarder::default());
        forwarder.set_down(true);
        let relay = ReplyRelay::new(
            harness.database.clone(),
            forwarder.clone(),
            harness.clock.shared(),
            Duration::from_millis(10),
        );
        let outcome = inbound.receive(PHONE, "6527", "").await.expect("received");
        assert_eq!(outcome.outcome, OUTCOME_ROUTED);
        assert_eq!(relay.run_once().await.expect("relay"), 0);
        forwarder.set_down(false);
        assert_eq!(relay.run_once().await.expect("relay"), 0, "backing off");
        harness.clock.advance(time::Duration::seconds(1));
        assert_eq!(relay.run_once().await.expect("relay"), 1);
        let forwarded = forwarder.forwarded();
        assert_eq!(forwarded.len(), 1);
        assert_eq!(forwarded[0].3.code, "6527");
        assert_eq!(forwarded[0].1, outcome.reply_id);
    }
);

shlyuz_kit::storage_test!(
    one_sms_posted_twice_at_once_is_one_reply,
    |database: Database| async move {
        let harness = harness(database).await;
        send_offer(&harness, "housing/offer-4").await;
        let inbound = InboundSms::new(harness.notifier.clone());
        let (first, second) = tokio::join!(
            inbound.receive(PHONE, "6521", "prov-dup"),
            inbound.receive(PHONE, "6521", "prov-dup"),
        );
        let first = first.expect("first");
        let second = second.expect("second");
        assert_eq!(first.reply_id, second.reply_id);
        assert_eq!(first.outcome, OUTCOME_ROUTED);
        assert_eq!(second.outcome, OUTCOME_ROUTED);
        let rows: i64 = sqlx::Row::try_get(
            &sqlx::query("SELECT COUNT(*) AS replies FROM inbound_replies")
                .fetch_one(harness.database.pool())
                .await
                .expect("count"),
            "replies",
        )
        .expect("replies");
        assert_eq!(rows, 1);
    }
);

shlyuz_kit::storage_test!(
    two_codes_at_once_route_one_and_answer_the_other,
    |database: Database| async move {
        let harness = harness(database).await;
        send_offer(&harness, "housing/offer-5").await;
        let inbound = InboundSms::new(harness.notifier.clone());
        let (first, second) = tokio::join!(
            inbound.receive(PHONE, "6521", ""),
            inbound.receive(PHONE, "6526", ""),
        );
        let mut outcomes = vec![
            first.expect("first").outcome,
            second.expect("second").outcome,
        ];
        outcomes.sort();
        assert_eq!(outcomes, [OUTCOME_NO_CONVERSATION, OUTCOME_ROUTED]);
    }
);

shlyuz_kit::storage_test!(
    an_offer_that_cannot_be_delivered_is_reported_to_its_participant,
    |database: Database| async move {
        let harness = harness(database).await;
        // No phone given and none in the mobile citizens database: the SMS fails for good.
        let expires_ms = harness.clock.shared().now_millis() + 48 * 3600 * 1000;
        let accepted = harness
            .notifier
            .send(SendCommand {
                recipient_iin: iin(2),
                recipient_phone: String::new(),
                sms: true,
                cabinet: false,
                template_id: "housing.offer".to_string(),
                parameters: [
                    ("full_name", "Серіков Асхат"),
                    ("address", "г. Астана, ул. Кенесары, 10, кв. 5"),
                    ("rooms", "2"),
                    ("area", "54,3"),
                ]
                .into_iter()
                .map(|(name, value)| (name.to_string(), value.to_string()))
                .collect(),
                language: Language::Ru,
                idempotency_key: "housing/offer-2".to_string(),
                conversation: Some(NewConversation {
                    reply_participant: "housing".to_string(),
                    accepted_codes: (6521..=6527).map(|code| code.to_string()).collect(),
                    correlation_id: "offer-2".to_string(),
                    expires_ms,
                }),
            })
            .await
            .expect("offer accepted");
        let worker = harness.worker(Arc::new(NoPhoneDirectory), fast_retries(3));
        assert_eq!(worker.run_once().await.expect("pass").failed, 1);

        let forwarder = Arc::new(RecordingForwarder::default());
        let relay = ReplyRelay::new(
            harness.database.clone(),
            forwarder.clone(),
            harness.clock.shared(),
            Duration::from_millis(10),
        );
        forwarder.set_down(true);
        assert_eq!(
            relay.run_once().await.expect("relay"),
            0,
            "kept while the gateway is down"
        );
        forwarder.set_down(false);
        harness.clock.advance(time::Duration::seconds(5));
        assert_eq!(relay.run_once().await.expect("relay"), 1);
        let failures = forwarder.failures();
        assert_eq!(failures.len(), 1);
        let (participant, failure) = &failures[0];
        assert_eq!(participant, "housing");
        assert_eq!(failure.correlation_id, "offer-2");
        assert_eq!(failure.notification_id, accepted.notification.id);
        assert_eq!(failure.recipient_iin, iin(2));
        assert!(
            failure.reason.starts_with("PHONE_NOT_FOUND"),
            "{}",
            failure.reason
        );
        assert!(forwarder.forwarded().is_empty(), "not a reply");
        assert_eq!(relay.run_once().await.expect("relay"), 0, "reported once");
    }
);
