//! The error model every Shlyuz service returns: a `google.rpc.Status` whose details carry an
//! `ErrorInfo { reason, domain: "shlyuz", metadata }` and, for invalid input, `BadRequest` field
//! violations (AIP-193). Domain errors convert into [`ApiError`] once, at the service edge.

use std::collections::HashMap;
use std::time::Duration;

use tonic::Code;
use tonic_types::{ErrorDetails, StatusExt};

use crate::iin::Iin;

/// The `ErrorInfo.domain` of every error Shlyuz produces.
pub const ERROR_DOMAIN: &str = "shlyuz";

/// The `ErrorInfo` reasons of the contract: those more than one crate produces or reads. A
/// service's own reasons live in its crate's `reasons` module.
pub mod reasons {
    /// Every `INVALID_ARGUMENT` produced by input validation.
    pub const INVALID_ARGUMENT: &str = "INVALID_ARGUMENT";
    /// `INTERNAL`: a bug or an unexpected failure.
    pub const INTERNAL: &str = "INTERNAL";
    /// `UNAVAILABLE`: the service's own database cannot be reached.
    pub const DATABASE_UNAVAILABLE: &str = "DATABASE_UNAVAILABLE";
    /// `NOT_FOUND`: no person with this IIN (the registry answers it, intake reads it).
    pub const PERSON_NOT_FOUND: &str = "PERSON_NOT_FOUND";
    /// No phone for this IIN in the mobile citizens database (the registry answers it, notify
    /// records it as a delivery failure).
    pub const PHONE_NOT_FOUND: &str = "PHONE_NOT_FOUND";
    /// `UNAVAILABLE`: an upstream (a service behind the gateway, a registry behind an adapter)
    /// cannot be reached.
    pub const UPSTREAM_UNAVAILABLE: &str = "UPSTREAM_UNAVAILABLE";
    /// `DEADLINE_EXCEEDED`: an upstream did not answer in time.
    pub const UPSTREAM_TIMEOUT: &str = "UPSTREAM_TIMEOUT";
    /// An upstream refused the call for good (the async channel's target, a registry's 4xx).
    pub const UPSTREAM_REFUSED: &str = "UPSTREAM_REFUSED";
    /// A signature does not verify (the gateway's envelope signature, a signed document's).
    pub const SIGNATURE_INVALID: &str = "SIGNATURE_INVALID";
    /// The calling participant is not in the directory (the gateway, the kit's identity check).
    pub const UNKNOWN_PARTICIPANT: &str = "UNKNOWN_PARTICIPANT";
    /// `PERMISSION_DENIED`: a request is about a person the envelope does not name.
    pub const SUBJECT_MISMATCH: &str = "SUBJECT_MISMATCH";
    /// `UNAUTHENTICATED`: the call came without a client certificate.
    pub const CLIENT_CERTIFICATE_REQUIRED: &str = "CLIENT_CERTIFICATE_REQUIRED";
    /// `PERMISSION_DENIED`: the calling participant may not use this service.
    pub const CALLER_NOT_ALLOWED: &str = "CALLER_NOT_ALLOWED";
}

/// Reason used for every `INVALID_ARGUMENT` produced by input validation.
pub const REASON_INVALID_ARGUMENT: &str = reasons::INVALID_ARGUMENT;

/// One invalid field of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    /// The field path, e.g. `subject_iin` or `vacancy.places`.
    pub field: String,
    /// What is wrong with it, in lowercase English.
    pub description: String,
}

/// An error as a caller sees it: a gRPC code, a machine-readable reason and a clear message.
/// Boxed inside so `Result<T, ApiError>` stays one pointer wide on the happy path.
#[derive(Debug, Clone)]
pub struct ApiError {
    inner: Box<ApiErrorParts>,
}

#[derive(Debug, Clone)]
struct ApiErrorParts {
    code: Code,
    reason: String,
    message: String,
    metadata: HashMap<String, String>,
    field_violations: Vec<FieldViolation>,
    retry_after: Option<Duration>,
}

