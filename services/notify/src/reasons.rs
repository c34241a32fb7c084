//! The `ErrorInfo` reasons notify answers with that are its own; the contract's shared ones are
//! `shlyuz_kit::error::reasons`. The one-time passwords' reasons stay in `otp.rs`.

/// `NOT_FOUND`: no notification with this id.
pub const NOTIFICATION_NOT_FOUND: &str = "NOTIFICATION_NOT_FOUND";
/// `UNAVAILABLE`: an inbound reply could not be stored (another writer held its conversation);
/// the provider sends it again.
pub const REPLY_CONTENDED: &str = "REPLY_CONTENDED";
