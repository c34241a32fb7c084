//! The gRPC surface: request validation and the mapping between protobuf and the service.

use shlyuz_kit::error::{ApiError, parse_iin_field};
use shlyuz_kit::paging;
use shlyuz_proto::notify::v1 as pb;
use tonic::{Request, Response, Status};

use crate::inbound::{InboundSms, OUTCOME_INVALID_CODE, OUTCOME_NO_CONVERSATION, OUTCOME_ROUTED};
use crate::notifier::{Notifier, SendCommand};
use crate::otp::{DEFAULT_TEMPLATE, OtpIssuer, OtpText};
use crate::sms::{Language, mask_phone, normalize_phone};
use crate::store::{self, NewConversation, NotificationRow};

/// Longest idempotency key accepted.
pub const MAX_IDEMPOTENCY_KEY_CHARS: usize = 200;
/// Longest reply window accepted.
pub const MAX_CONVERSATION_MS: i64 = 30 * 24 * 3600 * 1000;

/// The participant that called, as the gateway stamps it; `direct` for calls that bypassed it
/// (tests, operations on the loopback port).
fn caller<T>(request: &Request<T>) -> String {
    request
        .metadata()
        .get(shlyuz_kit::envelope::SENDER)
        .and_then(|value| value.to_str().ok())
        .filter(|value| !value.is_empty())
        .unwrap_or("direct")
        .to_string()
}

fn language_of(field: &str, value: i32) -> Result<Language, ApiError> {
    match pb::Language::try_from(value) {
        Ok(pb::Language::Kk) => Ok(Language::Kk),
        Ok(pb::Language::Ru) => Ok(Language::Ru),
        _ => Err(ApiError::invalid_field(
            field,
            "must be LANGUAGE_KK or LANGUAGE_RU",
        )),
    }
}

fn language_to_proto(code: &str) -> pb::Language {
    match Language::from_code(code) {
        Language::Kk => pb::Language::Kk,
        Language::Ru => pb::Language::Ru,
    }
}

fn state_to_proto(state: &str) -> pb::NotificationState {
    match state {
        store::STATE_QUEUED => pb::NotificationState::Queued,
        store::STATE_SENT => pb::NotificationState::Sent,
        store::STATE_DELIVERED => pb::NotificationState::Delivered,
        store::STATE_FAILED => pb::NotificationState::Failed,
        _ => pb::NotificationState::Unspecified,
    }
}

/// The protobuf view of a stored notification.
pub fn notification_to_proto(row: &NotificationRow) -> pb::Notification {
    pb::Notification {
        id: row.id.clone(),
        recipient_iin: row.recipient_iin.clone(),
        recipient_phone_masked: if row.recipient_phone.is_empty() {
            String::new()
        } else {
            mask_phone(&row.recipient_phone)
        },
        channels: row
            .channels
            .split(',')
            .filter_map(|code| match code {
                store::CHANNEL_SMS => Some(pb::Channel::Sms as i32),
                store::CHANNEL_CABINET => Some(pb::Channel::Cabinet as i32),
                _ => None,
            })
            .collect(),
        template_id: row.template_id.clone(),
        language: language_to_proto(&row.language) as i32,
        state: state_to_proto(&row.state) as i32,
        attempts: i32::try_from(row.attempts).unwrap_or(i32::MAX),
        failure_reason: row.failure_reason.clone(),
        sms_segments: i32::try_from(row.sms_segments).unwrap_or(i32::MAX),
        accepted_at_ms: row.accepted_ms,
        updated_at_ms: row.updated_ms,
        conversation_id: row.conversation_id.clone(),
        text: row.text.clone(),
    }
}

fn is_participant_id(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 63
        && value.chars().all(|character| {
            character.is_ascii_lowercase() || character.is_ascii_digit() || character == '-'
        })
}

fn conversation_of(
    conversation: &pb::Conversation,
    now_ms: i64,
) -> Result<NewConversation, ApiError> {
    if !is_participant_id(&conversation.reply_participant) {
        return Err(ApiError::invalid_field(
            "conversation.reply_participant",
            "must be a participant id (lowercase letters, digits, '-')",
        ));
    }
    if conversation.accepted_reply_codes.is_empty() || conversation.accepted_reply_codes.len() > 20
    {
        return Err(ApiError::invalid_field(
            "conversation.accepted_reply_codes",
            "name 1 to 20 codes",
        ));
    }
    for code in &conversation.accepted_reply_codes {
        if code.is_empty()
            || code.len() > 10
            || !code.chars().all(|character| character.is_ascii_digit())
        {
            return Err(ApiError::invalid_field(
                "conversation.accepted_reply_codes",
                format!("{code:?} is not 1 to 10 digits"),
            ));
        }
    }
    if conversation.expires_at_ms <= now_ms
        || conversation.expires_at_ms > now_ms + MAX_CONVERSATION_MS
    {
        return Err(ApiError::invalid_field(
            "conversation.expires_at_ms",
            "must be in the future and within 30 days",
        ));
    }
    if conversation.correlation_id.len() > 200 {
        return Err(ApiError::invalid_field(
            "conversation.correlation_id",
            "longer than 200 characters",
        ));
    }
    Ok(NewConversation {
        reply_participant: conversation.reply_participant.clone(),
        accepted_codes: conversation.accepted_reply_codes.clone(),
        correlation_id: conversation.correlation_id.clone(),
        expires_ms: conversation.expires_at_ms,
    })
}