impl ApiError {
    /// An error with the given code, `ErrorInfo` reason and message.
    pub fn new(code: Code, reason: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            inner: Box::new(ApiErrorParts {
                code,
                reason: reason.into(),
                message: message.into(),
                metadata: HashMap::new(),
                field_violations: Vec::new(),
                retry_after: None,
            }),
        }
    }

    /// `INVALID_ARGUMENT` naming one field and what is wrong with it.
    pub fn invalid_field(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self::invalid_fields(vec![FieldViolation {
            field: field.into(),
            description: description.into(),
        }])
    }

    /// `INVALID_ARGUMENT` naming every invalid field at once.
    pub fn invalid_fields(field_violations: Vec<FieldViolation>) -> Self {
        let message = match field_violations.as_slice() {
            [only] => format!("invalid {}: {}", only.field, only.description),
            many => {
                let fields: Vec<&str> = many
                    .iter()
                    .map(|violation| violation.field.as_str())
                    .collect();
                format!("invalid fields: {}", fields.join(", "))
            }
        };
        let mut error = Self::new(Code::InvalidArgument, REASON_INVALID_ARGUMENT, message);
        error.inner.field_violations = field_violations;
        error
    }

    /// `NOT_FOUND` with a reason such as `PERSON_NOT_FOUND`.
    pub fn not_found(reason: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(Code::NotFound, reason, message)
    }

    /// `FAILED_PRECONDITION`, e.g. an illegal workflow transition.
    pub fn failed_precondition(reason: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(Code::FailedPrecondition, reason, message)
    }

    /// `PERMISSION_DENIED`, e.g. `ACCESS_DENIED` or `CONSENT_REQUIRED`.
    pub fn permission_denied(reason: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(Code::PermissionDenied, reason, message)
    }

    /// `UNAUTHENTICATED`: the caller's identity could not be established.
    pub fn unauthenticated(reason: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(Code::Unauthenticated, reason, message)
    }

    /// `ALREADY_EXISTS`, e.g. a second active application for one vacancy.
    pub fn already_exists(reason: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(Code::AlreadyExists, reason, message)
    }

    /// `UNAVAILABLE`: try again later, e.g. `UPSTREAM_UNAVAILABLE`.
    pub fn unavailable(reason: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(Code::Unavailable, reason, message)
    }

    /// `RESOURCE_EXHAUSTED` with `RetryInfo` telling the caller when to come back.
    pub fn resource_exhausted(
        reason: impl Into<String>,
        message: impl Into<String>,
        retry_after: Duration,
    ) -> Self {
        let mut error = Self::new(Code::ResourceExhausted, reason, message);
        error.inner.retry_after = Some(retry_after);
        error
    }

    /// `INTERNAL`: a bug or an unexpected failure; the message must not leak internals.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(Code::Internal, reasons::INTERNAL, message)
    }

    /// Replaces the `ErrorInfo` reason, e.g. a field error that is specifically `MESSAGE_EXPIRED`.
    pub fn with_reason(mut self, reason: impl Into<String>) -> Self {
        self.inner.reason = reason.into();
        self
    }

    /// Adds a key to the `ErrorInfo` metadata.
    pub fn with_metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.inner.metadata.insert(key.into(), value.into());
        self
    }

    /// The gRPC code.
    pub fn code(&self) -> Code {
        self.inner.code
    }

    /// The `ErrorInfo` reason.
    pub fn reason(&self) -> &str {
        &self.inner.reason
    }

    /// The human-readable message.
    pub fn message(&self) -> &str {
        &self.inner.message
    }

    /// The `ErrorInfo` metadata.
    pub fn metadata(&self) -> &HashMap<String, String> {
        &self.inner.metadata
    }

    /// The field violations of an `INVALID_ARGUMENT`.
    pub fn field_violations(&self) -> &[FieldViolation] {
        &self.inner.field_violations
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            formatter,
            "{:?} {}: {}",
            self.inner.code, self.inner.reason, self.inner.message
        )
    }
}

