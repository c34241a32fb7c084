//! Incoming SMS: find the conversation open for the sender's phone, route a valid code to the
//! conversation's participant through the gateway's async channel, and answer everything else
//! with an SMS — no reply is dropped. Routed replies wait in `inbound_replies` until the gateway
//! has accepted them, so a gateway outage delays them but loses none.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use prost::Message as _;
use shlyuz_kit::backoff::Backoff;
use shlyuz_kit::clock::SharedClock;
use shlyuz_kit::db::Database;
use shlyuz_kit::envelope::EnvelopeBuilder;
use shlyuz_kit::error::ApiError;
use shlyuz_kit::gateway_client::{GatewayClient, with_envelope};
use shlyuz_kit::shutdown::ShutdownSignal;
use shlyuz_proto::gateway::v1::async_channel_service_client::AsyncChannelServiceClient;
use shlyuz_proto::gateway::v1::{SendMessageRequest, send_message_request};
use shlyuz_proto::notify::v1::{DeliveryFailed, SmsReply};
use sqlx::Row;

use crate::notifier::{Notifier, SendCommand};
use crate::sms::{Language, normalize_phone};

/// `payload_type` of the replies notify forwards.
pub const SMS_REPLY_PAYLOAD_TYPE: &str = "shlyuz.notify.v1.SmsReply";
/// `payload_type` of the delivery failures notify forwards.
pub const DELIVERY_FAILED_PAYLOAD_TYPE: &str = "shlyuz.notify.v1.DeliveryFailed";

/// Longest SMS text accepted (ten concatenated UCS-2 segments and then some).
pub const MAX_INBOUND_TEXT_CHARS: usize = 1_600;

/// Outcome: forwarded to the conversation's participant.
pub const OUTCOME_ROUTED: &str = "ROUTED";
/// Outcome: a conversation is open but the text is not one of its codes.
pub const OUTCOME_INVALID_CODE: &str = "ANSWERED_INVALID_CODE";
/// Outcome: no conversation is open for the phone.
pub const OUTCOME_NO_CONVERSATION: &str = "ANSWERED_NO_CONVERSATION";

/// An open reply window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConversationRow {
    /// Id.
    pub id: String,
    /// Notification that opened it.
    pub notification_id: String,
    /// Phone.
    pub phone: String,
    /// Recipient IIN.
    pub recipient_iin: String,
    /// Language code of the notification.
    pub language: String,
    /// Participant receiving the replies.
    pub reply_participant: String,
    /// Accepted codes.
    pub accepted_codes: Vec<String>,
    /// Correlation id.
    pub correlation_id: String,
}

/// What happened to one incoming SMS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboundOutcome {
    /// Stored reply id.
    pub reply_id: String,
    /// One of the `OUTCOME_*` codes.
    pub outcome: String,
    /// Conversation, if any.
    pub conversation_id: String,
    /// The answering notification (ANSWERED_* only).
    pub answer_notification_id: String,
    /// True when the provider's message id was seen before.
    pub duplicate: bool,
}

/// The code in a reply: the text without spaces and punctuation, when that is all digits.
pub fn parse_reply_code(text: &str) -> Option<String> {
    let compact: String = text
        .chars()
        .filter(|character| {
            !character.is_whitespace() && !matches!(character, '.' | ',' | '!' | '-' | '#' | '*')
        })
        .collect();
    let is_code = !compact.is_empty()
        && compact.len() <= 10
        && compact.chars().all(|character| character.is_ascii_digit());
    is_code.then_some(compact)
}

/// Takes incoming SMS.
#[derive(Clone)]
pub struct InboundSms {
    notifier: Notifier,
}

impl InboundSms {
    /// Inbound handling that answers through `notifier`.
    pub fn new(notifier: Notifier) -> Self {
        Self { notifier }
    }

    fn database(&self) -> &Database {
        self.notifier.database()
    }

