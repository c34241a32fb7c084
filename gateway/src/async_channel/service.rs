//! `shlyuz.gateway.v1.AsyncChannelService`. The call itself arrives through the sync channel,
//! which has authenticated the caller and verified the envelope's signature over the request
//! (and so over the payload); here the target's own access rule, purpose, subject and consent are
//! applied before the message is accepted.

use std::collections::HashSet;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use shlyuz_kit::clock::SharedClock;
use shlyuz_kit::db::Database;
use shlyuz_kit::error::{ApiError, FieldViolation};
use shlyuz_kit::paging::page_size;
use shlyuz_proto::gateway::v1::async_channel_service_server::AsyncChannelService;
use shlyuz_proto::gateway::v1::send_message_request::Target;
use shlyuz_proto::gateway::v1::{
    AckMessagesRequest, AckMessagesResponse, DeliveryState, GetMessageStatusRequest,
    GetMessageStatusResponse, GetMessagesRequest, GetMessagesResponse, InboxItem, InboxItemKind,
    MessageReceipt, MessageStatus, SendMessageRequest, SendMessageResponse, ServiceTarget,
    StreamMessagesRequest, StreamMessagesResponse,
};
use tokio::sync::Notify;
use tonic::{Request, Response, Status};

use super::AsyncOptions;
use super::dispatcher::Dispatcher;
use super::store::{self, InboxRow, MessageRow};
use crate::consent::{ConsentChecker, ConsentQuery};
use crate::directory::DirectoryHandle;
use crate::envelope;
use crate::identity::CallerIdentity;

/// The async channel's API.
#[derive(Clone)]
pub struct AsyncChannelApi {
    pub(super) database: Database,
    pub(super) directory: DirectoryHandle,
    pub(super) consent: Arc<dyn ConsentChecker>,
    pub(super) clock: SharedClock,
    pub(super) options: AsyncOptions,
    pub(super) wake: Arc<Notify>,
    pub(super) inbox_changed: Arc<Notify>,
    pub(super) dispatcher: Arc<Dispatcher>,
}

/// The envelope of the SendMessage call, as the sync channel verified it.
struct SentEnvelope {
    message_id: String,
    correlation_id: String,
    user_id: String,
    purpose: String,
    subject_iin: String,
    consent_id: String,
}

fn metadata_text(metadata: &tonic::metadata::MetadataMap, name: &str) -> String {
    metadata
        .get(name)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .trim()
        .to_string()
}

fn caller<T>(request: &Request<T>) -> Result<String, ApiError> {
    CallerIdentity::of(request)
        .map(|identity| identity.participant_id.clone())
        .ok_or_else(|| {
            ApiError::unauthenticated("UNKNOWN_PARTICIPANT", "the caller is not identified")
        })
}

fn state_of(stored: &str) -> DeliveryState {
    match stored {
        store::ON_DELIVERY => DeliveryState::OnDelivery,
        store::DELIVERED => DeliveryState::Delivered,
        store::NOT_DELIVERED => DeliveryState::NotDelivered,
        store::DELIVERY_STOPPED => DeliveryState::DeliveryStopped,
        _ => DeliveryState::Unspecified,
    }
}

fn status_message(message: MessageRow) -> MessageStatus {
    MessageStatus {
        message_id: message.message_id,
        correlation_id: message.correlation_id,
        sender: message.sender,
        service: if message.service.is_empty() {
            None
        } else {
            Some(ServiceTarget {
                service: message.service,
                method: message.method,
            })
        },
        recipient: message.recipient,
        purpose: message.purpose,
        subject_iin: message.subject_iin,
        user_id: message.user_id,
        state: state_of(&message.state) as i32,
        attempts: i32::try_from(message.attempts).unwrap_or(i32::MAX),
        accepted_at_ms: message.accepted_ms,
        expires_at_ms: message.expires_ms,
        finished_at_ms: message.finished_ms,
        response_code: i32::try_from(message.response_code).unwrap_or(i32::MAX),
        response_message: message.response_message,
        response_payload: message.response_payload.unwrap_or_default(),
        last_error: message.last_error,
        reason: message.reason,
    }
}

fn inbox_item(row: InboxRow) -> InboxItem {
    let is_message = row.kind == store::KIND_MESSAGE;
    let payload = if is_message {
        row.message.payload.clone()
    } else {
        Vec::new()
    };
    let payload_type = if is_message {
        row.message.payload_type.clone()
    } else {
        String::new()
    };
    InboxItem {
        item_id: row.item_id,
        kind: if is_message {
            InboxItemKind::Message as i32
        } else {
            InboxItemKind::Result as i32
        },
        status: Some(status_message(row.message)),
        payload,
        payload_type,
        created_at_ms: row.created_ms,
    }
}

