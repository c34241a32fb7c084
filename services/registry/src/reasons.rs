//! The `ErrorInfo` reasons the registry answers with: the contract's shared ones re-exported from
//! `shlyuz_kit::error::reasons`, and the registry's own. The consent service's reasons stay in
//! `consent.rs` with its OTP vocabulary.

pub use shlyuz_kit::error::reasons::{
    PERSON_NOT_FOUND, PHONE_NOT_FOUND, UPSTREAM_REFUSED, UPSTREAM_TIMEOUT, UPSTREAM_UNAVAILABLE,
};

/// `NOT_FOUND`: no certificate with this serial number.
pub const CERTIFICATE_NOT_FOUND: &str = "CERTIFICATE_NOT_FOUND";
/// `UNAVAILABLE`: the circuit breaker is open; the external registry is not called.
pub const UPSTREAM_CIRCUIT_OPEN: &str = "UPSTREAM_CIRCUIT_OPEN";
/// `UNAVAILABLE`: no endpoint is configured for this kind of record.
pub const UPSTREAM_NOT_CONFIGURED: &str = "UPSTREAM_NOT_CONFIGURED";
/// `DATA_LOSS`: the external registry's answer is not the JSON the mapping describes.
pub const UPSTREAM_MALFORMED: &str = "UPSTREAM_MALFORMED";
/// `DATA_LOSS`: the external registry's answer says, or shows, that it is incomplete.
pub const UPSTREAM_PARTIAL: &str = "UPSTREAM_PARTIAL";

/// The upstream failures of an external registry, by the short names the adapter uses
/// (`upstream::reasons`).
pub mod upstream {
    /// No answer within the timeout, after every attempt.
    pub const TIMEOUT: &str = super::UPSTREAM_TIMEOUT;
    /// Connection refused, reset, or 5xx/429 after every attempt.
    pub const UNAVAILABLE: &str = super::UPSTREAM_UNAVAILABLE;
    /// The registry refused the request (4xx other than 429).
    pub const REFUSED: &str = super::UPSTREAM_REFUSED;
    /// The circuit breaker is open after repeated failures; the registry is not called.
    pub const CIRCUIT_OPEN: &str = super::UPSTREAM_CIRCUIT_OPEN;
    /// No endpoint is configured for this kind of record.
    pub const NOT_CONFIGURED: &str = super::UPSTREAM_NOT_CONFIGURED;
    /// The answer is not the JSON the mapping describes.
    pub const MALFORMED: &str = super::UPSTREAM_MALFORMED;
    /// The answer says, or shows, that it is incomplete.
    pub const PARTIAL: &str = super::UPSTREAM_PARTIAL;
}