    /// Handles one SMS from `raw_phone`.
    pub async fn receive(
        &self,
        raw_phone: &str,
        text: &str,
        provider_message_id: &str,
    ) -> Result<InboundOutcome, ApiError> {
        let phone = normalize_phone("from_phone", raw_phone)?;
        if text.chars().count() > MAX_INBOUND_TEXT_CHARS {
            return Err(ApiError::invalid_field(
                "text",
                format!("longer than {MAX_INBOUND_TEXT_CHARS} characters"),
            ));
        }
        if provider_message_id.len() > 200 {
            return Err(ApiError::invalid_field(
                "provider_message_id",
                "longer than 200 characters",
            ));
        }
        if !provider_message_id.is_empty()
            && let Some(existing) = self.find_by_provider_id(provider_message_id).await?
        {
            return Ok(existing);
        }
        // A valid code that loses the race for its conversation to another reply is handled
        // again, and then finds the window closed.
        for _ in 0..2 {
            if let Some(outcome) = self.receive_once(&phone, text, provider_message_id).await? {
                return Ok(outcome);
            }
        }
        Err(ApiError::unavailable(
            crate::reasons::REPLY_CONTENDED,
            "the reply could not be stored; send it again",
        ))
    }

    /// One attempt at storing and answering an SMS; `None` when the conversation it was routed to
    /// closed meanwhile.
    async fn receive_once(
        &self,
        phone: &str,
        text: &str,
        provider_message_id: &str,
    ) -> Result<Option<InboundOutcome>, ApiError> {
        let now_ms = self.notifier.clock().now_millis();
        let reply_id = uuid::Uuid::now_v7().to_string();
        let code = parse_reply_code(text);
        let open = self.open_conversations(phone, now_ms).await?;
        let routed_to = code.as_ref().and_then(|code| {
            open.iter()
                .find(|conversation| conversation.accepted_codes.contains(code))
        });
        let answer_key = if provider_message_id.is_empty() {
            format!("inbound:{reply_id}")
        } else {
            format!("inbound-provider:{provider_message_id}")
        };
        let (outcome, conversation_id, answer_notification_id) = match (routed_to, open.first()) {
            (Some(conversation), _) => (OUTCOME_ROUTED, conversation.id.clone(), String::new()),
            (None, Some(conversation)) => {
                let answer = self
                    .answer(
                        phone,
                        "reply.invalid_code",
                        &[("codes", conversation.accepted_codes.join(", "))],
                        Language::from_code(&conversation.language),
                        answer_key,
                    )
                    .await?;
                (OUTCOME_INVALID_CODE, conversation.id.clone(), answer)
            }
            (None, None) => {
                let language = self.last_language(phone).await?;
                let answer = self
                    .answer(phone, "reply.no_conversation", &[], language, answer_key)
                    .await?;
                (OUTCOME_NO_CONVERSATION, String::new(), answer)
            }
        };
        let mut transaction = self
            .database()
            .pool()
            .begin()
            .await
            .map_err(ApiError::from)?;
        let inserted = sqlx::query(
            "INSERT INTO inbound_replies (id, provider_message_id, from_phone, text, code, outcome, conversation_id, \
             answer_notification_id, forward_pending, forward_attempts, forward_next_ms, forward_error, received_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 0, $10, '', $10)",
        )
        .bind(reply_id.clone())
        .bind(provider_message_id.to_string())
        .bind(phone.to_string())
        .bind(text.to_string())
        .bind(code.clone().unwrap_or_default())
        .bind(outcome)
        .bind(conversation_id.clone())
        .bind(answer_notification_id.clone())
        .bind(i64::from(outcome == OUTCOME_ROUTED))
        .bind(now_ms)
        .execute(&mut *transaction)
        .await;
        if let Err(error) = inserted {
            // The provider posted the same SMS twice at once: answer with the first outcome.
            drop(transaction);
            if !provider_message_id.is_empty()
                && let Some(existing) = self.find_by_provider_id(provider_message_id).await?
            {
                return Ok(Some(existing));
            }
            return Err(ApiError::from(error));
        }
        if outcome == OUTCOME_ROUTED {
            // One answer per offer: the window closes at the first valid code.
            let closed = sqlx::query(
                "UPDATE conversations SET closed_ms = $2 WHERE id = $1 AND closed_ms = 0",
            )
            .bind(conversation_id.clone())
            .bind(now_ms)
            .execute(&mut *transaction)
            .await
            .map_err(ApiError::from)?;
            if closed.rows_affected() == 0 {
                transaction.rollback().await.map_err(ApiError::from)?;
                return Ok(None);
            }
        }
        transaction.commit().await.map_err(ApiError::from)?;
        tracing::info!(reply = %reply_id, outcome, conversation = %conversation_id, "sms reply received");
        Ok(Some(InboundOutcome {
            reply_id,
            outcome: outcome.to_string(),
            conversation_id,
            answer_notification_id,
            duplicate: false,
        }))
    }