/// `NotificationService`.
#[derive(Clone)]
pub struct NotificationGrpc {
    notifier: Notifier,
}

impl NotificationGrpc {
    /// The service over `notifier`.
    pub fn new(notifier: Notifier) -> Self {
        Self { notifier }
    }

    async fn send(
        &self,
        caller: &str,
        request: pb::SendNotificationRequest,
    ) -> Result<pb::SendNotificationResponse, ApiError> {
        let key = request.idempotency_key.trim();
        if key.is_empty() || key.chars().count() > MAX_IDEMPOTENCY_KEY_CHARS {
            return Err(ApiError::invalid_field(
                "idempotency_key",
                format!("must be 1 to {MAX_IDEMPOTENCY_KEY_CHARS} characters"),
            ));
        }
        let recipient_iin = if request.recipient_iin.is_empty() {
            String::new()
        } else {
            parse_iin_field("recipient_iin", &request.recipient_iin)?
                .as_str()
                .to_string()
        };
        let recipient_phone = if request.recipient_phone.is_empty() {
            String::new()
        } else {
            normalize_phone("recipient_phone", &request.recipient_phone)?
        };
        let mut sms = false;
        let mut cabinet = false;
        for channel in &request.channels {
            match pb::Channel::try_from(*channel) {
                Ok(pb::Channel::Sms) => sms = true,
                Ok(pb::Channel::Cabinet) => cabinet = true,
                _ => {
                    return Err(ApiError::invalid_field(
                        "channels",
                        "each must be CHANNEL_SMS or CHANNEL_CABINET",
                    ));
                }
            }
        }
        let language = language_of("language", request.language)?;
        let now_ms = self.notifier.clock().now_millis();
        let conversation = request
            .conversation
            .as_ref()
            .map(|conversation| conversation_of(conversation, now_ms))
            .transpose()?;
        let accepted = self
            .notifier
            .send(SendCommand {
                recipient_iin,
                recipient_phone,
                sms,
                cabinet,
                template_id: request.template_id,
                parameters: request.parameters.into_iter().collect(),
                language,
                idempotency_key: format!("{caller}/{key}"),
                conversation,
            })
            .await?;
        Ok(pb::SendNotificationResponse {
            notification: Some(notification_to_proto(&accepted.notification)),
            duplicate: accepted.duplicate,
        })
    }

    async fn list_inbox(
        &self,
        request: pb::ListInboxRequest,
    ) -> Result<pb::ListInboxResponse, ApiError> {
        let iin = parse_iin_field("iin", &request.iin)?;
        let page_size = paging::page_size(request.page_size)?;
        let scope = format!("inbox:{}:{}", iin.as_str(), request.unread_only);
        let before = paging::decode_page_token(&request.page_token, &scope)?;
        let database = self.notifier.database();
        let mut rows = store::list_inbox(
            database,
            iin.as_str(),
            before.as_deref(),
            request.unread_only,
            i64::try_from(page_size + 1).unwrap_or(i64::MAX),
        )
        .await?;
        let next_page_token = if rows.len() > page_size {
            rows.truncate(page_size);
            rows.last()
                .map(|last| paging::encode_page_token(&scope, &last.id))
                .unwrap_or_default()
        } else {
            String::new()
        };
        let unread = store::unread_count(database, iin.as_str()).await?;
        Ok(pb::ListInboxResponse {
            items: rows
                .into_iter()
                .map(|row| pb::InboxItem {
                    id: row.id,
                    template_id: row.template_id,
                    language: language_to_proto(&row.language) as i32,
                    text: row.text,
                    created_at_ms: row.created_ms,
                    read: row.read_ms != 0,
                    read_at_ms: row.read_ms,
                })
                .collect(),
            next_page_token,
            unread_count: i32::try_from(unread).unwrap_or(i32::MAX),
        })
    }
}

#[tonic::async_trait]
impl pb::notification_service_server::NotificationService for NotificationGrpc {
    async fn send_notification(
        &self,
        request: Request<pb::SendNotificationRequest>,
    ) -> Result<Response<pb::SendNotificationResponse>, Status> {
        let caller = caller(&request);
        Ok(Response::new(
            self.send(&caller, request.into_inner()).await?,
        ))
    }

    async fn get_notification(
        &self,
        request: Request<pb::GetNotificationRequest>,
    ) -> Result<Response<pb::GetNotificationResponse>, Status> {
        let id = request.into_inner().id;
        if uuid::Uuid::parse_str(&id).is_err() {
            return Err(ApiError::invalid_field("id", "must be a notification id (UUID)").into());
        }
        let Some(row) = store::get_notification(self.notifier.database(), &id)
            .await
            .map_err(ApiError::from)?
        else {
            return Err(ApiError::not_found(
                crate::reasons::NOTIFICATION_NOT_FOUND,
                "no such notification",
            )
            .into());
        };
        Ok(Response::new(pb::GetNotificationResponse {
            notification: Some(notification_to_proto(&row)),
        }))
    }

