//! ConsentService: a subject consents to a participant processing their data for a purpose; the
//! consent becomes active only when the subject types the code notify sent to their phone (from the
//! mobile citizens database). notify's `OtpService` keeps the code, its lifetime, its attempts and
//! the per-phone limit ([`crate::consent_otp`]); the consent row keeps notify's OTP id. A consent
//! whose code ran out of attempts is locked.

use std::sync::Arc;
use std::time::Duration;

use shlyuz_kit::clock::SharedClock;
use shlyuz_kit::db::Database;
use shlyuz_kit::error::{ApiError, parse_iin_field};
use shlyuz_kit::iin::Iin;
use shlyuz_kit::subject::{SUBJECT_IIN_METADATA, Subjects};
use shlyuz_proto::registry::v1 as pb;
use sqlx::Row;
use sqlx::any::AnyRow;
use tonic::{Request, Response, Status};

use crate::consent_otp::{
    CodeCheck, ConsentAsk, ConsentOtp, REASON_OTP_ATTEMPTS_EXHAUSTED, REASON_OTP_CODE_WRONG,
    REASON_OTP_EXPIRED,
};
use crate::grpc::{REASON_PHONE_NOT_FOUND, paginate};
use crate::records::kinds;
use crate::source::{RecordLookup as _, RegistrySource};

/// Longest consent: one year.
pub const MAX_CONSENT_LIFETIME: Duration = Duration::from_secs(366 * 24 * 3600);

const STATE_PENDING: i64 = 1;
const STATE_ACTIVE: i64 = 2;
const STATE_REVOKED: i64 = 3;
const STATE_EXPIRED: i64 = 4;
const STATE_LOCKED: i64 = 5;

const CONSENT_COLUMNS: &str = "consent_id, subject_iin, participant, purpose, scopes, state, \
     create_time_ms, expire_time_ms, confirm_time_ms, revoke_time_ms, otp_id, otp_expire_time_ms";

struct StoredConsent {
    consent: pb::Consent,
    /// notify's OTP id; empty for a consent requested before codes moved to notify.
    otp_id: String,
}