    async fn answer(
        &self,
        phone: &str,
        template_id: &str,
        parameters: &[(&str, String)],
        language: Language,
        idempotency_key: String,
    ) -> Result<String, ApiError> {
        let accepted = self
            .notifier
            .send(SendCommand {
                recipient_iin: String::new(),
                recipient_phone: phone.to_string(),
                sms: true,
                cabinet: false,
                template_id: template_id.to_string(),
                parameters: parameters
                    .iter()
                    .map(|(name, value)| (name.to_string(), value.clone()))
                    .collect(),
                language,
                idempotency_key,
                conversation: None,
            })
            .await?;
        Ok(accepted.notification.id)
    }

    async fn find_by_provider_id(
        &self,
        provider_message_id: &str,
    ) -> Result<Option<InboundOutcome>, ApiError> {
        let row = sqlx::query(
            "SELECT id, outcome, conversation_id, answer_notification_id FROM inbound_replies WHERE provider_message_id = $1",
        )
        .bind(provider_message_id.to_string())
        .fetch_optional(self.database().pool())
        .await
        .map_err(ApiError::from)?;
        row.map(|row| -> Result<InboundOutcome, ApiError> {
            Ok(InboundOutcome {
                reply_id: row.try_get("id").map_err(ApiError::from)?,
                outcome: row.try_get("outcome").map_err(ApiError::from)?,
                conversation_id: row.try_get("conversation_id").map_err(ApiError::from)?,
                answer_notification_id: row
                    .try_get("answer_notification_id")
                    .map_err(ApiError::from)?,
                duplicate: true,
            })
        })
        .transpose()
    }

    /// Conversations open for `phone` at `now_ms`, newest first.
    pub async fn open_conversations(
        &self,
        phone: &str,
        now_ms: i64,
    ) -> Result<Vec<ConversationRow>, ApiError> {
        let rows = sqlx::query(
            "SELECT id, notification_id, phone, recipient_iin, language, reply_participant, accepted_codes, correlation_id \
             FROM conversations WHERE phone = $1 AND expires_ms > $2 AND closed_ms = 0 ORDER BY created_ms DESC, id DESC",
        )
        .bind(phone.to_string())
        .bind(now_ms)
        .fetch_all(self.database().pool())
        .await
        .map_err(ApiError::from)?;
        rows.iter()
            .map(|row| conversation_from_row(row).map_err(ApiError::from))
            .collect()
    }

    /// The language of the last conversation with `phone`, else Kazakh.
    async fn last_language(&self, phone: &str) -> Result<Language, ApiError> {
        let row = sqlx::query(
            "SELECT language FROM conversations WHERE phone = $1 ORDER BY created_ms DESC LIMIT 1",
        )
        .bind(phone.to_string())
        .fetch_optional(self.database().pool())
        .await
        .map_err(ApiError::from)?;
        Ok(match row {
            Some(row) => Language::from_code(
                &row.try_get::<String, _>("language")
                    .map_err(ApiError::from)?,
            ),
            None => Language::Kk,
        })
    }
}

