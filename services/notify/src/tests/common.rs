//! Shared set-up of the notify tests.

#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::inbound::{Forwarded, ReplyForwarder};
use crate::notifier::{Notifier, SendCommand};
use crate::phone::PhoneDirectory;
use crate::provider::{LogProvider, LogSink};
use crate::sms::Language;
use crate::templates::TemplateCatalog;
use crate::worker::{DeliverySettings, DeliveryWorker};
use futures::future::BoxFuture;
use shlyuz_kit::clock::ManualClock;
use shlyuz_kit::db::Database;
use shlyuz_kit::iin::{Iin, Sex};
use shlyuz_proto::notify::v1::{DeliveryFailed, SmsReply};

/// A valid IIN for person `serial`.
pub fn iin(serial: u16) -> String {
    let birth = time::macros::date!(1990 - 05 - 17);
    match Iin::from_parts(birth, Sex::Male, serial) {
        Some(iin) => iin.as_str().to_string(),
        None => panic!("serial {serial} gives no valid IIN"),
    }
}

/// The notify parts a test drives by hand.
pub struct Harness {
    pub database: Database,
    pub clock: ManualClock,
    pub notifier: Notifier,
    pub sms: Arc<LogProvider>,
}

pub async fn harness(database: Database) -> Harness {
    database
        .migrate(&crate::MIGRATIONS)
        .await
        .expect("notify migrations");
    let clock = ManualClock::new(time::macros::datetime!(2026-11-25 09:00 UTC));
    let notifier = Notifier::new(
        database.clone(),
        Arc::new(TemplateCatalog::embedded().expect("templates")),
        clock.shared(),
    );
    Harness {
        database,
        clock,
        notifier,
        sms: Arc::new(LogProvider::new(LogSink::Memory, true)),
    }
}

impl Harness {
    /// A worker over the recording log provider and `phones`.
    pub fn worker(
        &self,
        phones: Arc<dyn PhoneDirectory>,
        settings: DeliverySettings,
    ) -> DeliveryWorker {
        DeliveryWorker::new(
            self.database.clone(),
            self.sms.clone(),
            phones,
            self.clock.shared(),
            settings,
        )
    }
}

/// Retry settings with small numbers, for tests that advance the clock.
pub fn fast_retries(max_attempts: u32) -> DeliverySettings {
    DeliverySettings {
        max_attempts,
        base_backoff_ms: 1_000,
        max_backoff_ms: 8_000,
        lease_ms: 30_000,
        batch_size: 16,
        concurrency: 4,
        poll_interval_ms: 10,
    }
}

/// An SMS command for a housing-offer-like jauynger notice.
pub fn status_sms(phone: &str, iin: &str, key: &str) -> SendCommand {
    SendCommand {
        recipient_iin: iin.to_string(),
        recipient_phone: phone.to_string(),
        sms: true,
        cabinet: false,
        template_id: "jauynger.status.accepted".to_string(),
        parameters: [("application_number".to_string(), "J-2026-0001".to_string())]
            .into_iter()
            .collect(),
        language: Language::Ru,
        idempotency_key: key.to_string(),
        conversation: None,
    }
}

/// Phones by IIN, as the mobile citizens database would answer; `None` entries fail the look-up.
#[derive(Default)]
pub struct MapDirectory {
    pub phones: HashMap<String, Option<String>>,
}

impl PhoneDirectory for MapDirectory {
    fn lookup<'a>(&'a self, iin: &'a str) -> BoxFuture<'a, Result<Option<String>, String>> {
        Box::pin(async move {
            match self.phones.get(iin) {
                Some(Some(phone)) => Ok(Some(phone.clone())),
                Some(None) => Err("gateway unavailable".to_string()),
                None => Ok(None),
            }
        })
    }
}

/// Records forwarded replies and delivery failures; fails while `down` is set.
#[derive(Default)]
pub struct RecordingForwarder {
    pub down: AtomicBool,
    pub forwarded: Mutex<Vec<(String, String, String, Forwarded)>>,
}

impl RecordingForwarder {
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    /// The forwarded replies: (participant, message id, correlation id, reply).
    pub fn forwarded(&self) -> Vec<(String, String, String, SmsReply)> {
        self.forwarded
            .lock()
            .expect("lock")
            .iter()
            .filter_map(
                |(participant, message_id, correlation_id, message)| match message {
                    Forwarded::Reply(reply) => Some((
                        participant.clone(),
                        message_id.clone(),
                        correlation_id.clone(),
                        reply.clone(),
                    )),
                    Forwarded::DeliveryFailed(_) => None,
                },
            )
            .collect()
    }

    /// The forwarded delivery failures: (participant, failure).
    pub fn failures(&self) -> Vec<(String, DeliveryFailed)> {
        self.forwarded
            .lock()
            .expect("lock")
            .iter()
            .filter_map(|(participant, _, _, message)| match message {
                Forwarded::DeliveryFailed(failure) => Some((participant.clone(), failure.clone())),
                Forwarded::Reply(_) => None,
            })
            .collect()
    }
}

impl ReplyForwarder for RecordingForwarder {
    fn forward<'a>(
        &'a self,
        participant: &'a str,
        message_id: &'a str,
        correlation_id: &'a str,
        message: &'a Forwarded,
    ) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            if self.down.load(Ordering::SeqCst) {
                return Err("gateway unavailable".to_string());
            }
            self.forwarded.lock().expect("lock").push((
                participant.to_string(),
                message_id.to_string(),
                correlation_id.to_string(),
                message.clone(),
            ));
            Ok(())
        })
    }
}

/// A provider that hands the SMS over, then never answers: the worker's process dies between the
/// send and saving its result. `handed_over` fires once the SMS has left.
pub struct DiesAfterSend {
    pub inner: Arc<dyn crate::provider::SmsProvider>,
    pub handed_over: Arc<tokio::sync::Notify>,
}

impl crate::provider::SmsProvider for DiesAfterSend {
    fn send<'a>(
        &'a self,
        sms: &'a crate::provider::OutgoingSms,
    ) -> BoxFuture<'a, Result<String, crate::provider::ProviderError>> {
        Box::pin(async move {
            let _ = self.inner.send(sms).await;
            self.handed_over.notify_one();
            futures::future::pending().await
        })
    }

    fn name(&self) -> &'static str {
        "dies-after-send"
    }
}

/// Runs one pass of a worker over `provider` that dies right after the provider took the SMS:
/// nothing of the pass is saved, as when the process is killed there.
pub async fn pass_killed_after_send(
    harness: &Harness,
    provider: Arc<dyn crate::provider::SmsProvider>,
    settings: DeliverySettings,
) {
    let handed_over = Arc::new(tokio::sync::Notify::new());
    let worker = DeliveryWorker::new(
        harness.database.clone(),
        Arc::new(DiesAfterSend {
            inner: provider,
            handed_over: handed_over.clone(),
        }),
        Arc::new(crate::phone::NoPhoneDirectory),
        harness.clock.shared(),
        settings,
    );
    let pass = tokio::spawn(async move { worker.run_once().await });
    handed_over.notified().await;
    pass.abort();
    let _ = pass.await;
}