impl std::error::Error for ApiError {}

impl From<ApiError> for tonic::Status {
    fn from(error: ApiError) -> Self {
        let error = *error.inner;
        let metadata: HashMap<String, String> = error.metadata;
        let mut details = ErrorDetails::with_error_info(error.reason, ERROR_DOMAIN, metadata);
        for violation in error.field_violations {
            details.add_bad_request_violation(violation.field, violation.description);
        }
        if let Some(retry_after) = error.retry_after {
            details.set_retry_info(Some(retry_after));
        }
        tonic::Status::with_error_details(error.code, error.message, details)
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(error: sqlx::Error) -> Self {
        match error {
            sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed => {
                tracing::warn!(error = %error, "database unavailable");
                ApiError::unavailable(
                    reasons::DATABASE_UNAVAILABLE,
                    "the service's database is unavailable",
                )
            }
            other => {
                tracing::error!(error = %other, "database error");
                ApiError::internal("internal storage error")
            }
        }
    }
}

/// Parses an IIN taken from request field `field`, turning a bad value into `INVALID_ARGUMENT`
/// that names the field.
pub fn parse_iin_field(field: &str, value: &str) -> Result<Iin, ApiError> {
    Iin::parse(value).map_err(|error| ApiError::invalid_field(field, error.to_string()))
}

/// What a client can read back from a Shlyuz error status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorSummary {
    /// The gRPC code.
    pub code: Code,
    /// `ErrorInfo.reason`, empty when absent.
    pub reason: String,
    /// The fields named by `BadRequest`.
    pub fields: Vec<String>,
    /// `RetryInfo.retry_delay`, when present.
    pub retry_after: Option<Duration>,
}

/// Reads code, reason, invalid fields and retry delay out of a status (clients, tests).
pub fn summarize_status(status: &tonic::Status) -> ErrorSummary {
    let details = status.get_error_details();
    ErrorSummary {
        code: status.code(),
        reason: details
            .error_info()
            .map(|info| info.reason.clone())
            .unwrap_or_default(),
        fields: details
            .bad_request()
            .map(|bad_request| {
                bad_request
                    .field_violations
                    .iter()
                    .map(|violation| violation.field.clone())
                    .collect()
            })
            .unwrap_or_default(),
        retry_after: details.retry_info().and_then(|retry| retry.retry_delay),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_field_becomes_bad_request_with_error_info() {
        let status: tonic::Status =
            ApiError::invalid_field("subject_iin", "must be 12 digits").into();
        let summary = summarize_status(&status);
        assert_eq!(summary.code, Code::InvalidArgument);
        assert_eq!(summary.reason, REASON_INVALID_ARGUMENT);
        assert_eq!(summary.fields, vec!["subject_iin".to_string()]);
        assert!(status.message().contains("subject_iin"));
        let details = status.get_error_details();
        let info = details.error_info().map(|info| info.domain.clone());
        assert_eq!(info.as_deref(), Some(ERROR_DOMAIN));
    }

    #[test]
    fn resource_exhausted_carries_retry_info() {
        let status: tonic::Status = ApiError::resource_exhausted(
            "QUOTA_EXCEEDED",
            "quota exceeded",
            Duration::from_millis(250),
        )
        .into();
        let summary = summarize_status(&status);
        assert_eq!(summary.code, Code::ResourceExhausted);
        assert_eq!(summary.reason, "QUOTA_EXCEEDED");
        assert_eq!(summary.retry_after, Some(Duration::from_millis(250)));
    }

    #[test]
    fn bad_iin_names_the_field() {
        let error = parse_iin_field("candidate_iin", "12345").err();
        let fields: Vec<String> = error
            .map(|error| {
                error
                    .field_violations()
                    .iter()
                    .map(|v| v.field.clone())
                    .collect()
            })
            .unwrap_or_default();
        assert_eq!(fields, vec!["candidate_iin".to_string()]);
    }
}
