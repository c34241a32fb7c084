//! The outbox and the delivery worker, on SQLite and PostgreSQL: nothing accepted is lost, one
//! idempotency key sends once, a provider that stays down ends in FAILED with its reason.

use std::sync::Arc;

use crate::notifier::SendCommand;
use crate::phone::NoPhoneDirectory;
use crate::provider::{LogProvider, LogSink, OutgoingSms, ProviderError, SmsProvider};
use crate::sms::Language;
use crate::store;
use crate::tests::common::{
    MapDirectory, fast_retries, harness, iin, pass_killed_after_send, status_sms,
};
use crate::worker::{DeliveryWorker, REASON_PHONE_NOT_FOUND};
use futures::future::BoxFuture;
use shlyuz_kit::db::Database;

/// A provider that is down: every send fails with the same transient reason.
struct DownProvider;

impl SmsProvider for DownProvider {
    fn send<'a>(&'a self, _sms: &'a OutgoingSms) -> BoxFuture<'a, Result<String, ProviderError>> {
        Box::pin(async {
            Err(ProviderError::Transient(
                "sms gateway answered 503 Service Unavailable: maintenance".to_string(),
            ))
        })
    }

    fn name(&self) -> &'static str {
        "down"
    }
}

shlyuz_kit::storage_test!(accepted_sms_is_sent_once, |database: Database| async move {
    let harness = harness(database).await;
    let accepted = harness
        .notifier
        .send(status_sms("+77011234567", &iin(1), "caller/one"))
        .await
        .expect("accepted");
    assert_eq!(accepted.notification.state, store::STATE_QUEUED);
    assert_eq!(
        store::outbox_len(&harness.database).await.expect("outbox"),
        1
    );

    let worker = harness.worker(Arc::new(NoPhoneDirectory), fast_retries(3));
    let report = worker.run_once().await.expect("pass");
    assert_eq!(report.sent, 1);
    let stored = store::get_notification(&harness.database, &accepted.notification.id)
        .await
        .expect("read")
        .expect("stored");
    assert_eq!(stored.state, store::STATE_SENT);
    assert_eq!(stored.attempts, 1);
    assert_eq!(stored.provider_message_id, format!("log-{}", stored.id));
    let sent = harness.sms.sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].phone, "+77011234567");
    assert!(sent[0].text.contains("\"Принято в работу\""));
    // A Russian text is UCS-2: over 70 characters it takes 2 segments.
    assert_eq!(sent[0].segments, 2);
    assert_eq!(
        store::outbox_len(&harness.database).await.expect("outbox"),
        0
    );
    assert_eq!(worker.run_once().await.expect("pass").handled(), 0);
    assert_eq!(harness.sms.sent().len(), 1);
});

shlyuz_kit::storage_test!(
    one_idempotency_key_never_sends_twice,
    |database: Database| async move {
        let harness = harness(database).await;
        let first = harness
            .notifier
            .send(status_sms("+77011234567", &iin(1), "caller/same"))
            .await
            .expect("first");
        let again = harness
            .notifier
            .send(status_sms("+77019999999", &iin(2), "caller/same"))
            .await
            .expect("again");
        assert!(!first.duplicate);
        assert!(again.duplicate);
        assert_eq!(first.notification.id, again.notification.id);
        let worker = harness.worker(Arc::new(NoPhoneDirectory), fast_retries(3));
        worker.run_once().await.expect("pass");
        // Repeating the key after the send still answers with the first notice, and sends nothing.
        let after = harness
            .notifier
            .send(status_sms("+77011234567", &iin(1), "caller/same"))
            .await
            .expect("after");
        assert_eq!(after.notification.id, first.notification.id);
        assert_eq!(after.notification.state, store::STATE_SENT);
        worker.run_once().await.expect("pass");
        let sent = harness.sms.sent();
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].phone, "+77011234567");
    }
);