    async fn list_inbox(
        &self,
        request: Request<pb::ListInboxRequest>,
    ) -> Result<Response<pb::ListInboxResponse>, Status> {
        Ok(Response::new(
            NotificationGrpc::list_inbox(self, request.into_inner()).await?,
        ))
    }

    async fn mark_read(
        &self,
        request: Request<pb::MarkReadRequest>,
    ) -> Result<Response<pb::MarkReadResponse>, Status> {
        let request = request.into_inner();
        let iin = parse_iin_field("iin", &request.iin)?;
        if request.item_ids.is_empty() || request.item_ids.len() > 1000 {
            return Err(ApiError::invalid_field("item_ids", "name 1 to 1000 items").into());
        }
        let marked = store::mark_read(
            self.notifier.database(),
            iin.as_str(),
            &request.item_ids,
            self.notifier.clock().now_millis(),
        )
        .await
        .map_err(ApiError::from)?;
        Ok(Response::new(pb::MarkReadResponse {
            marked: i32::try_from(marked).unwrap_or(i32::MAX),
        }))
    }
}

/// `OtpService`.
#[derive(Clone)]
pub struct OtpGrpc {
    issuer: OtpIssuer,
}

impl OtpGrpc {
    /// The service over `issuer`.
    pub fn new(issuer: OtpIssuer) -> Self {
        Self { issuer }
    }
}

#[tonic::async_trait]
impl pb::otp_service_server::OtpService for OtpGrpc {
    async fn issue_otp(
        &self,
        request: Request<pb::IssueOtpRequest>,
    ) -> Result<Response<pb::IssueOtpResponse>, Status> {
        let request = request.into_inner();
        let phone = if request.phone.is_empty() {
            String::new()
        } else {
            normalize_phone("phone", &request.phone)?
        };
        let iin = if request.iin.is_empty() {
            String::new()
        } else {
            parse_iin_field("iin", &request.iin)?.as_str().to_string()
        };
        let language = language_of("language", request.language)?;
        let text = OtpText {
            template_id: if request.template_id.is_empty() {
                DEFAULT_TEMPLATE.to_string()
            } else {
                request.template_id
            },
            parameters: request.parameters,
        };
        let issued = self
            .issuer
            .issue_with_text(&phone, &iin, &request.purpose, language, &text)
            .await?;
        Ok(Response::new(pb::IssueOtpResponse {
            otp_id: issued.otp_id,
            expires_at_ms: issued.expires_ms,
            max_attempts: i32::try_from(issued.max_attempts).unwrap_or(i32::MAX),
            notification_id: issued.notification_id,
        }))
    }

    async fn verify_otp(
        &self,
        request: Request<pb::VerifyOtpRequest>,
    ) -> Result<Response<pb::VerifyOtpResponse>, Status> {
        let request = request.into_inner();
        let iin = if request.iin.is_empty() {
            None
        } else {
            Some(parse_iin_field("iin", &request.iin)?)
        };
        let verification = self
            .issuer
            .verify_for(
                &request.otp_id,
                &request.code,
                &request.purpose,
                iin.as_ref().map(|iin| iin.as_str()),
            )
            .await?;
        Ok(Response::new(pb::VerifyOtpResponse {
            verified: verification.verified,
            attempts_left: i32::try_from(verification.attempts_left).unwrap_or(i32::MAX),
        }))
    }
}

/// `InboundSmsService`.
#[derive(Clone)]
pub struct InboundGrpc {
    inbound: InboundSms,
}

impl InboundGrpc {
    /// The service over `inbound`.
    pub fn new(inbound: InboundSms) -> Self {
        Self { inbound }
    }
}

/// The protobuf outcome of a stored outcome code.
pub fn outcome_to_proto(outcome: &str) -> pb::ReplyOutcome {
    match outcome {
        OUTCOME_ROUTED => pb::ReplyOutcome::Routed,
        OUTCOME_INVALID_CODE => pb::ReplyOutcome::AnsweredInvalidCode,
        OUTCOME_NO_CONVERSATION => pb::ReplyOutcome::AnsweredNoConversation,
        _ => pb::ReplyOutcome::Unspecified,
    }
}

#[tonic::async_trait]
impl pb::inbound_sms_service_server::InboundSmsService for InboundGrpc {
    async fn receive_sms(
        &self,
        request: Request<pb::ReceiveSmsRequest>,
    ) -> Result<Response<pb::ReceiveSmsResponse>, Status> {
        let request = request.into_inner();
        let outcome = self
            .inbound
            .receive(
                &request.from_phone,
                &request.text,
                &request.provider_message_id,
            )
            .await?;
        Ok(Response::new(pb::ReceiveSmsResponse {
            reply_id: outcome.reply_id,
            outcome: outcome_to_proto(&outcome.outcome) as i32,
            conversation_id: outcome.conversation_id,
            answer_notification_id: outcome.answer_notification_id,
            duplicate: outcome.duplicate,
        }))
    }
}
