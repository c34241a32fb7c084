//! The consent's one-time password, kept by notify: `OtpService.IssueOtp` sends the code (template
//! `otp.consent`, which names who asks and for what) and `VerifyOtp` checks it, both through the
//! gateway as participant `registry`, purpose PERSONAL_DATA_CONSENT, the consent's subject as the
//! envelope's subject. notify's refusals pass through with their reasons (the OTP vocabulary of
//! `proto/shlyuz/notify/v1/otp.proto`); a gateway or transport failure is `UNAVAILABLE`
//! `OTP_UNAVAILABLE`.

use std::collections::HashMap;

use shlyuz_kit::envelope::EnvelopeBuilder;
use shlyuz_kit::error::{ApiError, summarize_status};
use shlyuz_kit::gateway_client::{GatewayClient, with_envelope};
use shlyuz_kit::iin::Iin;
use shlyuz_proto::notify::v1 as notify;
use tonic::Code;

/// notify's OTP template of the consent SMS (participant, purpose, code, lifetime).
pub const TEMPLATE: &str = "otp.consent";
/// The OTP purpose bound to a consent code at notify: such a code confirms nothing else.
pub const OTP_PURPOSE: &str = "CONSENT";
/// Purpose of the calls to notify (the envelope's `x-shlyuz-purpose`).
pub const PURPOSE: &str = "PERSONAL_DATA_CONSENT";
/// Reason: the code does not match (notify answered `verified = false`).
pub const REASON_OTP_CODE_WRONG: &str = "OTP_CODE_WRONG";
/// Reason: notify could not be reached (or the registry has no gateway).
pub const REASON_OTP_UNAVAILABLE: &str = "OTP_UNAVAILABLE";
/// notify's reason: every attempt of the code was used.
pub const REASON_OTP_ATTEMPTS_EXHAUSTED: &str = "OTP_ATTEMPTS_EXHAUSTED";
/// notify's reason: the code has expired.
pub const REASON_OTP_EXPIRED: &str = "OTP_EXPIRED";

/// notify's refusals of an OTP, passed through as they are.
const NOTIFY_REASONS: [&str; 6] = [
    "OTP_NOT_FOUND",
    REASON_OTP_EXPIRED,
    "OTP_USED",
    REASON_OTP_ATTEMPTS_EXHAUSTED,
    "OTP_RATE_LIMITED",
    "OTP_SUBJECT_MISMATCH",
];

/// A code notify sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedCode {
    /// notify's OTP id, kept in the consent row.
    pub otp_id: String,
    /// When the code expires, epoch ms.
    pub expire_time_ms: i64,
}

/// What notify said about a typed code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeCheck {
    /// It matched and is now used up.
    Matched,
    /// It did not match; `attempts_left` more tries.
    Wrong {
        /// Tries left on this code.
        attempts_left: i32,
    },
}

/// What the SMS says: who asks for consent and for what.
#[derive(Debug, Clone, Copy)]
pub struct ConsentAsk<'a> {
    /// The participant asking, e.g. `intake`.
    pub participant: &'a str,
    /// The purpose, e.g. `MILITARY_RECRUITMENT`.
    pub purpose: &'a str,
}

/// notify's `OtpService` through the gateway, when the registry has one.
#[derive(Clone, Debug)]
pub struct ConsentOtp {
    gateway: Option<GatewayClient>,
}

impl ConsentOtp {
    /// Calls through `gateway`; without one every call is `UNAVAILABLE` `OTP_UNAVAILABLE`.
    pub fn new(gateway: Option<GatewayClient>) -> Self {
        Self { gateway }
    }

    fn gateway(&self) -> Result<&GatewayClient, ApiError> {
        self.gateway.as_ref().ok_or_else(|| {
            ApiError::unavailable(
                REASON_OTP_UNAVAILABLE,
                "the registry has no gateway: consent codes cannot be sent",
            )
        })
    }

    fn envelope(subject: &Iin) -> EnvelopeBuilder {
        EnvelopeBuilder {
            purpose: PURPOSE.to_string(),
            subject_iin: subject.as_str().to_string(),
            ..EnvelopeBuilder::default()
        }
    }