shlyuz_kit::storage_test!(
    a_worker_that_dies_after_claiming_loses_nothing,
    |database: Database| async move {
        let harness = harness(database).await;
        let accepted = harness
            .notifier
            .send(status_sms("+77011234567", &iin(1), "caller/crash"))
            .await
            .expect("accepted");
        // The first worker claims the row and dies before sending (its lease is 30 s).
        let now = harness.clock.shared();
        let claimed = store::claim_due(
            &harness.database,
            "dead-worker",
            shlyuz_kit::clock::Clock::now_millis(&*now),
            shlyuz_kit::clock::Clock::now_millis(&*now) + 30_000,
            10,
        )
        .await
        .expect("claim");
        assert_eq!(claimed.len(), 1);
        let successor = harness.worker(Arc::new(NoPhoneDirectory), fast_retries(3));
        assert_eq!(
            successor.run_once().await.expect("pass").handled(),
            0,
            "the lease still holds"
        );
        harness.clock.advance(time::Duration::seconds(31));
        let report = successor.run_once().await.expect("pass");
        assert_eq!(report.sent, 1);
        let stored = store::get_notification(&harness.database, &accepted.notification.id)
            .await
            .expect("read")
            .expect("stored");
        assert_eq!(stored.state, store::STATE_SENT);
        assert_eq!(
            stored.attempts, 2,
            "the dead worker's claim counts as an attempt"
        );
        assert_eq!(harness.sms.sent().len(), 1);
        // The dead worker cannot record a send it no longer holds.
        let late = store::mark_sent(
            &harness.database,
            &stored.id,
            "dead-worker",
            "+77011234567",
            "x",
            0,
        )
        .await
        .expect("mark");
        assert!(!late);
    }
);

shlyuz_kit::storage_test!(
    provider_down_retries_with_backoff_then_fails_with_its_reason,
    |database: Database| async move {
        let harness = harness(database).await;
        let accepted = harness
            .notifier
            .send(status_sms("+77011234567", &iin(1), "caller/down"))
            .await
            .expect("accepted");
        let worker = DeliveryWorker::new(
            harness.database.clone(),
            Arc::new(DownProvider),
            Arc::new(NoPhoneDirectory),
            harness.clock.shared(),
            fast_retries(3),
        );
        assert_eq!(worker.run_once().await.expect("pass").retried, 1);
        // Backoff: 1 s after the first failure — nothing is due before.
        harness.clock.advance(time::Duration::milliseconds(999));
        assert_eq!(worker.run_once().await.expect("pass").handled(), 0);
        harness.clock.advance(time::Duration::milliseconds(1));
        assert_eq!(worker.run_once().await.expect("pass").retried, 1);
        // 2 s after the second.
        harness.clock.advance(time::Duration::milliseconds(1_999));
        assert_eq!(worker.run_once().await.expect("pass").handled(), 0);
        harness.clock.advance(time::Duration::milliseconds(1));
        assert_eq!(worker.run_once().await.expect("pass").failed, 1);
        let stored = store::get_notification(&harness.database, &accepted.notification.id)
            .await
            .expect("read")
            .expect("stored");
        assert_eq!(stored.state, store::STATE_FAILED);
        assert_eq!(stored.attempts, 3);
        assert_eq!(
            stored.failure_reason,
            "gave up after 3 attempts: sms gateway answered 503 Service Unavailable: maintenance"
        );
        assert_eq!(
            store::outbox_len(&harness.database).await.expect("outbox"),
            0
        );
    }
);

