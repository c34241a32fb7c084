//! Accepting a notice: render the template, count the SMS segments and store the notification with
//! its outbox row, inbox item and conversation in one transaction. The gRPC service, OTP and the
//! answers to inbound SMS all send through here.

use std::collections::HashMap;
use std::sync::Arc;

use shlyuz_kit::clock::SharedClock;
use shlyuz_kit::db::Database;
use shlyuz_kit::error::ApiError;

use crate::sms::{Language, segment_count};
use crate::store::{
    self, Accepted, CHANNEL_CABINET, CHANNEL_SMS, NewConversation, NewNotification, NotificationRow,
};
use crate::templates::TemplateCatalog;

/// A validated request to send a notice.
#[derive(Debug, Clone)]
pub struct SendCommand {
    /// Recipient IIN (validated) or empty.
    pub recipient_iin: String,
    /// Recipient phone (normalised E.164) or empty.
    pub recipient_phone: String,
    /// Send by SMS.
    pub sms: bool,
    /// Put into the personal cabinet.
    pub cabinet: bool,
    /// Template id.
    pub template_id: String,
    /// Template parameters.
    pub parameters: HashMap<String, String>,
    /// Language.
    pub language: Language,
    /// Idempotency key, already scoped to the caller.
    pub idempotency_key: String,
    /// Reply window, if any.
    pub conversation: Option<NewConversation>,
}

/// Accepts notices.
#[derive(Clone)]
pub struct Notifier {
    database: Database,
    templates: Arc<TemplateCatalog>,
    clock: SharedClock,
}

impl Notifier {
    /// A notifier over `database`.
    pub fn new(database: Database, templates: Arc<TemplateCatalog>, clock: SharedClock) -> Self {
        Self {
            database,
            templates,
            clock,
        }
    }

    /// The database.
    pub fn database(&self) -> &Database {
        &self.database
    }

    /// The clock.
    pub fn clock(&self) -> &SharedClock {
        &self.clock
    }

    /// The template catalogue.
    pub fn templates(&self) -> &TemplateCatalog {
        &self.templates
    }

    /// Renders and stores `command`; the same idempotency key returns the first notification.
    pub async fn send(&self, command: SendCommand) -> Result<Accepted, ApiError> {
        if let Some(existing) =
            store::find_by_idempotency_key(&self.database, &command.idempotency_key).await?
        {
            return Ok(Accepted {
                notification: existing,
                duplicate: true,
            });
        }
        if !command.sms && !command.cabinet {
            return Err(ApiError::invalid_field(
                "channels",
                "name at least one channel",
            ));
        }
        if command.cabinet && command.recipient_iin.is_empty() {
            return Err(ApiError::invalid_field(
                "recipient_iin",
                "is required for the CABINET channel",
            ));
        }
        if command.sms && command.recipient_iin.is_empty() && command.recipient_phone.is_empty() {
            return Err(ApiError::invalid_field(
                "recipient_phone",
                "give a phone or an IIN for the SMS channel",
            ));
        }
        if command.conversation.is_some() && !command.sms {
            return Err(ApiError::invalid_field(
                "conversation",
                "a reply window needs the SMS channel",
            ));
        }
        let text =
            self.templates
                .render(&command.template_id, command.language, &command.parameters)?;
        let now_ms = self.clock.now_millis();
        let mut channels = Vec::new();
        if command.sms {
            channels.push(CHANNEL_SMS);
        }
        if command.cabinet {
            channels.push(CHANNEL_CABINET);
        }
        let sms_segments = if command.sms {
            i64::try_from(segment_count(&text).1).unwrap_or(i64::MAX)
        } else {
            0
        };
        let row = NotificationRow {
            id: uuid::Uuid::now_v7().to_string(),
            idempotency_key: command.idempotency_key,
            recipient_iin: command.recipient_iin,
            recipient_phone: command.recipient_phone,
            channels: channels.join(","),
            template_id: command.template_id,
            language: command.language.code().to_string(),
            text,
            sms_segments,
            // A cabinet-only notice is delivered by the same transaction that stores it.
            state: if command.sms {
                store::STATE_QUEUED
            } else {
                store::STATE_DELIVERED
            }
            .to_string(),
            attempts: 0,
            failure_reason: String::new(),
            provider_message_id: String::new(),
            conversation_id: if command.conversation.is_some() {
                uuid::Uuid::now_v7().to_string()
            } else {
                String::new()
            },
            accepted_ms: now_ms,
            updated_ms: now_ms,
        };
        let accepted = store::accept(
            &self.database,
            &NewNotification {
                row,
                conversation: command.conversation,
            },
        )
        .await?;
        if !accepted.duplicate {
            tracing::info!(
                notification = %accepted.notification.id,
                template = %accepted.notification.template_id,
                channels = %accepted.notification.channels,
                "notification accepted"
            );
        }
        Ok(accepted)
    }
}
