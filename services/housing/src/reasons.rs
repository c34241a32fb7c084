//! The `ErrorInfo` reasons housing answers with that are its own; the contract's shared ones are
//! `shlyuz_kit::error::reasons`. The gRPC edge (`grpc.rs`) picks them for [`crate::model::HousingError`].

/// `ALREADY_EXISTS`: the person (or one of an import) is already on the register.
pub const REGISTRANT_EXISTS: &str = "REGISTRANT_EXISTS";
/// `NOT_FOUND`: the person is not on the register.
pub const REGISTRANT_NOT_FOUND: &str = "REGISTRANT_NOT_FOUND";
/// `NOT_FOUND`: no such dwelling.
pub const DWELLING_NOT_FOUND: &str = "DWELLING_NOT_FOUND";
/// `NOT_FOUND`: no such offer.
pub const OFFER_NOT_FOUND: &str = "OFFER_NOT_FOUND";
/// `NOT_FOUND`: no such review run.
pub const REVIEW_NOT_FOUND: &str = "REVIEW_NOT_FOUND";
/// `PERMISSION_DENIED`: the reply came from another phone than the offer's.
pub const REPLY_PHONE_MISMATCH: &str = "REPLY_PHONE_MISMATCH";
/// `PERMISSION_DENIED`: the reply (or delivery report) is about another recipient.
pub const REPLY_RECIPIENT_MISMATCH: &str = "REPLY_RECIPIENT_MISMATCH";
/// `FAILED_PRECONDITION`: the offer's 48-hour answer window has passed.
pub const OFFER_EXPIRED: &str = "OFFER_EXPIRED";
/// `FAILED_PRECONDITION`: the offer was withdrawn.
pub const OFFER_WITHDRAWN: &str = "OFFER_WITHDRAWN";
/// `FAILED_PRECONDITION`: the offer's SMS could not be delivered; the offer is closed.
pub const OFFER_UNDELIVERED: &str = "OFFER_UNDELIVERED";
/// `FAILED_PRECONDITION`: the offer was answered before with another code.
pub const OFFER_ALREADY_ANSWERED: &str = "OFFER_ALREADY_ANSWERED";
/// `FAILED_PRECONDITION`: `StartReview` on an instance without a gateway channel.
pub const REVIEW_NOT_CONFIGURED: &str = "REVIEW_NOT_CONFIGURED";