shlyuz_kit::storage_test!(
    the_phone_comes_from_the_directory_or_the_notice_fails,
    |database: Database| async move {
        let harness = harness(database).await;
        let known = iin(1);
        let unknown = iin(2);
        let flaky = iin(3);
        let mut directory = MapDirectory::default();
        directory
            .phones
            .insert(known.clone(), Some("8 701 555 00 11".to_string()));
        directory.phones.insert(flaky.clone(), None);
        let worker = harness.worker(Arc::new(directory), fast_retries(3));
        let found = harness
            .notifier
            .send(status_sms("", &known, "k/known"))
            .await
            .expect("known");
        let missing = harness
            .notifier
            .send(status_sms("", &unknown, "k/unknown"))
            .await
            .expect("unknown");
        let later = harness
            .notifier
            .send(status_sms("", &flaky, "k/flaky"))
            .await
            .expect("flaky");
        let report = worker.run_once().await.expect("pass");
        assert_eq!((report.sent, report.failed, report.retried), (1, 1, 1));
        let read = |id: String| {
            let database = harness.database.clone();
            async move {
                store::get_notification(&database, &id)
                    .await
                    .expect("read")
                    .expect("stored")
            }
        };
        let found = read(found.notification.id).await;
        assert_eq!(found.state, store::STATE_SENT);
        assert_eq!(found.recipient_phone, "+77015550011");
        let missing = read(missing.notification.id).await;
        assert_eq!(missing.state, store::STATE_FAILED);
        assert_eq!(missing.failure_reason, REASON_PHONE_NOT_FOUND);
        let later = read(later.notification.id).await;
        assert_eq!(
            later.state,
            store::STATE_QUEUED,
            "a failed look-up is retried"
        );
        assert_eq!(harness.sms.sent().len(), 1);
    }
);

shlyuz_kit::storage_test!(
    cabinet_notices_need_no_phone_and_page_newest_first,
    |database: Database| async move {
        let harness = harness(database).await;
        let citizen = iin(7);
        let mut ids = Vec::new();
        for number in 0..5 {
            let accepted = harness
                .notifier
                .send(SendCommand {
                    recipient_iin: citizen.clone(),
                    recipient_phone: String::new(),
                    sms: false,
                    cabinet: true,
                    template_id: "housing.register_removal".to_string(),
                    parameters: [
                        ("finding".to_string(), format!("finding {number}")),
                        ("reason".to_string(), "reason".to_string()),
                    ]
                    .into_iter()
                    .collect(),
                    language: Language::Kk,
                    idempotency_key: format!("sdu/{number}"),
                    conversation: None,
                })
                .await
                .expect("accepted");
            assert_eq!(accepted.notification.state, store::STATE_DELIVERED);
            ids.push(accepted.notification.id);
            harness.clock.advance(time::Duration::seconds(1));
        }
        assert_eq!(
            store::outbox_len(&harness.database).await.expect("outbox"),
            0
        );
        let first = store::list_inbox(&harness.database, &citizen, None, false, 3)
            .await
            .expect("page");
        let first_ids: Vec<&str> = first.iter().map(|item| item.id.as_str()).collect();
        assert_eq!(
            first_ids,
            [ids[4].as_str(), ids[3].as_str(), ids[2].as_str()]
        );
        let second = store::list_inbox(&harness.database, &citizen, Some(&ids[2]), false, 3)
            .await
            .expect("page");
        assert_eq!(second.len(), 2);
        assert_eq!(
            store::unread_count(&harness.database, &citizen)
                .await
                .expect("count"),
            5
        );
        let marked = store::mark_read(
            &harness.database,
            &citizen,
            &[ids[0].clone(), ids[0].clone(), "other".to_string()],
            1,
        )
        .await
        .expect("mark");
        assert_eq!(marked, 1);
        assert_eq!(
            store::unread_count(&harness.database, &citizen)
                .await
                .expect("count"),
            4
        );
        let other = iin(8);
        assert_eq!(
            store::mark_read(&harness.database, &other, &[ids[1].clone()], 1)
                .await
                .expect("mark"),
            0
        );
        let unread = store::list_inbox(&harness.database, &citizen, None, true, 10)
            .await
            .expect("page");
        assert_eq!(unread.len(), 4);
        assert!(unread.iter().all(|item| item.id != ids[0]));
    }
);

/// A provider whose first calls are the slowest, as a busy SMS gateway may be: each call waits
/// less than the one before, and the SMS are recorded in the order their sends finish.
struct SlowerFirstProvider {
    calls: std::sync::atomic::AtomicU64,
    finished: std::sync::Mutex<Vec<(String, String)>>,
}

