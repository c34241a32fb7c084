//! One-time passwords (seed 001: signing and consent by OTP): 6 digits sent by SMS, a short
//! lifetime, a limited number of attempts, a limited number of codes per phone, and only a
//! salted hash of the code in the database. The SMS text is an OTP template (`otp.*`), so a caller
//! such as the registry's consent can say in it who asks and for what.

use std::collections::HashMap;

use rand::Rng as _;
use shlyuz_kit::error::ApiError;
use sqlx::Row;

use crate::notifier::{Notifier, SendCommand};
use crate::sms::Language;

/// Reason: no such OTP.
pub const REASON_OTP_NOT_FOUND: &str = "OTP_NOT_FOUND";
/// Reason: the OTP has expired.
pub const REASON_OTP_EXPIRED: &str = "OTP_EXPIRED";
/// Reason: the OTP was already used.
pub const REASON_OTP_USED: &str = "OTP_USED";
/// Reason: every attempt was used.
pub const REASON_OTP_ATTEMPTS_EXHAUSTED: &str = "OTP_ATTEMPTS_EXHAUSTED";
/// Reason: too many codes for one phone.
pub const REASON_OTP_RATE_LIMITED: &str = "OTP_RATE_LIMITED";
/// `ErrorInfo` reason: the code was issued for another person (or to a bare phone).
pub const REASON_OTP_SUBJECT_MISMATCH: &str = "OTP_SUBJECT_MISMATCH";

/// The template of an SMS that carries only the code.
pub const DEFAULT_TEMPLATE: &str = "otp.code";
/// Every OTP template's id starts with this; `IssueOtp` sends no other template.
pub const TEMPLATE_PREFIX: &str = "otp.";
/// The parameters notify fills in an OTP template; a caller may not give them.
pub const FILLED_PARAMETERS: [&str; 2] = ["code", "ttl_minutes"];

/// The text of the SMS carrying a code: an OTP template and the parameters the caller gives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtpText {
    /// Template id, `otp.*`.
    pub template_id: String,
    /// Parameters other than [`FILLED_PARAMETERS`].
    pub parameters: HashMap<String, String>,
}

impl Default for OtpText {
    fn default() -> Self {
        Self {
            template_id: DEFAULT_TEMPLATE.to_string(),
            parameters: HashMap::new(),
        }
    }
}

/// OTP limits.
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct OtpSettings {
    /// Lifetime of a code, seconds.
    pub ttl_secs: u64,
    /// Attempts per code.
    pub max_attempts: u32,
    /// Codes per phone within `rate_window_secs`.
    pub max_per_window: u32,
    /// The rate-limit window, seconds.
    pub rate_window_secs: u64,
}

impl Default for OtpSettings {
    fn default() -> Self {
        Self {
            ttl_secs: 300,
            max_attempts: 5,
            max_per_window: 3,
            rate_window_secs: 900,
        }
    }
}

/// An issued OTP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedOtp {
    /// Id.
    pub otp_id: String,
    /// Expiry, epoch ms.
    pub expires_ms: i64,
    /// Attempts allowed.
    pub max_attempts: u32,
    /// The SMS carrying the code.
    pub notification_id: String,
}

/// The answer to a verification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verification {
    /// The code matched.
    pub verified: bool,
    /// Attempts left.
    pub attempts_left: u32,
}

/// Issues and verifies OTPs.
#[derive(Clone)]
pub struct OtpIssuer {
    notifier: Notifier,
    settings: OtpSettings,
}

/// SHA-256 of salt, purpose and code, so the stored value tells nothing without a guess of all
/// three and a code for one purpose cannot confirm another.
fn code_hash(salt: &[u8], purpose: &str, code: &str) -> Vec<u8> {
    let mut input = Vec::with_capacity(salt.len() + purpose.len() + code.len() + 2);
    input.extend_from_slice(salt);
    input.push(0);
    input.extend_from_slice(purpose.as_bytes());
    input.push(0);
    input.extend_from_slice(code.as_bytes());
    ring::digest::digest(&ring::digest::SHA256, &input)
        .as_ref()
        .to_vec()
}

fn equal_in_constant_time(left: &[u8], right: &[u8]) -> bool {
    left.len() == right.len()
        && left
            .iter()
            .zip(right)
            .fold(0u8, |difference, (a, b)| difference | (a ^ b))
            == 0
}

fn validate_purpose(purpose: &str) -> Result<(), ApiError> {
    let valid = !purpose.is_empty()
        && purpose.len() <= 64
        && purpose.chars().all(|character| {
            character.is_ascii_alphanumeric() || matches!(character, '_' | '-' | '.')
        });
    if valid {
        Ok(())
    } else {
        Err(ApiError::invalid_field(
            "purpose",
            "must be 1 to 64 characters of letters, digits, '_', '-' or '.'",
        ))
    }
}