fn conversation_from_row(row: &sqlx::any::AnyRow) -> Result<ConversationRow, sqlx::Error> {
    let codes: String = row.try_get("accepted_codes")?;
    Ok(ConversationRow {
        id: row.try_get("id")?,
        notification_id: row.try_get("notification_id")?,
        phone: row.try_get("phone")?,
        recipient_iin: row.try_get("recipient_iin")?,
        language: row.try_get("language")?,
        reply_participant: row.try_get("reply_participant")?,
        accepted_codes: codes
            .split(',')
            .filter(|code| !code.is_empty())
            .map(str::to_string)
            .collect(),
        correlation_id: row.try_get("correlation_id")?,
    })
}

/// What notify forwards to a conversation's participant.
#[derive(Debug, Clone, PartialEq)]
pub enum Forwarded {
    /// A citizen's valid reply (`shlyuz.notify.v1.SmsReply`).
    Reply(SmsReply),
    /// The SMS that opened the conversation could not be delivered (`shlyuz.notify.v1.DeliveryFailed`).
    DeliveryFailed(DeliveryFailed),
}

impl Forwarded {
    /// The async channel's `payload_type`.
    pub fn payload_type(&self) -> &'static str {
        match self {
            Forwarded::Reply(_) => SMS_REPLY_PAYLOAD_TYPE,
            Forwarded::DeliveryFailed(_) => DELIVERY_FAILED_PAYLOAD_TYPE,
        }
    }

    /// The encoded payload.
    pub fn payload(&self) -> Vec<u8> {
        match self {
            Forwarded::Reply(reply) => reply.encode_to_vec(),
            Forwarded::DeliveryFailed(failure) => failure.encode_to_vec(),
        }
    }
}

/// Hands a routed reply (or a delivery failure) to its participant.
pub trait ReplyForwarder: Send + Sync + 'static {
    /// Delivers `message` to `participant` with `correlation_id`; `message_id` is stable across
    /// retries so the receiver sees it once.
    fn forward<'a>(
        &'a self,
        participant: &'a str,
        message_id: &'a str,
        correlation_id: &'a str,
        message: &'a Forwarded,
    ) -> BoxFuture<'a, Result<(), String>>;
}

/// Forwards through the gateway's async channel (SendMessage to the participant's inbox).
#[derive(Debug, Clone)]
pub struct GatewayReplyForwarder {
    gateway: GatewayClient,
}

impl GatewayReplyForwarder {
    /// A forwarder calling through `gateway`.
    pub fn new(gateway: GatewayClient) -> Self {
        Self { gateway }
    }
}

impl ReplyForwarder for GatewayReplyForwarder {
    fn forward<'a>(
        &'a self,
        participant: &'a str,
        message_id: &'a str,
        correlation_id: &'a str,
        message: &'a Forwarded,
    ) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            let envelope = EnvelopeBuilder {
                message_id: message_id.to_string(),
                correlation_id: correlation_id.to_string(),
                ..EnvelopeBuilder::default()
            };
            let request = with_envelope(
                envelope,
                SendMessageRequest {
                    target: Some(send_message_request::Target::Recipient(
                        participant.to_string(),
                    )),
                    payload: message.payload(),
                    payload_type: message.payload_type().to_string(),
                    expires_at_ms: 0,
                    reply_to: String::new(),
                },
            );
            let mut client = AsyncChannelServiceClient::new(self.gateway.signed_channel());
            match client.send_message(request).await {
                Ok(_) => Ok(()),
                Err(status) => Err(format!(
                    "gateway refused the reply: {:?}: {}",
                    status.code(),
                    status.message()
                )),
            }
        })
    }
}

/// The wait before forwarding a reply again: a second after the first failure, doubling, at most
/// 256 seconds.
const REPLY_FORWARD_BACKOFF: Backoff =
    Backoff::new(Duration::from_secs(1), Duration::from_secs(256));

/// Forwards routed replies that are still pending, retrying with backoff.
#[derive(Clone)]
pub struct ReplyRelay {
    database: Database,
    forwarder: Arc<dyn ReplyForwarder>,
    clock: SharedClock,
    poll_interval: Duration,
}

impl ReplyRelay {
    /// A relay over `database`.
    pub fn new(
        database: Database,
        forwarder: Arc<dyn ReplyForwarder>,
        clock: SharedClock,
        poll_interval: Duration,
    ) -> Self {
        Self {
            database,
            forwarder,
            clock,
            poll_interval,
        }
    }