impl SmsProvider for SlowerFirstProvider {
    fn send<'a>(&'a self, sms: &'a OutgoingSms) -> BoxFuture<'a, Result<String, ProviderError>> {
        Box::pin(async move {
            let call = self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::time::sleep(std::time::Duration::from_millis(
                40_u64.saturating_sub(call * 5),
            ))
            .await;
            self.finished
                .lock()
                .expect("lock")
                .push((sms.phone.clone(), sms.text.clone()));
            Ok(format!("slow-{call}"))
        })
    }

    fn name(&self) -> &'static str {
        "slower-first"
    }
}

shlyuz_kit::storage_test!(
    one_recipients_sms_go_out_in_the_order_they_were_accepted,
    |database: Database| async move {
        let harness = harness(database).await;
        // Two candidates' status changes, interleaved, all in the same millisecond.
        let mut expected: std::collections::HashMap<String, Vec<String>> = Default::default();
        for step in 1..=5 {
            for (serial, phone) in [(1, "+77011111111"), (2, "+77012222222")] {
                let mut command =
                    status_sms(phone, &iin(serial), &format!("candidate{serial}/{step}"));
                command.parameters.insert(
                    "application_number".to_string(),
                    format!("J-{serial}-{step}"),
                );
                harness.notifier.send(command).await.expect("accepted");
                expected
                    .entry(phone.to_string())
                    .or_default()
                    .push(format!("J-{serial}-{step}"));
            }
        }
        let provider = Arc::new(SlowerFirstProvider {
            calls: 0.into(),
            finished: Default::default(),
        });
        let worker = DeliveryWorker::new(
            harness.database.clone(),
            provider.clone(),
            Arc::new(NoPhoneDirectory),
            harness.clock.shared(),
            fast_retries(3),
        );
        assert_eq!(worker.run_once().await.expect("pass").sent, 10);
        let finished = provider.finished.lock().expect("lock").clone();
        for (phone, numbers) in expected {
            let texts: Vec<&String> = finished
                .iter()
                .filter(|(to, _)| *to == phone)
                .map(|(_, text)| text)
                .collect();
            assert_eq!(texts.len(), numbers.len());
            for (text, number) in texts.iter().zip(&numbers) {
                assert!(
                    text.contains(number.as_str()),
                    "{phone}: {text} should be {number}"
                );
            }
        }
    }
);

shlyuz_kit::storage_test!(
    an_sms_handed_over_just_before_a_crash_is_not_sent_again,
    |database: Database| async move {
        let harness = harness(database).await;
        let directory = tempfile::tempdir().expect("temp dir");
        let sms_log = directory.path().join("notify-sms.log");
        let accepted = harness
            .notifier
            .send(status_sms("+77011234567", &iin(1), "caller/crash"))
            .await
            .expect("accepted");
        let settings = fast_retries(3);
        pass_killed_after_send(
            &harness,
            Arc::new(LogProvider::new(LogSink::File(sms_log.clone()), false)),
            settings.clone(),
        )
        .await;
        let unsaved = store::get_notification(&harness.database, &accepted.notification.id)
            .await
            .expect("read")
            .expect("stored");
        assert_eq!(
            unsaved.state,
            store::STATE_QUEUED,
            "the crash lost the result"
        );

        // The restarted process reads its SMS log back; the claim lapses and the SMS is handed
        // over again under the same notification id.
        harness
            .clock
            .advance(time::Duration::milliseconds(settings.lease_ms as i64 + 1));
        let restarted = DeliveryWorker::new(
            harness.database.clone(),
            Arc::new(LogProvider::new(LogSink::File(sms_log.clone()), false)),
            Arc::new(NoPhoneDirectory),
            harness.clock.shared(),
            settings,
        );
        assert_eq!(restarted.run_once().await.expect("pass").sent, 1);
        let stored = store::get_notification(&harness.database, &accepted.notification.id)
            .await
            .expect("read")
            .expect("stored");
        assert_eq!(stored.state, store::STATE_SENT);
        assert_eq!(stored.attempts, 2);
        let lines = std::fs::read_to_string(&sms_log).expect("sms log");
        assert_eq!(
            lines
                .lines()
                .filter(|line| line.contains(&accepted.notification.id))
                .count(),
            1,
            "one SMS, not two: {lines}"
        );
    }
);