impl OtpIssuer {
    /// An issuer sending through `notifier`.
    pub fn new(notifier: Notifier, settings: OtpSettings) -> Self {
        Self { notifier, settings }
    }

    /// Issues a code to `phone` (normalised) or, without one, to the phone of `iin` (validated).
    #[cfg(test)]
    pub async fn issue(
        &self,
        phone: &str,
        iin: &str,
        purpose: &str,
        language: Language,
    ) -> Result<IssuedOtp, ApiError> {
        self.issue_with_text(phone, iin, purpose, language, &OtpText::default())
            .await
    }

    /// [`OtpIssuer::issue`] with the SMS text `text`, checked before anything is stored or counted.
    pub async fn issue_with_text(
        &self,
        phone: &str,
        iin: &str,
        purpose: &str,
        language: Language,
        text: &OtpText,
    ) -> Result<IssuedOtp, ApiError> {
        validate_purpose(purpose)?;
        if phone.is_empty() && iin.is_empty() {
            return Err(ApiError::invalid_field("phone", "give a phone or an IIN"));
        }
        let ttl_minutes = self.settings.ttl_secs.div_ceil(60).to_string();
        // A dry run with a placeholder code: a bad text is refused before a code is counted.
        self.notifier.templates().render(
            &text.template_id,
            language,
            &Self::text_parameters(text, "000000".to_string(), ttl_minutes.clone())?,
        )?;
        let rate_key = if phone.is_empty() {
            format!("iin:{iin}")
        } else {
            phone.to_string()
        };
        let database = self.notifier.database();
        let now_ms = self.notifier.clock().now_millis();
        let window_start =
            now_ms - i64::try_from(self.settings.rate_window_secs * 1000).unwrap_or(i64::MAX);
        let recent: i64 =
            sqlx::query("SELECT COUNT(*) AS recent FROM otps WHERE phone = $1 AND issued_ms > $2")
                .bind(rate_key.clone())
                .bind(window_start)
                .fetch_one(database.pool())
                .await
                .and_then(|row| row.try_get("recent"))
                .map_err(ApiError::from)?;
        if recent >= i64::from(self.settings.max_per_window) {
            return Err(ApiError::resource_exhausted(
                REASON_OTP_RATE_LIMITED,
                format!(
                    "at most {} codes per {} seconds for one phone",
                    self.settings.max_per_window, self.settings.rate_window_secs
                ),
                std::time::Duration::from_secs(self.settings.rate_window_secs),
            ));
        }
        let code = format!("{:06}", rand::rng().random_range(0..1_000_000u32));
        let mut salt = [0u8; 16];
        rand::rng().fill(&mut salt);
        let otp_id = uuid::Uuid::now_v7().to_string();
        let expires_ms = now_ms + i64::try_from(self.settings.ttl_secs * 1000).unwrap_or(i64::MAX);
        sqlx::query(
            "INSERT INTO otps (id, phone, purpose, salt, code_hash, attempts, max_attempts, used, issued_ms, expires_ms, recipient_iin) \
             VALUES ($1, $2, $3, $4, $5, 0, $6, 0, $7, $8, $9)",
        )
        .bind(otp_id.clone())
        .bind(rate_key)
        .bind(purpose.to_string())
        .bind(salt.to_vec())
        .bind(code_hash(&salt, purpose, &code))
        .bind(i64::from(self.settings.max_attempts))
        .bind(now_ms)
        .bind(expires_ms)
        .bind(iin.to_string())
        .execute(database.pool())
        .await
        .map_err(ApiError::from)?;
        let accepted = self
            .notifier
            .send(SendCommand {
                recipient_iin: iin.to_string(),
                recipient_phone: phone.to_string(),
                sms: true,
                cabinet: false,
                template_id: text.template_id.clone(),
                parameters: Self::text_parameters(text, code, ttl_minutes)?,
                language,
                idempotency_key: format!("otp:{otp_id}"),
                conversation: None,
            })
            .await?;
        Ok(IssuedOtp {
            otp_id,
            expires_ms,
            max_attempts: self.settings.max_attempts,
            notification_id: accepted.notification.id,
        })
    }

