//! `shlyuz.gateway.v1.AsyncChannelService`. The call itself arrives through the sync channel,
//! which has authenticated the caller and verified the envelope's signature over the request
//! (and so over the payload); here the target's own access rule, purpose, subject and consent are
//! applied before the message is accepted.

use std::collections::{BTreeSet, HashSet};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use prost::Message;
use shlyuz_kit::clock::SharedClock;
use shlyuz_kit::db::Database;
use shlyuz_kit::error::{ApiError, FieldViolation};
use shlyuz_kit::paging::page_size;
use shlyuz_kit::subject::{MAX_SUBJECTS, declare_response_subjects};
use shlyuz_proto::gateway::v1::async_channel_service_server::{
    AsyncChannelService, AsyncChannelServiceServer,
};
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
use super::inbox_poller::InboxPoller;
use super::quota::{ASYNC_QUOTA_EXCEEDED, QuotaLimits, SenderQuotas};
use super::store::{self, InboxRow, MessageRow};
use crate::consent::{ConsentChecker, ConsentQuery};
use crate::directory::{Directory, DirectoryHandle};
use crate::envelope;
use crate::identity::CallerIdentity;
use crate::message_log::{Channel, LogRecord, MessageLog, sha256};
use shlyuz_kit::error::reasons;

/// `ErrorInfo` reason of a `reply_to` that may not receive the message's outcome.
pub const REPLY_TO_NOT_ALLOWED: &str = "REPLY_TO_NOT_ALLOWED";

/// `ErrorInfo` reason of a `StreamMessages` stream ended at the caller's deadline.
pub const STREAM_DEADLINE: &str = "STREAM_DEADLINE";

/// The service's name, as routed in the directory.
const SERVICE_NAME: &str =
    <AsyncChannelServiceServer<AsyncChannelApi> as tonic::server::NamedService>::NAME;