impl AsyncChannelApi {
    fn sent_envelope(metadata: &tonic::metadata::MetadataMap) -> Result<SentEnvelope, ApiError> {
        let message_id = metadata_text(metadata, envelope::MESSAGE_ID);
        if message_id.is_empty() {
            return Err(ApiError::invalid_field(
                envelope::MESSAGE_ID,
                "is required: an async message is sent with a signed envelope",
            ));
        }
        Ok(SentEnvelope {
            message_id,
            correlation_id: metadata_text(metadata, envelope::CORRELATION_ID),
            user_id: metadata_text(metadata, envelope::USER_ID),
            purpose: metadata_text(metadata, envelope::PURPOSE),
            subject_iin: metadata_text(metadata, envelope::SUBJECT_IIN),
            consent_id: metadata_text(metadata, envelope::CONSENT_ID),
        })
    }

    /// Applies the target's policy and builds the row to store.
    async fn accept(
        &self,
        sender: &str,
        sent: SentEnvelope,
        request: SendMessageRequest,
    ) -> Result<MessageRow, ApiError> {
        let now_ms = self.clock.now_millis();
        let directory = self.directory.snapshot();
        let settings = directory.settings();
        let expires_ms = match request.expires_at_ms {
            0 => now_ms + millis(self.options.default_ttl),
            requested if requested <= now_ms => {
                return Err(ApiError::invalid_field("expires_at_ms", "is in the past"));
            }
            requested if requested > now_ms + millis(self.options.max_ttl) => {
                return Err(ApiError::invalid_field(
                    "expires_at_ms",
                    format!("is more than {} s away", self.options.max_ttl.as_secs()),
                ));
            }
            requested => requested,
        };
        let reply_to = if request.reply_to.is_empty() {
            sender.to_string()
        } else if directory.participant(&request.reply_to).is_some() {
            request.reply_to.clone()
        } else {
            return Err(ApiError::invalid_field(
                "reply_to",
                format!("participant {} is not registered", request.reply_to),
            ));
        };
        let mut row = MessageRow {
            id: uuid::Uuid::now_v7().to_string(),
            sender: sender.to_string(),
            message_id: sent.message_id,
            correlation_id: sent.correlation_id,
            user_id: sent.user_id,
            purpose: sent.purpose,
            subject_iin: sent.subject_iin,
            consent_id: sent.consent_id,
            service: String::new(),
            method: String::new(),
            recipient: String::new(),
            reply_to,
            payload: request.payload,
            payload_type: request.payload_type,
            personal_data: false,
            state: store::ON_DELIVERY.to_string(),
            attempts: 0,
            accepted_ms: now_ms,
            expires_ms,
            next_attempt_ms: now_ms,
            finished_ms: 0,
            response_code: 0,
            response_message: String::new(),
            response_payload: None,
            last_error: String::new(),
            reason: String::new(),
        };
        match request.target {
            None => {
                return Err(ApiError::invalid_field(
                    "target",
                    "name a service method or a recipient",
                ));
            }
            Some(Target::Recipient(recipient)) => {
                let Some(participant) = directory.participant(&recipient) else {
                    return Err(ApiError::not_found(
                        "PARTICIPANT_NOT_FOUND",
                        format!("participant {recipient} is not registered with the gateway"),
                    ));
                };
                if !participant.accepts_messages_from(sender) {
                    return Err(ApiError::permission_denied(
                        "ACCESS_DENIED",
                        format!("participant {recipient} does not accept messages from {sender}"),
                    ));
                }
                if row.payload.len() > settings.max_request_bytes {
                    return Err(too_large(settings.max_request_bytes));
                }
                row.recipient = recipient;
                row.personal_data = !row.subject_iin.is_empty();
            }
            Some(Target::Service(target)) => {
                let mut missing = Vec::new();
                if target.service.is_empty() {
                    missing.push(FieldViolation {
                        field: "service.service".to_string(),
                        description: "is required".to_string(),
                    });
                }
                if target.method.is_empty() {
                    missing.push(FieldViolation {
                        field: "service.method".to_string(),
                        description: "is required".to_string(),
                    });
                }
                if !missing.is_empty() {
                    return Err(ApiError::invalid_fields(missing));
                }
                let Some(route) = directory.route(&target.service) else {
                    return Err(ApiError::new(
                        tonic::Code::Unimplemented,
                        "UNKNOWN_SERVICE",
                        format!("no route for service {}", target.service),
                    ));
                };
                if route.is_local() {
                    return Err(ApiError::invalid_field(
                        "service.service",
                        "the gateway's own services cannot be called through the async channel",
                    ));
                }
                let rule = crate::policy::access_rule(
                    &directory,
                    route,
                    sender,
                    &target.service,
                    &target.method,
                    &row.purpose,
                    &row.subject_iin,
                )?;
                if rule.consent_required {
                    let query = ConsentQuery {
                        participant: sender,
                        subject_iin: &row.subject_iin,
                        purpose: &row.purpose,
                        consent_id: &row.consent_id,
                        now_ms,
                    };
                    crate::consent::require_consent(self.consent.as_ref(), query).await?;
                }
                if row.payload.len() > route.max_request_bytes {
                    return Err(too_large(route.max_request_bytes));
                }
                row.personal_data = route.personal_data;
                row.service = target.service;
                row.method = target.method;
            }
        }
        Ok(row)
    }
}

