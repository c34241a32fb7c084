//! Replies 6521–6527 arriving from notify through the gateway's async channel: housing pulls its
//! inbox (`GetMessages`), records each reply with the same logic as `RecordReply`, and
//! acknowledges what it has settled (`AckMessages`). A reply that cannot be settled now (the
//! database is unavailable) stays in the inbox for the next pass; an item housing cannot read is
//! kept in `inbox_unreadable` before it is acknowledged, so nothing is lost.

use std::sync::Arc;
use std::time::Duration;

use prost::Message as _;
use shlyuz_kit::envelope::EnvelopeBuilder;
use shlyuz_kit::gateway_client::{SignedChannel, SigningService, with_envelope};
use shlyuz_kit::pki::SigningKey;
use shlyuz_kit::shutdown::ShutdownSignal;
use shlyuz_proto::gateway::v1 as gateway;
use shlyuz_proto::housing::v1 as pb;
use shlyuz_proto::notify::v1 as notify_pb;
use tonic::transport::Channel;

use crate::Housing;
use crate::model::HousingError;

/// The payload type notify sends a reply as: its `SmsReply`, the correlation id being the offer id
/// (docs/decisions.md 68).
pub const REPLY_PAYLOAD_TYPE: &str = "shlyuz.notify.v1.SmsReply";

/// The payload type notify reports an undeliverable offer SMS as: its `DeliveryFailed`, the
/// correlation id being the offer id.
pub const DELIVERY_FAILED_PAYLOAD_TYPE: &str = "shlyuz.notify.v1.DeliveryFailed";

/// Why a pass over the inbox stopped; items it did not acknowledge come back on the next pass.
#[derive(Debug, thiserror::Error)]
pub enum InboxError {
    /// `GetMessages` through the gateway failed.
    #[error("cannot read the inbox: {0}")]
    Read(String),
    /// `AckMessages` through the gateway failed.
    #[error("cannot acknowledge inbox items: {0}")]
    Acknowledge(String),
    /// An item could not be kept (the database failed).
    #[error(transparent)]
    Housing(#[from] HousingError),
}

/// Records one reply request of `RecordReply`.
pub async fn apply_reply(
    housing: &Housing,
    request: &pb::RecordReplyRequest,
) -> Result<pb::Offer, HousingError> {
    let received_at_ms = request
        .received_at
        .as_ref()
        .map(|stamp| stamp.seconds.saturating_mul(1000) + i64::from(stamp.nanos / 1_000_000));
    housing
        .record_reply_received_at(
            &request.offer_id,
            i64::from(request.reply_code),
            &request.phone,
            received_at_ms,
        )
        .await
}

/// Records one reply notify routed: offer = correlation id, code = the normalised digits, the
/// sender checked by the reply window's recipient IIN, received at notify's reception time.
pub async fn apply_sms_reply(
    housing: &Housing,
    reply: &notify_pb::SmsReply,
) -> Result<pb::Offer, HousingError> {
    let Ok(code) = reply.code.parse::<i64>() else {
        return Err(HousingError::invalid_field(
            "code",
            format!("must be one of 6521–6527, got {:?}", reply.code),
        ));
    };
    let received_at_ms = (reply.received_at_ms > 0).then_some(reply.received_at_ms);
    housing
        .record_notify_reply(
            &reply.correlation_id,
            code,
            &reply.recipient_iin,
            received_at_ms,
        )
        .await
}

/// What one pass over the inbox did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InboxPass {
    /// Replies recorded (or already recorded: duplicates).
    pub recorded: usize,
    /// Replies refused for good (unknown or expired offer, wrong phone, bad code); acknowledged.
    pub refused: usize,
    /// Items housing cannot read, kept in `inbox_unreadable` and acknowledged.
    pub unreadable: usize,
    /// Items left in the inbox for the next pass.
    pub deferred: usize,
}

/// Pulls housing's inbox through the gateway.
#[derive(Clone)]
pub struct InboxConsumer {
    housing: Arc<Housing>,
    channel: SignedChannel,
}

impl InboxConsumer {
    /// A consumer over `channel` (mTLS to the gateway as `housing`) signing with `signing_key`.
    pub fn new(housing: Arc<Housing>, channel: Channel, signing_key: Arc<SigningKey>) -> Self {
        Self {
            housing,
            channel: SigningService::new(channel, signing_key),
        }
    }

