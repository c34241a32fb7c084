//! The transactional outbox: every SMS offer and personal-cabinet notice is written in the same
//! transaction as the decision it announces; housing is the kit's relay store
//! ([`shlyuz_kit::outbox`]) over its `outbox` table, and the relay hands unsent rows, in order, to
//! notify through the gateway. Without a gateway the rows wait in the outbox and nothing is lost.

use crate::model::HousingError;
use shlyuz_kit::outbox::{DeliveryFailure, Notification, OnFailure, OutboxStore, RelayPolicy};
#[cfg(test)]
use shlyuz_kit::outbox::{OutboxSink, relay_pass};
use sqlx::{Any, Row, Transaction};

use crate::Housing;

/// How housing relays: in order, pages of a hundred drained in one pass; a failure stops the pass
/// and the message is tried again, in order, on the next one; a message notify refuses for good
/// (`INVALID_ARGUMENT`, `FAILED_PRECONDITION`, `PERMISSION_DENIED`) is parked and the relay goes
/// on.
pub const RELAY_POLICY: RelayPolicy = RelayPolicy {
    page_size: 100,
    drain: true,
    on_failure: OnFailure::StopPass,
    park_refusals: true,
};

/// Where an outbox message goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutboxChannel {
    /// An SMS to the phone of the mobile citizens database (seed-003 offer).
    Sms,
    /// The person's personal cabinet (seed-002 removal notice).
    Cabinet,
}

impl OutboxChannel {
    /// The stored value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sms => "SMS",
            Self::Cabinet => "CABINET",
        }
    }
}

/// One message waiting in the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxMessage {
    /// Row id (UUID v7, so ids sort by creation).
    pub id: String,
    /// `SMS` or `CABINET`.
    pub channel: String,
    /// The recipient's IIN.
    pub iin: String,
    /// The recipient's phone (SMS) or empty.
    pub phone: String,
    /// The text as housing rendered it (notify renders the same text from the template).
    pub body: String,
    /// notify's template id (`housing.offer`, `housing.register_removal`).
    pub template_id: String,
    /// The template parameters, a JSON object of strings.
    pub parameters: String,
    /// The reply window's correlation id (the offer id; empty without a reply window).
    pub correlation_id: String,
    /// When the reply window closes, epoch ms UTC (0 without a reply window).
    pub expires_at_ms: i64,
}

/// The template side of a message written with [`enqueue`].
pub(crate) struct OutboxTemplate<'a> {
    /// notify's template id.
    pub template_id: &'a str,
    /// Parameters, a JSON object of strings.
    pub parameters: String,
    /// Correlation id of the reply window, or empty.
    pub correlation_id: &'a str,
    /// End of the reply window, or 0.
    pub expires_at_ms: i64,
}

#[cfg(test)]
/// A message the relay parked because it was refused for good.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefusedMessage {
    /// The message.
    pub message: OutboxMessage,
    /// When it was refused, epoch ms UTC.
    pub refused_at_ms: i64,
    /// Why: the code and message of the refusal.
    pub refusal: String,
}

/// Writes a message into the outbox inside `transaction`.
pub(crate) async fn enqueue(
    transaction: &mut Transaction<'static, Any>,
    now_ms: i64,
    channel: OutboxChannel,
    iin: &str,
    phone: &str,
    body: &str,
    template: &OutboxTemplate<'_>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO outbox (id, created_at_ms, channel, iin, phone, body, template_id, parameters, correlation_id, expires_at_ms)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(uuid::Uuid::now_v7().hyphenated().to_string())
    .bind(now_ms)
    .bind(channel.as_str())
    .bind(iin)
    .bind(phone)
    .bind(body)
    .bind(template.template_id)
    .bind(&template.parameters)
    .bind(template.correlation_id)
    .bind(template.expires_at_ms)
    .execute(&mut **transaction)
    .await?;
    Ok(())
}

/// The columns of an [`OutboxMessage`].
const MESSAGE_COLUMNS: &str =
    "id, channel, iin, phone, body, template_id, parameters, correlation_id, expires_at_ms";

fn message_of(row: &sqlx::any::AnyRow) -> Result<OutboxMessage, sqlx::Error> {
    Ok(OutboxMessage {
        id: row.try_get("id")?,
        channel: row.try_get("channel")?,
        iin: row.try_get("iin")?,
        phone: row.try_get("phone")?,
        body: row.try_get("body")?,
        template_id: row.try_get("template_id")?,
        parameters: row.try_get("parameters")?,
        correlation_id: row.try_get("correlation_id")?,
        expires_at_ms: row.try_get("expires_at_ms")?,
    })
}