    /// Forwards the due pending replies once; returns how many the gateway accepted.
    pub async fn run_once(&self) -> Result<usize, sqlx::Error> {
        let now_ms = self.clock.now_millis();
        let rows = sqlx::query(
            "SELECT r.id, r.from_phone, r.text, r.code, r.outcome, r.received_ms, r.forward_attempts, \
                    c.id AS conversation_id, c.notification_id, c.phone, c.recipient_iin, c.language, \
                    c.reply_participant, c.accepted_codes, c.correlation_id \
             FROM inbound_replies r JOIN conversations c ON c.id = r.conversation_id \
             WHERE r.forward_pending = 1 AND r.forward_next_ms <= $1 ORDER BY r.forward_next_ms LIMIT 32",
        )
        .bind(now_ms)
        .fetch_all(self.database.pool())
        .await?;
        let mut forwarded = 0;
        for row in rows {
            let reply_id: String = row.try_get("id")?;
            let attempts: i64 = row.try_get("forward_attempts")?;
            let conversation = ConversationRow {
                id: row.try_get("conversation_id")?,
                ..conversation_from_row(&row)?
            };
            let outcome: String = row.try_get("outcome")?;
            let message = if outcome == crate::store::OUTCOME_DELIVERY_FAILED {
                Forwarded::DeliveryFailed(DeliveryFailed {
                    notification_id: conversation.notification_id.clone(),
                    conversation_id: conversation.id.clone(),
                    correlation_id: conversation.correlation_id.clone(),
                    recipient_iin: conversation.recipient_iin.clone(),
                    reason: row.try_get("text")?,
                    failed_at_ms: row.try_get("received_ms")?,
                })
            } else {
                Forwarded::Reply(SmsReply {
                    reply_id: reply_id.clone(),
                    conversation_id: conversation.id.clone(),
                    correlation_id: conversation.correlation_id.clone(),
                    notification_id: conversation.notification_id.clone(),
                    from_phone: row.try_get("from_phone")?,
                    recipient_iin: conversation.recipient_iin.clone(),
                    code: row.try_get("code")?,
                    text: row.try_get("text")?,
                    received_at_ms: row.try_get("received_ms")?,
                })
            };
            match self
                .forwarder
                .forward(
                    &conversation.reply_participant,
                    &reply_id,
                    &conversation.correlation_id,
                    &message,
                )
                .await
            {
                Ok(()) => {
                    sqlx::query("UPDATE inbound_replies SET forward_pending = 0, forward_attempts = $2, forward_error = '' WHERE id = $1")
                        .bind(reply_id.clone())
                        .bind(attempts + 1)
                        .execute(self.database.pool())
                        .await?;
                    forwarded += 1;
                    tracing::info!(reply = %reply_id, participant = %conversation.reply_participant, "sms reply forwarded");
                }
                Err(error) => {
                    let delay = REPLY_FORWARD_BACKOFF.delay(attempts.saturating_add(1));
                    let next_ms =
                        now_ms.saturating_add(i64::try_from(delay.as_millis()).unwrap_or(i64::MAX));
                    tracing::warn!(reply = %reply_id, attempts = attempts + 1, error = %error, "sms reply not forwarded, will retry");
                    sqlx::query("UPDATE inbound_replies SET forward_attempts = $2, forward_next_ms = $3, forward_error = $4 WHERE id = $1")
                        .bind(reply_id.clone())
                        .bind(attempts + 1)
                        .bind(next_ms)
                        .bind(error)
                        .execute(self.database.pool())
                        .await?;
                }
            }
        }
        Ok(forwarded)
    }

    /// Relays every poll interval until `shutdown`.
    pub async fn run(self, shutdown: ShutdownSignal) {
        let this = &self;
        shlyuz_kit::task::every(self.poll_interval, shutdown, || async move {
            if let Err(error) = this.run_once().await {
                tracing::warn!(error = %error, "sms reply relay pass failed");
            }
        })
        .await;
    }
}