    /// One pass: pulls up to 100 items, settles them, acknowledges the settled ones.
    pub async fn pull_once(&self) -> Result<InboxPass, InboxError> {
        let mut client = gateway::async_channel_service_client::AsyncChannelServiceClient::new(
            self.channel.clone(),
        );
        let request = with_envelope(
            EnvelopeBuilder::default(),
            gateway::GetMessagesRequest { page_size: 100 },
        );
        let items = client
            .get_messages(request)
            .await
            .map_err(|status| InboxError::Read(status.message().to_string()))?
            .into_inner()
            .items;
        let mut pass = InboxPass::default();
        let mut settled = Vec::new();
        for item in items {
            match self.settle(&item).await? {
                Settled::Recorded => pass.recorded += 1,
                Settled::Refused => pass.refused += 1,
                Settled::Unreadable => pass.unreadable += 1,
                Settled::Deferred => {
                    pass.deferred += 1;
                    continue;
                }
            }
            settled.push(item.item_id);
        }
        if !settled.is_empty() {
            let request = with_envelope(
                EnvelopeBuilder::default(),
                gateway::AckMessagesRequest { item_ids: settled },
            );
            // An unacknowledged item comes back and is settled again: replies are idempotent.
            client
                .ack_messages(request)
                .await
                .map_err(|status| InboxError::Acknowledge(status.message().to_string()))?;
        }
        Ok(pass)
    }

    async fn settle(&self, item: &gateway::InboxItem) -> Result<Settled, HousingError> {
        if item.kind() != gateway::InboxItemKind::Message {
            self.keep_unreadable(item).await?;
            return Ok(Settled::Unreadable);
        }
        let (offer_id, outcome) = match item.payload_type.as_str() {
            REPLY_PAYLOAD_TYPE => {
                let Ok(reply) = notify_pb::SmsReply::decode(item.payload.as_slice()) else {
                    self.keep_unreadable(item).await?;
                    return Ok(Settled::Unreadable);
                };
                let outcome = apply_sms_reply(&self.housing, &reply).await;
                (reply.correlation_id, outcome)
            }
            DELIVERY_FAILED_PAYLOAD_TYPE => {
                let Ok(failure) = notify_pb::DeliveryFailed::decode(item.payload.as_slice()) else {
                    self.keep_unreadable(item).await?;
                    return Ok(Settled::Unreadable);
                };
                let outcome = self
                    .housing
                    .record_undelivered(
                        &failure.correlation_id,
                        &failure.recipient_iin,
                        &failure.reason,
                    )
                    .await;
                (failure.correlation_id, outcome)
            }
            _ => {
                self.keep_unreadable(item).await?;
                return Ok(Settled::Unreadable);
            }
        };
        match outcome {
            Ok(_) => Ok(Settled::Recorded),
            Err(error) if error.is_transient() => {
                tracing::warn!(item_id = %item.item_id, error = %error, "inbox item deferred");
                Ok(Settled::Deferred)
            }
            Err(error) => {
                tracing::info!(item_id = %item.item_id, offer_id = %offer_id, payload_type = %item.payload_type, error = %error, "inbox item refused");
                Ok(Settled::Refused)
            }
        }
    }

    async fn keep_unreadable(&self, item: &gateway::InboxItem) -> Result<(), HousingError> {
        tracing::warn!(item_id = %item.item_id, payload_type = %item.payload_type, "unreadable inbox item kept");
        sqlx::query(
            "INSERT INTO inbox_unreadable (item_id, payload_type, payload, received_at_ms) VALUES ($1, $2, $3, $4)
             ON CONFLICT (item_id) DO NOTHING",
        )
        .bind(&item.item_id)
        .bind(&item.payload_type)
        .bind(item.payload.clone())
        .bind(self.housing.now_millis())
        .execute(self.housing.database().pool())
        .await?;
        Ok(())
    }

    /// Pulls every `interval` until shutdown.
    pub async fn run(self, interval: Duration, shutdown: ShutdownSignal) {
        let this = &self;
        shlyuz_kit::task::every(interval, shutdown, || async move {
            if let Err(error) = this.pull_once().await {
                tracing::warn!(error = %error, "inbox pass failed");
            }
        })
        .await;
    }
}

enum Settled {
    Recorded,
    Refused,
    Unreadable,
    Deferred,
}