impl Housing {
    /// Unsent outbox messages, oldest first, at most `limit` (parked refusals excluded).
    pub async fn unsent_messages(&self, limit: i64) -> Result<Vec<OutboxMessage>, HousingError> {
        let rows = sqlx::query(&format!(
            "SELECT {MESSAGE_COLUMNS} FROM outbox WHERE sent_at_ms IS NULL AND refused_at_ms IS NULL ORDER BY id LIMIT $1"
        ))
        .bind(limit)
        .fetch_all(self.database.pool())
        .await?;
        rows.iter()
            .map(message_of)
            .collect::<Result<Vec<_>, sqlx::Error>>()
            .map_err(HousingError::from)
    }

    #[cfg(test)]
    /// Messages parked because notify refused them for good, oldest first, at most `limit`.
    pub async fn refused_messages(&self, limit: i64) -> Result<Vec<RefusedMessage>, HousingError> {
        let rows = sqlx::query(&format!(
            "SELECT {MESSAGE_COLUMNS}, refused_at_ms, refusal FROM outbox WHERE refused_at_ms IS NOT NULL ORDER BY id LIMIT $1"
        ))
        .bind(limit)
        .fetch_all(self.database.pool())
        .await?;
        rows.iter()
            .map(|row| {
                Ok(RefusedMessage {
                    message: message_of(row)?,
                    refused_at_ms: row.try_get("refused_at_ms")?,
                    refusal: row.try_get("refusal")?,
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()
            .map_err(HousingError::from)
    }

    #[cfg(test)]
    /// One relay pass over at most `limit` unsent messages through `sink`: each is marked sent
    /// after the sink accepted it, or parked when it was refused for good; returns how many were
    /// sent or parked. A message may be delivered twice if the process dies between the two steps
    /// (at-least-once; notify deduplicates by outbox id).
    pub async fn relay_outbox<K: OutboxSink<OutboxMessage>>(
        &self,
        sink: &K,
        limit: usize,
    ) -> Result<usize, HousingError> {
        let policy = RelayPolicy {
            page_size: limit,
            drain: false,
            ..RELAY_POLICY
        };
        let report = relay_pass(self, sink, &policy, None).await?;
        Ok(report.sent + report.parked)
    }
}

impl shlyuz_kit::outbox::OutboxRow for OutboxMessage {
    fn outbox_id(&self) -> &str {
        &self.id
    }

    fn template_id(&self) -> &str {
        &self.template_id
    }

    fn notification(&self) -> Result<Notification, DeliveryFailure> {
        Ok(Notification {
            subject_iin: self.iin.clone(),
            correlation_id: self.correlation_id.clone(),
            request: crate::notify_sink::notification_request(self)?,
        })
    }
}

impl OutboxStore for Housing {
    type Row = OutboxMessage;
    type Error = HousingError;

    async fn due(&self, limit: usize) -> Result<Vec<OutboxMessage>, HousingError> {
        self.unsent_messages(i64::try_from(limit).unwrap_or(i64::MAX))
            .await
    }

    async fn mark_sent(&self, message: &OutboxMessage) -> Result<(), HousingError> {
        sqlx::query("UPDATE outbox SET sent_at_ms = $2 WHERE id = $1 AND sent_at_ms IS NULL")
            .bind(&message.id)
            .bind(self.now_millis())
            .execute(self.database.pool())
            .await?;
        Ok(())
    }

    async fn mark_failed(
        &self,
        _message: &OutboxMessage,
        _reason: &str,
        _retry_at_ms: i64,
    ) -> Result<(), HousingError> {
        // RELAY_POLICY stops the pass instead: the message stays first in line, nothing to record.
        Ok(())
    }

    async fn park(&self, message: &OutboxMessage, refusal: &str) -> Result<(), HousingError> {
        // An offer whose SMS can never go out was not received: not a refusal. Closed before the
        // message is parked, so a failure here leaves the message to the next pass, which closes
        // the offer then.
        if message.template_id == crate::texts::OFFER_TEMPLATE && !message.correlation_id.is_empty()
        {
            match self
                .record_undelivered(&message.correlation_id, &message.iin, refusal)
                .await
            {
                Ok(_) => {}
                Err(error) if error.is_transient() => return Err(error),
                // No such offer (or not this person's): nothing to close; park anyway.
                Err(error) => tracing::warn!(
                    outbox_id = %message.id,
                    error = %error,
                    "parked offer SMS names no offer to close"
                ),
            }
        }
        sqlx::query(
            "UPDATE outbox SET refused_at_ms = $2, refusal = $3 WHERE id = $1 AND sent_at_ms IS NULL",
        )
        .bind(&message.id)
        .bind(self.now_millis())
        .bind(refusal)
        .execute(self.database.pool())
        .await?;
        Ok(())
    }

    fn now_ms(&self) -> i64 {
        self.now_millis()
    }
}