fn too_large(limit: usize) -> ApiError {
    ApiError::new(
        tonic::Code::ResourceExhausted,
        "MESSAGE_TOO_LARGE",
        format!("the payload exceeds the limit of {limit} bytes"),
    )
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

type InboxStream = Pin<Box<dyn Stream<Item = Result<StreamMessagesResponse, Status>> + Send>>;

#[tonic::async_trait]
impl AsyncChannelService for AsyncChannelApi {
    async fn send_message(
        &self,
        request: Request<SendMessageRequest>,
    ) -> Result<Response<SendMessageResponse>, Status> {
        let sender = caller(&request)?;
        let sent = Self::sent_envelope(request.metadata())?;
        let row = self.accept(&sender, sent, request.into_inner()).await?;
        let (stored, duplicate) = store::insert(&self.database, &row)
            .await
            .map_err(ApiError::from)?;
        if !duplicate {
            if stored.recipient.is_empty() {
                self.wake.notify_one();
            } else {
                self.inbox_changed.notify_waiters();
            }
        }
        Ok(Response::new(SendMessageResponse {
            receipt: Some(MessageReceipt {
                message_id: stored.message_id.clone(),
                accepted_at_ms: stored.accepted_ms,
                expires_at_ms: stored.expires_ms,
                state: state_of(&stored.state) as i32,
            }),
            duplicate,
        }))
    }

    async fn get_message_status(
        &self,
        request: Request<GetMessageStatusRequest>,
    ) -> Result<Response<GetMessageStatusResponse>, Status> {
        let sender = caller(&request)?;
        let message_id = request.into_inner().message_id;
        if message_id.is_empty() {
            return Err(ApiError::invalid_field("message_id", "is required").into());
        }
        match store::find(&self.database, &sender, &message_id)
            .await
            .map_err(ApiError::from)?
        {
            Some(message) => Ok(Response::new(GetMessageStatusResponse {
                status: Some(status_message(message)),
            })),
            None => Err(ApiError::not_found(
                "MESSAGE_NOT_FOUND",
                format!("{sender} sent no message {message_id}"),
            )
            .into()),
        }
    }

    async fn get_messages(
        &self,
        request: Request<GetMessagesRequest>,
    ) -> Result<Response<GetMessagesResponse>, Status> {
        let participant = caller(&request)?;
        let limit = page_size(request.into_inner().page_size)?;
        let rows = store::pending_inbox(&self.database, &participant, limit as i64)
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(GetMessagesResponse {
            items: rows.into_iter().map(inbox_item).collect(),
        }))
    }

    async fn ack_messages(
        &self,
        request: Request<AckMessagesRequest>,
    ) -> Result<Response<AckMessagesResponse>, Status> {
        let participant = caller(&request)?;
        let item_ids = request.into_inner().item_ids;
        if item_ids.len() > shlyuz_kit::paging::MAX_PAGE_SIZE {
            return Err(ApiError::invalid_field(
                "item_ids",
                format!(
                    "at most {} items per call",
                    shlyuz_kit::paging::MAX_PAGE_SIZE
                ),
            )
            .into());
        }
        let acknowledged = self.dispatcher.acknowledge(&participant, &item_ids).await?;
        Ok(Response::new(AckMessagesResponse {
            acknowledged: i32::try_from(acknowledged).unwrap_or(i32::MAX),
        }))
    }

    type StreamMessagesStream = InboxStream;

    async fn stream_messages(
        &self,
        request: Request<StreamMessagesRequest>,
    ) -> Result<Response<Self::StreamMessagesStream>, Status> {
        let participant = caller(&request)?;
        let database = self.database.clone();
        let inbox_changed = self.inbox_changed.clone();
        let poll_interval = self.options.poll_interval.max(Duration::from_millis(100)) * 5;
        let (sender, receiver) =
            tokio::sync::mpsc::channel::<Result<StreamMessagesResponse, Status>>(64);
        tokio::spawn(async move {
            // Items pushed but not yet acknowledged are not pushed again on this stream.
            let mut pushed: HashSet<String> = HashSet::new();
            loop {
                let changed = inbox_changed.notified();
                match store::pending_inbox(&database, &participant, 500).await {
                    Ok(rows) => {
                        let pending: HashSet<String> =
                            rows.iter().map(|row| row.item_id.clone()).collect();
                        pushed.retain(|item_id| pending.contains(item_id));
                        for row in rows {
                            if pushed.insert(row.item_id.clone())
                                && sender
                                    .send(Ok(StreamMessagesResponse {
                                        item: Some(inbox_item(row)),
                                    }))
                                    .await
                                    .is_err()
                            {
                                return;
                            }
                        }
                    }
                    Err(error) => {
                        let _ = sender.send(Err(ApiError::from(error).into())).await;
                        return;
                    }
                }
                tokio::select! {
                    _ = changed => {}
                    _ = tokio::time::sleep(poll_interval) => {}
                    _ = sender.closed() => return,
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(receiver),
        )))
    }
}
