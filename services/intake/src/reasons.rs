//! The `ErrorInfo` reasons intake answers with that are its own; the contract's shared ones are
//! `shlyuz_kit::error::reasons`. Only the gRPC edge (`grpc.rs`, `roles.rs`) picks them.

/// `ALREADY_EXISTS`: the candidate already has an active application for the vacancy.
pub const APPLICATION_ALREADY_ACTIVE: &str = "APPLICATION_ALREADY_ACTIVE";
/// `NOT_FOUND`: no such application, or one the caller may not see.
pub const APPLICATION_NOT_FOUND: &str = "APPLICATION_NOT_FOUND";
/// `NOT_FOUND`: no such attachment of the application.
pub const ATTACHMENT_NOT_FOUND: &str = "ATTACHMENT_NOT_FOUND";
/// `NOT_FOUND`: no such vacancy.
pub const VACANCY_NOT_FOUND: &str = "VACANCY_NOT_FOUND";
/// `FAILED_PRECONDITION`: the vacancy is closed to applications.
pub const VACANCY_CLOSED: &str = "VACANCY_CLOSED";
/// `ABORTED`: another transition of the application won the race.
pub const CONCURRENT_CHANGE: &str = "CONCURRENT_CHANGE";
/// `FAILED_PRECONDITION`: the application's state does not allow the action.
pub const ILLEGAL_TRANSITION: &str = "ILLEGAL_TRANSITION";
/// `FAILED_PRECONDITION`: the ДДО is not the one of the candidate's registered region.
pub const DDO_REGION_MISMATCH: &str = "DDO_REGION_MISMATCH";
/// `INVALID_ARGUMENT`: the signed document is not the one to be signed.
pub const SIGNED_DOCUMENT_MISMATCH: &str = "SIGNED_DOCUMENT_MISMATCH";
/// `UNAVAILABLE`: the certification authority's certificate cannot be fetched.
pub const CA_CERTIFICATE_UNAVAILABLE: &str = "CA_CERTIFICATE_UNAVAILABLE";
/// `UNAUTHENTICATED`: the request did not come through the gateway (no sender).
pub const SENDER_MISSING: &str = "SENDER_MISSING";
/// `PERMISSION_DENIED`: the participant may not assert user roles.
pub const ROLE_NOT_TRUSTED: &str = "ROLE_NOT_TRUSTED";
/// `PERMISSION_DENIED`: the caller's role may not do this.
pub const ROLE_NOT_ALLOWED: &str = "ROLE_NOT_ALLOWED";
/// The candidate's one-time password does not match (notify answered `verified = false`); the
/// OTP vocabulary of `proto/shlyuz/notify/v1/otp.proto`, as the registry's.
pub const OTP_CODE_WRONG: &str = "OTP_CODE_WRONG";
/// Notify cannot be asked about a one-time password (same vocabulary).
pub const OTP_UNAVAILABLE: &str = "OTP_UNAVAILABLE";
