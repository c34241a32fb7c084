//! Purpose codes (`x-shlyuz-purpose`) that more than one service states. A purpose a single
//! service uses lives with that service.

/// Sending a citizen a notice (SMS or personal cabinet) through notify, and notify's own phone
/// look-ups for it: intake, housing and notify state it.
pub const CITIZEN_NOTIFICATION: &str = "CITIZEN_NOTIFICATION";