/// Bytes of the gRPC length prefix in front of every message on the wire.
const GRPC_MESSAGE_PREFIX: usize = 5;

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
    /// Where inbox reads that return personal data are logged (StreamMessages).
    pub(super) message_log: MessageLog,
    /// The one database poller of every open StreamMessages.
    pub(super) inbox_poller: InboxPoller,
    /// Each sender's messages and bytes in flight.
    pub(super) quotas: Arc<SenderQuotas>,
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
            ApiError::unauthenticated(reasons::UNKNOWN_PARTICIPANT, "the caller is not identified")
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
        let sent_id = metadata_text(metadata, envelope::MESSAGE_ID);
        if sent_id.is_empty() {
            return Err(ApiError::invalid_field(
                envelope::MESSAGE_ID,
                "is required: an async message is sent with a signed envelope",
            ));
        }
        // The sync channel forwards the id lower-cased already; normalised here as well so the
        // idempotency key has one form whoever calls.
        let message_id = normal_message_id(envelope::MESSAGE_ID, &sent_id)?;
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
        let reply_to = if request.reply_to.is_empty() || request.reply_to == sender {
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
                        reasons::UNKNOWN_PARTICIPANT,
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
                // Only a method the route lists, exactly, like a sync call: a `*` rule grants no
                // other method string, and none reaches the upstream in another shape.
                if !route.methods.contains(&target.method) {
                    return Err(ApiError::new(
                        tonic::Code::Unimplemented,
                        "UNKNOWN_METHOD",
                        format!("{} has no method {} routed", target.service, target.method),
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
        if row.reply_to != row.sender {
            check_reply_to(&directory, &row)?;
        }
        Ok(row)
    }
}

/// `reply_to` other than the sender receives the outcome — the target's answer, personal data on
/// a personal-data route — so it must be a participant that could have asked for it itself: with
/// its own access rule for the target method and the envelope's purpose, and accepting messages
/// from the sender. A recipient message has no outcome to send elsewhere.
fn check_reply_to(directory: &Directory, message: &MessageRow) -> Result<(), ApiError> {
    let (sender, reply_to) = (message.sender.as_str(), message.reply_to.as_str());
    let refused = |why: String| {
        tracing::warn!(participant = %sender, reply_to = %reply_to, reason = REPLY_TO_NOT_ALLOWED, "reply_to refused");
        Err(ApiError::permission_denied(
            REPLY_TO_NOT_ALLOWED,
            format!("reply_to {reply_to} may not receive this message's outcome: {why}"),
        )
        .with_metadata("reply_to", reply_to))
    };
    if !message.recipient.is_empty() {
        return refused("a message to a recipient has no outcome for another participant".into());
    }
    let accepts = directory
        .participant(reply_to)
        .is_some_and(|participant| participant.accepts_messages_from(sender));
    if !accepts {
        return refused(format!("it does not accept messages from {sender}"));
    }
    let Some(route) = directory.route(&message.service) else {
        return refused(format!("no route for service {}", message.service));
    };
    if let Err(error) = crate::policy::access_rule(
        directory,
        route,
        reply_to,
        &message.service,
        &message.method,
        &message.purpose,
        &message.subject_iin,
    ) {
        return refused(format!(
            "it has no access rule of its own for {}/{} and this purpose ({})",
            message.service,
            message.method,
            error.message()
        ));
    }
    Ok(())
}

/// The lower-case form of a message id taken from `field`, or `INVALID_ARGUMENT` naming it.
fn normal_message_id(field: &str, text: &str) -> Result<String, ApiError> {
    envelope::normal_message_id(text).ok_or_else(|| {
        ApiError::invalid_field(
            field,
            "must be a UUID such as 0191f5a0-3c1e-7b3a-9a52-5d0b5e0f6c11",
        )
    })
}

/// The persons whose data `message` carries to whoever reads it: its subjects, when it was sent
/// about them to a personal-data target (or with subjects to a participant).
fn personal_subjects(message: &MessageRow) -> impl Iterator<Item = &str> {
    message
        .subject_iin
        .split(',')
        .map(str::trim)
        .filter(move |iin| message.personal_data && !iin.is_empty())
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

impl AsyncChannelApi {
    /// The receipt of the message `row` would store, once it is within its sender's quota. A
    /// sender over its quota still gets the first receipt of a message it already sent.
    async fn store_within_quota(&self, row: MessageRow) -> Result<SendMessageResponse, ApiError> {
        let limits = QuotaLimits {
            messages: self.options.quota_messages,
            bytes: self.options.quota_bytes,
        };
        let payload_bytes = row.payload.len();
        if let Err(refusal) = self
            .quotas
            .reserve(&self.database, limits, &row.sender, payload_bytes)
            .await
        {
            if refusal.reason() == ASYNC_QUOTA_EXCEEDED
                && let Some(existing) = store::find(&self.database, &row.sender, &row.message_id)
                    .await
                    .map_err(ApiError::from)?
            {
                return Ok(receipt(&existing, true));
            }
            tracing::warn!(participant = %row.sender, reason = %refusal.reason(), "async message refused");
            return Err(refusal);
        }
        let (stored, duplicate) = match store::insert(&self.database, &row).await {
            Ok(inserted) => inserted,
            Err(error) => {
                self.quotas.release(&row.sender, payload_bytes);
                return Err(ApiError::from(error));
            }
        };
        if duplicate {
            self.quotas.release(&row.sender, payload_bytes);
        } else if stored.recipient.is_empty() {
            self.wake.notify_one();
        } else {
            self.inbox_changed.notify_waiters();
        }
        Ok(receipt(&stored, duplicate))
    }

    /// The largest `GetMessagesResponse` the async channel's route lets out, less the gRPC prefix.
    fn response_budget(&self) -> usize {
        let directory = self.directory.snapshot();
        let limit = directory
            .route(SERVICE_NAME)
            .map_or(directory.settings().max_response_bytes, |route| {
                route.max_response_bytes
            });
        limit.saturating_sub(GRPC_MESSAGE_PREFIX)
    }

    /// Logs the push of `rows` to `reader` on its StreamMessages, one entry per item that carries
    /// personal data, each with subject-access rows for the item's persons; all of them durable
    /// before the items leave. `MESSAGE_LOG_UNAVAILABLE` when any could not be written.
    async fn log_pushed(
        &self,
        reader: &str,
        reader_user_id: &str,
        pushed: &[(InboxRow, InboxItem)],
    ) -> Result<(), ApiError> {
        let request_hash = sha256(&StreamMessagesRequest::default().encode_to_vec());
        let appends = pushed
            .iter()
            .filter(|(row, _)| personal_subjects(&row.message).next().is_some())
            .map(|(row, item)| {
                let response = StreamMessagesResponse {
                    item: Some(item.clone()),
                }
                .encode_to_vec();
                let record = LogRecord {
                    time_ms: self.clock.now_millis(),
                    message_id: row.message.message_id.clone(),
                    correlation_id: row.message.correlation_id.clone(),
                    sender: reader.to_string(),
                    user_id: reader_user_id.to_string(),
                    service: SERVICE_NAME.to_string(),
                    method: "StreamMessages".to_string(),
                    purpose: row.message.purpose.clone(),
                    subject_iin: personal_subjects(&row.message)
                        .collect::<Vec<_>>()
                        .join(","),
                    request_hash,
                    response_hash: Some(sha256(&response)),
                    status_code: tonic::Code::Ok as i32,
                    reason: String::new(),
                    duration_us: 0,
                    channel: Channel::Async,
                    personal_data: true,
                    request_body: None,
                    response_body: Some(response),
                };
                self.message_log.append(record)
            });
        let results = futures::future::join_all(appends).await;
        if let Some(error) = results.into_iter().find_map(Result::err) {
            tracing::error!(error = %error, participant = %reader, "inbox push not logged");
            return Err(ApiError::unavailable(
                "MESSAGE_LOG_UNAVAILABLE",
                "the gateway could not record the pushed items in its message log",
            ));
        }
        Ok(())
    }
}

fn receipt(stored: &MessageRow, duplicate: bool) -> SendMessageResponse {
    SendMessageResponse {
        receipt: Some(MessageReceipt {
            message_id: stored.message_id.clone(),
            accepted_at_ms: stored.accepted_ms,
            expires_at_ms: stored.expires_ms,
            state: state_of(&stored.state) as i32,
        }),
        duplicate,
    }
}

/// The stream's deadline from the `grpc-timeout` the sync channel forwards (the caller's deadline
/// bounded by the route's timeout); `None` when the call came without one.
fn stream_deadline(metadata: &tonic::metadata::MetadataMap) -> Option<tokio::time::Instant> {
    let timeout = metadata
        .get("grpc-timeout")
        .and_then(|value| value.to_str().ok())
        .and_then(crate::grpc_frames::parse_grpc_timeout)?;
    Some(tokio::time::Instant::now() + timeout)
}

#[tonic::async_trait]
impl AsyncChannelService for AsyncChannelApi {
    async fn send_message(
        &self,
        request: Request<SendMessageRequest>,
    ) -> Result<Response<SendMessageResponse>, Status> {
        let sender = caller(&request)?;
        let sent = Self::sent_envelope(request.metadata())?;
        let row = self.accept(&sender, sent, request.into_inner()).await?;
        Ok(Response::new(self.store_within_quota(row).await?))
    }

    async fn get_message_status(
        &self,
        request: Request<GetMessageStatusRequest>,
    ) -> Result<Response<GetMessageStatusResponse>, Status> {
        let sender = caller(&request)?;
        let asked = request.into_inner().message_id;
        if asked.is_empty() {
            return Err(ApiError::invalid_field("message_id", "is required").into());
        }
        let message_id = normal_message_id("message_id", &asked)?;
        match store::find(&self.database, &sender, &message_id)
            .await
            .map_err(ApiError::from)?
        {
            Some(message) => {
                // The status carries the target's answer: its persons get access rows.
                let subjects: Vec<String> =
                    personal_subjects(&message).map(str::to_string).collect();
                let response = Response::new(GetMessageStatusResponse {
                    status: Some(status_message(message)),
                });
                Ok(declare_response_subjects(
                    response,
                    subjects.iter().map(String::as_str),
                ))
            }
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
        // Bounded in bytes (the route's response limit) and in persons (one declaration names
        // at most MAX_SUBJECTS), oldest first; the rest waits for the next call.
        let budget = self.response_budget();
        let mut items = Vec::new();
        let mut encoded = 0_usize;
        let mut subjects: BTreeSet<String> = BTreeSet::new();
        for row in rows {
            let row_subjects: Vec<String> = personal_subjects(&row.message)
                .filter(|iin| !subjects.contains(*iin))
                .map(str::to_string)
                .collect();
            let item = inbox_item(row);
            let item_bytes = item.encoded_len();
            let field_bytes = 1 + prost::length_delimiter_len(item_bytes) + item_bytes;
            if items.is_empty() && field_bytes > budget {
                return Err(ApiError::new(
                    tonic::Code::ResourceExhausted,
                    "MESSAGE_TOO_LARGE",
                    format!(
                        "inbox item {} is {field_bytes} bytes, more than the {budget} bytes a response of {SERVICE_NAME} may carry: raise the route's max_response_bytes, or acknowledge the item to skip it",
                        item.item_id
                    ),
                )
                .with_metadata("item_id", item.item_id)
                .into());
            }
            if encoded + field_bytes > budget || subjects.len() + row_subjects.len() > MAX_SUBJECTS
            {
                break;
            }
            encoded += field_bytes;
            subjects.extend(row_subjects);
            items.push(item);
        }
        let response = Response::new(GetMessagesResponse { items });
        Ok(declare_response_subjects(
            response,
            subjects.iter().map(String::as_str),
        ))
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
        let reader_user_id = metadata_text(request.metadata(), envelope::USER_ID);
        let deadline = stream_deadline(request.metadata());
        let api = self.clone();
        let mut subscription = self.inbox_poller.subscribe(&participant);
        let (sender, receiver) =
            tokio::sync::mpsc::channel::<Result<StreamMessagesResponse, Status>>(64);
        tokio::spawn(async move {
            let expired = async {
                match deadline {
                    Some(deadline) => tokio::time::sleep_until(deadline).await,
                    None => futures::future::pending::<()>().await,
                }
            };
            tokio::pin!(expired);
            // Items pushed but not yet acknowledged are not pushed again on this stream.
            let mut pushed: HashSet<String> = HashSet::new();
            loop {
                tokio::select! {
                    changed = subscription.snapshots.changed() => {
                        if changed.is_err() {
                            return;
                        }
                    }
                    _ = &mut expired => {
                        let ended = ApiError::new(
                            tonic::Code::DeadlineExceeded,
                            STREAM_DEADLINE,
                            "the stream reached its deadline (the caller's, bounded by the route's timeout): open a new one",
                        );
                        let _ = sender.send(Err(ended.into())).await;
                        return;
                    }
                    _ = sender.closed() => return,
                }
                let Some(rows) = subscription.snapshots.borrow_and_update().clone() else {
                    continue;
                };
                let pending: HashSet<&str> = rows.iter().map(|row| row.item_id.as_str()).collect();
                pushed.retain(|item_id| pending.contains(item_id.as_str()));
                let fresh: Vec<(InboxRow, InboxItem)> = rows
                    .iter()
                    .filter(|row| !pushed.contains(&row.item_id))
                    .map(|row| (row.clone(), inbox_item(row.clone())))
                    .collect();
                if fresh.is_empty() {
                    continue;
                }
                // Nothing about a person leaves before its access is durable in the log.
                if let Err(error) = api.log_pushed(&participant, &reader_user_id, &fresh).await {
                    let _ = sender.send(Err(error.into())).await;
                    return;
                }
                for (row, item) in fresh {
                    pushed.insert(row.item_id);
                    if sender
                        .send(Ok(StreamMessagesResponse { item: Some(item) }))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(receiver),
        )))
    }
}
