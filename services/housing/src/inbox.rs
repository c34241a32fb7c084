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

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use shlyuz_kit::db::Database;
    use shlyuz_kit::server::{GrpcServer, ServerSettings, Transport};
    use shlyuz_kit::shutdown::shutdown_channel;
    use tonic::{Request, Response, Status};

    use super::*;
    use crate::norm::AreaNorm;
    use crate::register::{NewDwelling, NewRegistrant};

    /// The gateway's async channel as far as housing's inbox uses it: items until acknowledged.
    #[derive(Clone, Default)]
    struct FakeInbox {
        items: Arc<Mutex<Vec<gateway::InboxItem>>>,
    }

    #[tonic::async_trait]
    impl gateway::async_channel_service_server::AsyncChannelService for FakeInbox {
        async fn send_message(
            &self,
            _request: Request<gateway::SendMessageRequest>,
        ) -> Result<Response<gateway::SendMessageResponse>, Status> {
            Err(Status::unimplemented("not in this test"))
        }

        async fn get_message_status(
            &self,
            _request: Request<gateway::GetMessageStatusRequest>,
        ) -> Result<Response<gateway::GetMessageStatusResponse>, Status> {
            Err(Status::unimplemented("not in this test"))
        }

        async fn get_messages(
            &self,
            _request: Request<gateway::GetMessagesRequest>,
        ) -> Result<Response<gateway::GetMessagesResponse>, Status> {
            let items = self.items.lock().expect("inbox").clone();
            Ok(Response::new(gateway::GetMessagesResponse { items }))
        }

        async fn ack_messages(
            &self,
            request: Request<gateway::AckMessagesRequest>,
        ) -> Result<Response<gateway::AckMessagesResponse>, Status> {
            let acknowledged = &request.get_ref().item_ids;
            let mut items = self.items.lock().expect("inbox");
            let before = items.len();
            items.retain(|item| !acknowledged.contains(&item.item_id));
            let count = i32::try_from(before - items.len()).unwrap_or(i32::MAX);
            Ok(Response::new(gateway::AckMessagesResponse {
                acknowledged: count,
            }))
        }

        type StreamMessagesStream =
            futures::stream::Empty<Result<gateway::StreamMessagesResponse, Status>>;

        async fn stream_messages(
            &self,
            _request: Request<gateway::StreamMessagesRequest>,
        ) -> Result<Response<Self::StreamMessagesStream>, Status> {
            Err(Status::unimplemented("not in this test"))
        }
    }

    fn message(item_id: &str, payload_type: &str, payload: Vec<u8>) -> gateway::InboxItem {
        gateway::InboxItem {
            item_id: item_id.to_string(),
            kind: gateway::InboxItemKind::Message as i32,
            payload,
            payload_type: payload_type.to_string(),
            ..gateway::InboxItem::default()
        }
    }

    /// A signing key of a development PKI made for this test in a directory of its own.
    fn signing_key() -> SigningKey {
        let dir = std::env::temp_dir().join(format!(
            "shlyuz-housing-inbox-{}",
            uuid::Uuid::now_v7().simple()
        ));
        let pki = shlyuz_kit::pki::DevPki::ensure(&dir, &["housing"]).expect("pki");
        let files = pki.participant("housing").expect("housing's files");
        let key = SigningKey::from_pem_file(&files.signing_key).expect("signing key");
        let _ = std::fs::remove_dir_all(&dir);
        key
    }

    shlyuz_kit::storage_test!(
        replies_are_recorded_once_and_unreadable_items_kept_then_everything_acknowledged,
        |database: Database| async move {
            database.migrate(&crate::MIGRATIONS).await.expect("migrate");
            let housing = Housing::new(
                database.clone(),
                shlyuz_kit::clock::system_clock(),
                AreaNorm::default(),
            )
            .shared();
            let iin = "900315391113";
            housing
                .add_registrant(NewRegistrant {
                    iin: iin.to_string(),
                    full_name: "Тоқаев Ғалым Бауыржанұлы".to_string(),
                    phone: "+77015550113".to_string(),
                    reported_at_ms: 1_700_000_000_000,
                    locality_kato: "711110000".to_string(),
                    family_size: 3,
                })
                .await
                .expect("register");
            let flat = housing
                .add_dwelling(NewDwelling {
                    address: "Астана, Тұран даңғылы, 37-12".to_string(),
                    locality_kato: "711110000".to_string(),
                    rooms: 2,
                    total_area_m2: 52.0,
                })
                .await
                .expect("dwelling");
            let offer = housing
                .run_allocation_round()
                .await
                .expect("round")
                .offers_made
                .remove(0);

            let reply = notify_pb::SmsReply {
                correlation_id: offer.id.clone(),
                from_phone: "+77015550113".to_string(),
                recipient_iin: iin.to_string(),
                code: "6521".to_string(),
                text: "6521".to_string(),
                ..notify_pb::SmsReply::default()
            };
            // The reply, the same reply delivered twice (notify retried) and an item housing
            // cannot read.
            let inbox = FakeInbox::default();
            *inbox.items.lock().expect("inbox") = vec![
                message("item-1", REPLY_PAYLOAD_TYPE, reply.encode_to_vec()),
                message("item-2", REPLY_PAYLOAD_TYPE, reply.encode_to_vec()),
                message("item-3", "shlyuz.notify.v1.Unknown", vec![1, 2, 3]),
            ];
            let server = GrpcServer::bind(
                ServerSettings::loopback("gateway", Transport::Plaintext),
                &shlyuz_kit::telemetry::MetricsRegistry::default(),
            )
            .await
            .expect("bind the fake gateway");
            let address = server.local_addr().expect("address");
            let mut routes = tonic::service::RoutesBuilder::default();
            routes.add_service(
                gateway::async_channel_service_server::AsyncChannelServiceServer::new(
                    inbox.clone(),
                ),
            );
            let (trigger, signal) = shutdown_channel();
            let serving = tokio::spawn(server.serve(routes.routes(), signal));
            let channel = Channel::from_shared(format!("http://{address}"))
                .expect("endpoint")
                .connect()
                .await
                .expect("connect to the fake gateway");

            let consumer = InboxConsumer::new(housing.clone(), channel, Arc::new(signing_key()));
            let pass = consumer.pull_once().await.expect("pull");
            assert_eq!(pass.recorded, 2);
            assert_eq!(pass.unreadable, 1);
            assert_eq!(pass.deferred, 0);
            assert!(
                inbox.items.lock().expect("inbox").is_empty(),
                "everything settled was acknowledged"
            );
            // The next pass finds nothing.
            assert_eq!(
                consumer.pull_once().await.expect("pull again"),
                InboxPass::default()
            );

            assert_eq!(
                housing
                    .get_dwelling(&flat.id)
                    .await
                    .expect("dwelling")
                    .status(),
                pb::DwellingStatus::Leased
            );
            assert_eq!(
                housing
                    .get_registrant(iin)
                    .await
                    .expect("registrant")
                    .status(),
                pb::RegistrantStatus::Housed
            );
            let kept: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM inbox_unreadable")
                .fetch_one(database.pool())
                .await
                .expect("unreadable");
            assert_eq!(kept, 1);
            trigger.trigger();
            serving
                .await
                .expect("joined")
                .expect("the fake gateway stops");
        }
    );
}