fn consent_from_row(row: &AnyRow) -> Result<StoredConsent, sqlx::Error> {
    let scopes: String = row.try_get("scopes")?;
    Ok(StoredConsent {
        consent: pb::Consent {
            consent_id: row.try_get("consent_id")?,
            subject_iin: row.try_get("subject_iin")?,
            participant: row.try_get("participant")?,
            purpose: row.try_get("purpose")?,
            scopes: scopes
                .split('\n')
                .filter(|scope| !scope.is_empty())
                .map(str::to_string)
                .collect(),
            state: i32::try_from(row.try_get::<i64, _>("state")?).unwrap_or(0),
            create_time_ms: row.try_get("create_time_ms")?,
            expire_time_ms: row.try_get("expire_time_ms")?,
            confirm_time_ms: row.try_get("confirm_time_ms")?,
            revoke_time_ms: row.try_get("revoke_time_ms")?,
        },
        otp_id: row.try_get("otp_id")?,
    })
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// An ACTIVE consent past its expiry reads as EXPIRED.
fn effective(mut consent: pb::Consent, now_ms: i64) -> pb::Consent {
    if consent.state == STATE_ACTIVE as i32 && consent.expire_time_ms <= now_ms {
        consent.state = STATE_EXPIRED as i32;
    }
    consent
}

fn validate_code(field: &str, value: &str, allowed: fn(char) -> bool) -> Result<(), ApiError> {
    if value.is_empty() || value.len() > 100 || !value.chars().all(allowed) {
        return Err(ApiError::invalid_field(
            field,
            "must be 1 to 100 characters of the allowed set",
        ));
    }
    Ok(())
}

fn validate_consent_id(value: &str) -> Result<(), ApiError> {
    uuid::Uuid::parse_str(value)
        .map(|_| ())
        .map_err(|_| ApiError::invalid_field("consent_id", "must be a UUID"))
}

fn consent_not_found() -> ApiError {
    ApiError::not_found("CONSENT_NOT_FOUND", "no consent with this id")
}

fn not_pending() -> ApiError {
    ApiError::failed_precondition(
        "CONSENT_NOT_PENDING",
        "the consent is not waiting for a code",
    )
}

/// notify's refusal of a code whose attempts are used up, for a consent locked by it.
fn attempts_exhausted() -> ApiError {
    ApiError::failed_precondition(
        REASON_OTP_ATTEMPTS_EXHAUSTED,
        "every attempt of the code was used: request a new consent",
    )
}

/// The consent service over the registry database, a source for phones and notify's codes.
#[derive(Clone)]
pub struct ConsentServiceImpl {
    database: Database,
    source: Arc<dyn RegistrySource>,
    clock: SharedClock,
    otp: ConsentOtp,
}

impl ConsentServiceImpl {
    /// The service over `database` (consents), `source` (persons, phones) and `otp` (notify).
    pub fn new(
        database: Database,
        source: Arc<dyn RegistrySource>,
        clock: SharedClock,
        otp: ConsentOtp,
    ) -> Self {
        Self {
            database,
            source,
            clock,
            otp,
        }
    }

    /// The tonic server.
    pub fn into_server(self) -> pb::consent_service_server::ConsentServiceServer<Self> {
        pb::consent_service_server::ConsentServiceServer::new(self)
    }

    async fn load(&self, consent_id: &str) -> Result<StoredConsent, ApiError> {
        let row = sqlx::query(&format!(
            "SELECT {CONSENT_COLUMNS} FROM consents WHERE consent_id = $1"
        ))
        .bind(consent_id)
        .fetch_optional(self.database.pool())
        .await?;
        match row {
            Some(row) => Ok(consent_from_row(&row)?),
            None => Err(consent_not_found()),
        }
    }

    /// Locks a pending consent whose code has no attempt left.
    async fn lock(&self, consent_id: &str) -> Result<(), ApiError> {
        sqlx::query("UPDATE consents SET state = $2 WHERE consent_id = $1 AND state = $3")
            .bind(consent_id)
            .bind(STATE_LOCKED)
            .bind(STATE_PENDING)
            .execute(self.database.pool())
            .await
            .map_err(ApiError::from)?;
        Ok(())
    }

    /// A request routed by the gateway must name the consent's subject; a direct call (the
    /// gateway's own consent check, reaching the registry over mTLS) carries no subject.
    fn require_subject_if_routed<T>(
        request: &Request<T>,
        subject_iin: &str,
    ) -> Result<(), ApiError> {
        if request.metadata().get(SUBJECT_IIN_METADATA).is_none() {
            return Ok(());
        }
        let subjects = Subjects::from_metadata(request.metadata())?;
        let iin = parse_iin_field("subject_iin", subject_iin)?;
        subjects.require("subject_iin", &iin)
    }
}

#[tonic::async_trait]
impl pb::consent_service_server::ConsentService for ConsentServiceImpl {
    async fn request_consent(
        &self,
        request: Request<pb::RequestConsentRequest>,
    ) -> Result<Response<pb::RequestConsentResponse>, Status> {
        let message = request.get_ref();
        let subject: Iin = parse_iin_field("subject_iin", &message.subject_iin)?;
        validate_code("participant", &message.participant, |character| {
            character.is_ascii_lowercase() || character.is_ascii_digit() || character == '-'
        })?;
        validate_code("purpose", &message.purpose, |character| {
            character.is_ascii_uppercase() || character.is_ascii_digit() || character == '_'
        })?;
        if message.scopes.len() > 20
            || message
                .scopes
                .iter()
                .any(|scope| scope.is_empty() || scope.len() > 200 || scope.contains('\n'))
        {
            return Err(ApiError::invalid_field(
                "scopes",
                "at most 20 scopes of 1 to 200 characters, no line breaks",
            )
            .into());
        }
        let now_ms = self.clock.now_millis();
        if message.expire_time_ms <= now_ms
            || message.expire_time_ms > now_ms + millis(MAX_CONSENT_LIFETIME)
        {
            return Err(ApiError::invalid_field(
                "expire_time_ms",
                "must be in the future and at most one year ahead",
            )
            .into());
        }
        let subjects = Subjects::from_metadata(request.metadata())?;
        subjects.require("subject_iin", &subject)?;

        let persons = self
            .source
            .records(&kinds::PERSONS, std::slice::from_ref(&subject))
            .await
            .map_err(ApiError::from)?;
        if persons.is_empty() {
            return Err(crate::grpc::person_not_found(&subject).into());
        }
        let phone = self
            .source
            .records(&kinds::PHONES, std::slice::from_ref(&subject))
            .await
            .map_err(ApiError::from)?
            .into_iter()
            .next()
            .ok_or_else(|| {
                ApiError::failed_precondition(
                    REASON_PHONE_NOT_FOUND,
                    "no phone is linked to the subject: the OTP cannot be sent",
                )
            })?;

        // notify sends the code first: without it no consent row is written.
        let consent_id = uuid::Uuid::new_v4().to_string();
        let issued = self
            .otp
            .issue(
                &subject,
                &phone.phone_number,
                ConsentAsk {
                    participant: &message.participant,
                    purpose: &message.purpose,
                },
            )
            .await?;
        let consent = pb::Consent {
            consent_id: consent_id.clone(),
            subject_iin: subject.as_str().to_string(),
            participant: message.participant.clone(),
            purpose: message.purpose.clone(),
            scopes: message.scopes.clone(),
            state: STATE_PENDING as i32,
            create_time_ms: now_ms,
            expire_time_ms: message.expire_time_ms,
            confirm_time_ms: 0,
            revoke_time_ms: 0,
        };
        sqlx::query(&format!(
            "INSERT INTO consents ({CONSENT_COLUMNS})
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 0, 0, $9, $10)"
        ))
        .bind(&consent.consent_id)
        .bind(&consent.subject_iin)
        .bind(&consent.participant)
        .bind(&consent.purpose)
        .bind(consent.scopes.join("\n"))
        .bind(STATE_PENDING)
        .bind(now_ms)
        .bind(consent.expire_time_ms)
        .bind(&issued.otp_id)
        .bind(issued.expire_time_ms)
        .execute(self.database.pool())
        .await
        .map_err(ApiError::from)?;
        tracing::info!(consent_id = %consent_id, participant = %consent.participant, purpose = %consent.purpose, otp_id = %issued.otp_id, "consent requested, code sent by notify");
        Ok(Response::new(pb::RequestConsentResponse {
            consent: Some(consent),
            otp_expire_time_ms: issued.expire_time_ms,
        }))
    }

    async fn confirm_consent(
        &self,
        request: Request<pb::ConfirmConsentRequest>,
    ) -> Result<Response<pb::ConfirmConsentResponse>, Status> {
        let message = request.get_ref();
        validate_consent_id(&message.consent_id)?;
        if message.otp.len() != 6 || !message.otp.bytes().all(|byte| byte.is_ascii_digit()) {
            return Err(ApiError::invalid_field("otp", "must be 6 digits").into());
        }
        let stored = self.load(&message.consent_id).await?;
        Self::require_subject_if_routed(&request, &stored.consent.subject_iin)?;
        match i64::from(stored.consent.state) {
            STATE_PENDING => {}
            STATE_LOCKED => return Err(attempts_exhausted().into()),
            _ => return Err(not_pending().into()),
        }
        if stored.otp_id.is_empty() {
            return Err(ApiError::failed_precondition(
                REASON_OTP_EXPIRED,
                "the code of this consent has expired: request a new consent",
            )
            .into());
        }
        let subject = parse_iin_field("subject_iin", &stored.consent.subject_iin)?;
        let check = match self
            .otp
            .verify(&stored.otp_id, &message.otp, &subject)
            .await
        {
            Ok(check) => check,
            Err(refusal) => {
                if refusal.reason() == REASON_OTP_ATTEMPTS_EXHAUSTED {
                    self.lock(&message.consent_id).await?;
                }
                return Err(refusal.into());
            }
        };
        match check {
            CodeCheck::Matched => {}
            CodeCheck::Wrong { attempts_left } if attempts_left <= 0 => {
                tracing::warn!(consent_id = %message.consent_id, "wrong code, no attempt left: consent locked");
                self.lock(&message.consent_id).await?;
                return Err(attempts_exhausted().into());
            }
            CodeCheck::Wrong { attempts_left } => {
                tracing::warn!(consent_id = %message.consent_id, attempts_left, "wrong code");
                return Err(ApiError::invalid_field("otp", "does not match")
                    .with_reason(REASON_OTP_CODE_WRONG)
                    .with_metadata("attempts_left", attempts_left.to_string())
                    .into());
            }
        }
        let now_ms = self.clock.now_millis();
        let row = sqlx::query(&format!(
            "UPDATE consents SET state = $2, confirm_time_ms = $3
             WHERE consent_id = $1 AND state = $4
             RETURNING {CONSENT_COLUMNS}"
        ))
        .bind(&message.consent_id)
        .bind(STATE_ACTIVE)
        .bind(now_ms)
        .bind(STATE_PENDING)
        .fetch_optional(self.database.pool())
        .await
        .map_err(ApiError::from)?;
        let Some(row) = row else {
            return Err(not_pending().into());
        };
        let confirmed = consent_from_row(&row).map_err(ApiError::from)?;
        Ok(Response::new(pb::ConfirmConsentResponse {
            consent: Some(effective(confirmed.consent, now_ms)),
        }))
    }

    async fn get_consent(
        &self,
        request: Request<pb::GetConsentRequest>,
    ) -> Result<Response<pb::GetConsentResponse>, Status> {
        validate_consent_id(&request.get_ref().consent_id)?;
        let stored = self.load(&request.get_ref().consent_id).await?;
        Self::require_subject_if_routed(&request, &stored.consent.subject_iin)?;
        Ok(Response::new(pb::GetConsentResponse {
            consent: Some(effective(stored.consent, self.clock.now_millis())),
        }))
    }

    async fn list_consents(
        &self,
        request: Request<pb::ListConsentsRequest>,
    ) -> Result<Response<pb::ListConsentsResponse>, Status> {
        let message = request.get_ref();
        let subject = parse_iin_field("subject_iin", &message.subject_iin)?;
        Subjects::from_metadata(request.metadata())?.require("subject_iin", &subject)?;
        let rows = sqlx::query(&format!(
            "SELECT {CONSENT_COLUMNS} FROM consents WHERE subject_iin = $1"
        ))
        .bind(subject.as_str())
        .fetch_all(self.database.pool())
        .await
        .map_err(ApiError::from)?;
        let now_ms = self.clock.now_millis();
        let mut consents = Vec::with_capacity(rows.len());
        for row in &rows {
            consents.push(effective(
                consent_from_row(row).map_err(ApiError::from)?.consent,
                now_ms,
            ));
        }
        let (page, next_page_token) = paginate(
            consents,
            // Newest first: ascending on the time left until the end of time.
            |consent| {
                format!(
                    "{:020}/{}",
                    i64::MAX - consent.create_time_ms,
                    consent.consent_id
                )
            },
            &format!("consents/{}", subject.as_str()),
            message.page_size,
            &message.page_token,
        )?;
        Ok(Response::new(pb::ListConsentsResponse {
            consents: page,
            next_page_token,
        }))
    }

    async fn revoke_consent(
        &self,
        request: Request<pb::RevokeConsentRequest>,
    ) -> Result<Response<pb::RevokeConsentResponse>, Status> {
        let consent_id = request.get_ref().consent_id.clone();
        validate_consent_id(&consent_id)?;
        let stored = self.load(&consent_id).await?;
        let subject = parse_iin_field("subject_iin", &stored.consent.subject_iin)?;
        Subjects::from_metadata(request.metadata())?.require("subject_iin", &subject)?;
        let now_ms = self.clock.now_millis();
        sqlx::query(
            "UPDATE consents SET state = $2, revoke_time_ms = $3
             WHERE consent_id = $1 AND state IN ($4, $5)",
        )
        .bind(&consent_id)
        .bind(STATE_REVOKED)
        .bind(now_ms)
        .bind(STATE_PENDING)
        .bind(STATE_ACTIVE)
        .execute(self.database.pool())
        .await
        .map_err(ApiError::from)?;
        let revoked = self.load(&consent_id).await?;
        tracing::info!(consent_id = %consent_id, "consent revoked");
        Ok(Response::new(pb::RevokeConsentResponse {
            consent: Some(effective(revoked.consent, now_ms)),
        }))
    }
}