    /// Has notify send a consent code to `phone` (the subject's, from the mobile citizens
    /// database), bound to `subject`.
    pub async fn issue(
        &self,
        subject: &Iin,
        phone: &str,
        ask: ConsentAsk<'_>,
    ) -> Result<IssuedCode, ApiError> {
        let gateway = self.gateway()?;
        let request = notify::IssueOtpRequest {
            phone: phone.to_string(),
            iin: subject.as_str().to_string(),
            purpose: OTP_PURPOSE.to_string(),
            // The template carries both languages: the registry does not know the citizen's.
            language: notify::Language::Kk as i32,
            template_id: TEMPLATE.to_string(),
            parameters: HashMap::from([
                ("participant".to_string(), ask.participant.to_string()),
                ("purpose".to_string(), ask.purpose.to_string()),
            ]),
        };
        let issued = notify::otp_service_client::OtpServiceClient::new(gateway.signed_channel())
            .issue_otp(with_envelope(Self::envelope(subject), request))
            .await
            .map_err(|status| refusal("issue", &status))?
            .into_inner();
        Ok(IssuedCode {
            otp_id: issued.otp_id,
            expire_time_ms: issued.expires_at_ms,
        })
    }

    /// Checks `code` of `otp_id`, which notify must have issued for `subject`; uses an attempt.
    pub async fn verify(
        &self,
        otp_id: &str,
        code: &str,
        subject: &Iin,
    ) -> Result<CodeCheck, ApiError> {
        let gateway = self.gateway()?;
        let request = notify::VerifyOtpRequest {
            otp_id: otp_id.to_string(),
            code: code.to_string(),
            purpose: OTP_PURPOSE.to_string(),
            iin: subject.as_str().to_string(),
        };
        let answer = notify::otp_service_client::OtpServiceClient::new(gateway.signed_channel())
            .verify_otp(with_envelope(Self::envelope(subject), request))
            .await
            .map_err(|status| refusal("verify", &status))?
            .into_inner();
        Ok(if answer.verified {
            CodeCheck::Matched
        } else {
            CodeCheck::Wrong {
                attempts_left: answer.attempts_left,
            }
        })
    }
}

/// notify's refusal of an OTP as it is (code, reason, message, retry delay); a refusal of the
/// registry's own request is a bug here (`INTERNAL`); anything else (gateway, transport, notify
/// down) is `UNAVAILABLE` `OTP_UNAVAILABLE`.
fn refusal(action: &str, status: &tonic::Status) -> ApiError {
    let summary = summarize_status(status);
    if NOTIFY_REASONS.contains(&summary.reason.as_str()) {
        let error = ApiError::new(summary.code, summary.reason, status.message().to_string());
        return match summary.retry_after {
            Some(retry_after) if summary.code == Code::ResourceExhausted => {
                ApiError::resource_exhausted(error.reason(), error.message(), retry_after)
            }
            _ => error,
        };
    }
    if summary.code == Code::InvalidArgument {
        tracing::error!(action, fields = ?summary.fields, error = status.message(), "notify refused the registry's otp request");
        return ApiError::internal("the consent code request was refused by notify");
    }
    tracing::warn!(action, code = ?summary.code, reason = %summary.reason, error = status.message(), "consent otp call failed");
    ApiError::unavailable(
        REASON_OTP_UNAVAILABLE,
        "consent codes cannot be sent or checked now; try again",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(error: ApiError) -> tonic::Status {
        error.into()
    }

    #[test]
    fn notify_refusals_pass_through_and_the_rest_is_unavailable() {
        let expired = refusal(
            "verify",
            &status(ApiError::failed_precondition("OTP_EXPIRED", "expired")),
        );
        assert_eq!(expired.code(), Code::FailedPrecondition);
        assert_eq!(expired.reason(), "OTP_EXPIRED");

        let limited = refusal(
            "issue",
            &status(ApiError::resource_exhausted(
                "OTP_RATE_LIMITED",
                "too many",
                std::time::Duration::from_secs(900),
            )),
        );
        let summary = summarize_status(&status(limited));
        assert_eq!(summary.reason, "OTP_RATE_LIMITED");
        assert_eq!(
            summary.retry_after,
            Some(std::time::Duration::from_secs(900))
        );

        // The gateway's own refusal is not the citizen's business: notify is unreachable for us.
        let denied = refusal(
            "issue",
            &status(ApiError::permission_denied("ACCESS_DENIED", "no rule")),
        );
        assert_eq!(denied.code(), Code::Unavailable);
        assert_eq!(denied.reason(), REASON_OTP_UNAVAILABLE);
        let quota = refusal(
            "issue",
            &status(ApiError::resource_exhausted(
                "QUOTA_EXCEEDED",
                "quota",
                std::time::Duration::from_secs(1),
            )),
        );
        assert_eq!(quota.reason(), REASON_OTP_UNAVAILABLE);

        let bad = refusal(
            "issue",
            &status(ApiError::invalid_field("parameters.purpose", "too long")),
        );
        assert_eq!(bad.code(), Code::Internal);
    }
}