    /// The parameters of `text`'s template with the code and its lifetime filled in; an id outside
    /// [`TEMPLATE_PREFIX`] or a caller's [`FILLED_PARAMETERS`] is refused.
    fn text_parameters(
        text: &OtpText,
        code: String,
        ttl_minutes: String,
    ) -> Result<HashMap<String, String>, ApiError> {
        if !text.template_id.starts_with(TEMPLATE_PREFIX) {
            return Err(ApiError::invalid_field(
                "template_id",
                format!("must be an OTP template ({TEMPLATE_PREFIX}*)"),
            ));
        }
        if let Some(filled) = FILLED_PARAMETERS
            .iter()
            .find(|name| text.parameters.contains_key(**name))
        {
            return Err(ApiError::invalid_field(
                format!("parameters.{filled}"),
                "is filled by notify",
            ));
        }
        let mut parameters = text.parameters.clone();
        parameters.insert("code".to_string(), code);
        parameters.insert("ttl_minutes".to_string(), ttl_minutes);
        Ok(parameters)
    }

    #[cfg(test)]
    /// Checks `code` for `otp_id` and `purpose`; each call uses one attempt.
    pub async fn verify(
        &self,
        otp_id: &str,
        code: &str,
        purpose: &str,
    ) -> Result<Verification, ApiError> {
        self.verify_for(otp_id, code, purpose, None).await
    }

    /// [`OtpIssuer::verify`], and with `iin` the code must have been issued for that person
    /// (`FAILED_PRECONDITION` `OTP_SUBJECT_MISMATCH` otherwise, without using an attempt).
    pub async fn verify_for(
        &self,
        otp_id: &str,
        code: &str,
        purpose: &str,
        iin: Option<&str>,
    ) -> Result<Verification, ApiError> {
        if uuid::Uuid::parse_str(otp_id).is_err() {
            return Err(ApiError::invalid_field(
                "otp_id",
                "must be the id IssueOtp returned",
            ));
        }
        if code.len() != 6 || !code.chars().all(|character| character.is_ascii_digit()) {
            return Err(ApiError::invalid_field("code", "must be 6 digits"));
        }
        validate_purpose(purpose)?;
        let database = self.notifier.database();
        let now_ms = self.notifier.clock().now_millis();
        let Some(row) = sqlx::query(
            "SELECT purpose, salt, code_hash, attempts, max_attempts, used, expires_ms, recipient_iin FROM otps WHERE id = $1",
        )
        .bind(otp_id.to_string())
        .fetch_optional(database.pool())
        .await
        .map_err(ApiError::from)?
        else {
            return Err(ApiError::not_found(REASON_OTP_NOT_FOUND, "no such one-time password"));
        };
        let stored_purpose: String = row.try_get("purpose").map_err(ApiError::from)?;
        let salt: Vec<u8> = row.try_get("salt").map_err(ApiError::from)?;
        let stored_hash: Vec<u8> = row.try_get("code_hash").map_err(ApiError::from)?;
        let max_attempts: i64 = row.try_get("max_attempts").map_err(ApiError::from)?;
        let used: i64 = row.try_get("used").map_err(ApiError::from)?;
        let expires_ms: i64 = row.try_get("expires_ms").map_err(ApiError::from)?;
        let recipient_iin: String = row.try_get("recipient_iin").map_err(ApiError::from)?;
        if let Some(iin) = iin
            && recipient_iin != iin
        {
            return Err(ApiError::failed_precondition(
                REASON_OTP_SUBJECT_MISMATCH,
                "the one-time password was not issued for this person",
            ));
        }
        if used != 0 {
            return Err(ApiError::failed_precondition(
                REASON_OTP_USED,
                "the one-time password was already used",
            ));
        }
        if now_ms >= expires_ms {
            return Err(ApiError::failed_precondition(
                REASON_OTP_EXPIRED,
                "the one-time password has expired",
            ));
        }
        // Count the attempt first, atomically, so parallel guesses cannot exceed the limit.
        let counted = sqlx::query(
            "UPDATE otps SET attempts = attempts + 1 WHERE id = $1 AND attempts < max_attempts AND used = 0 RETURNING attempts",
        )
        .bind(otp_id.to_string())
        .fetch_optional(database.pool())
        .await
        .map_err(ApiError::from)?;
        let Some(counted) = counted else {
            return Err(ApiError::failed_precondition(
                REASON_OTP_ATTEMPTS_EXHAUSTED,
                "every attempt for this one-time password was used; request a new one",
            ));
        };
        let attempts: i64 = counted.try_get("attempts").map_err(ApiError::from)?;
        let attempts_left = u32::try_from((max_attempts - attempts).max(0)).unwrap_or(0);
        let matches = stored_purpose == purpose
            && equal_in_constant_time(&stored_hash, &code_hash(&salt, purpose, code));
        if !matches {
            return Ok(Verification {
                verified: false,
                attempts_left,
            });
        }
        let marked = sqlx::query("UPDATE otps SET used = 1 WHERE id = $1 AND used = 0")
            .bind(otp_id.to_string())
            .execute(database.pool())
            .await
            .map_err(ApiError::from)?;
        Ok(Verification {
            verified: marked.rows_affected() == 1,
            attempts_left,
        })
    }
}
