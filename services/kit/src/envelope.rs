//! The message envelope from the sender's side: the `x-shlyuz-*` metadata names, the canonical
//! string (docs/gateway.md defines it byte by byte) and signing it with the participant's Ed25519
//! key. Every service that calls another through the gateway signs its calls with this; the
//! gateway verifies them (`shlyuz_gateway::envelope`).

use crate::pki::SigningKey;

/// Header: UUID of the message, required; a replay by the same sender is refused.
pub const MESSAGE_ID: &str = "x-shlyuz-message-id";
/// Header: ties the messages of one case together.
pub const CORRELATION_ID: &str = "x-shlyuz-correlation-id";
/// Header: IIN of the official or citizen on whose behalf the system calls.
pub const USER_ID: &str = "x-shlyuz-user-id";
/// Header: purpose / legal-basis code.
pub const PURPOSE: &str = "x-shlyuz-purpose";
/// Header: IIN of the person whose data is requested.
pub const SUBJECT_IIN: &str = "x-shlyuz-subject-iin";
/// Header: the subject's consent, where the access rule demands it.
pub const CONSENT_ID: &str = "x-shlyuz-consent-id";
/// Header: when the sender signed, RFC 3339 UTC.
pub const TIMESTAMP: &str = "x-shlyuz-timestamp";
/// Header: base64 Ed25519 signature over the canonical string.
pub const SIGNATURE: &str = "x-shlyuz-signature";
/// Header: the role in which the user acts (e.g. intake's `candidate`, `head`); signed from v2 on.
pub const USER_ROLE: &str = "x-shlyuz-user-role";
/// Header: the region (KATO code) the user acts for; signed from v2 on.
pub const USER_REGION: &str = "x-shlyuz-user-region";
/// Header: which canonical string the sender signed, `2` for [`CANONICAL_VERSION_V2`]; absent
/// means the legacy [`CANONICAL_VERSION`].
pub const ENVELOPE_VERSION: &str = "x-shlyuz-envelope-version";
/// Header the gateway adds upstream: the authenticated sender participant.
pub const SENDER: &str = "x-shlyuz-sender";
/// Header the gateway adds upstream on deliveries of the async channel (`async`); never taken from
/// a caller.
pub const CHANNEL: &str = "x-shlyuz-channel";
/// Response header a service behind the gateway sets to name the persons whose data its answer
/// carries (comma-separated IINs): the gateway logs them as accessed — subject-access rows
/// included — before it releases the answer, and does not pass the header on.
pub const RESPONSE_SUBJECTS: &str = "x-shlyuz-response-subjects";
/// Prefix of every envelope header: the gateway forwards none that it did not check or set.
pub const HEADER_PREFIX: &str = "x-shlyuz-";
/// Response header: lowercase hex SHA-256 of the request message (X-Road's requestHash).
pub const REQUEST_HASH: &str = "x-shlyuz-request-hash";
/// Response trailer: the message-log position, `<chain id>:<sequence>`.
pub const LOG_POSITION: &str = "x-shlyuz-log-position";

/// Most subjects one call may name: batch look-ups (e.g. a register review) name every person
/// they ask about in `x-shlyuz-subject-iin`, comma-separated, and each gets its own
/// subject-access-log row.
pub const MAX_SUBJECTS: usize = 500;

/// First line of the legacy canonical string (no user role or region), accepted only while
/// `gateway.accept_envelope_v1` is on.
pub const CANONICAL_VERSION: &str = "shlyuz-envelope-v1";

/// First line of the current canonical string, which also covers the user's role and region.
pub const CANONICAL_VERSION_V2: &str = "shlyuz-envelope-v2";

/// Which canonical string a signature covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EnvelopeVersion {
    /// [`CANONICAL_VERSION`]: role and region are not signed (and so refused).
    V1,
    /// [`CANONICAL_VERSION_V2`].
    #[default]
    V2,
}

/// The string the sender signs: one field per line, in this order, joined by `\n`, no trailing
/// newline. `request_sha256_hex` is the lowercase hex SHA-256 of the request message (empty for
/// client-streaming methods, whose request cannot be hashed before it is forwarded). Version 2
/// adds the user's role and region after the user id.
pub fn canonical_string(envelope_fields: &SignedFields<'_>) -> String {
    match envelope_fields.version {
        EnvelopeVersion::V1 => [
            CANONICAL_VERSION,
            envelope_fields.message_id,
            envelope_fields.path,
            envelope_fields.timestamp,
            envelope_fields.user_id,
            envelope_fields.subject_iin,
            envelope_fields.purpose,
            envelope_fields.consent_id,
            envelope_fields.request_sha256_hex,
        ]
        .join("\n"),
        EnvelopeVersion::V2 => [
            CANONICAL_VERSION_V2,
            envelope_fields.message_id,
            envelope_fields.path,
            envelope_fields.timestamp,
            envelope_fields.user_id,
            envelope_fields.user_role,
            envelope_fields.user_region,
            envelope_fields.subject_iin,
            envelope_fields.purpose,
            envelope_fields.consent_id,
            envelope_fields.request_sha256_hex,
        ]
        .join("\n"),
    }
}

/// The fields covered by the signature.
#[derive(Debug, Clone, Copy)]
pub struct SignedFields<'a> {
    /// Which canonical string.
    pub version: EnvelopeVersion,
    /// `x-shlyuz-message-id`.
    pub message_id: &'a str,
    /// The gRPC path, `/package.Service/Method`.
    pub path: &'a str,
    /// `x-shlyuz-timestamp`, exactly as sent.
    pub timestamp: &'a str,
    /// `x-shlyuz-user-id` or empty.
    pub user_id: &'a str,
    /// `x-shlyuz-user-role` or empty (v2 only).
    pub user_role: &'a str,
    /// `x-shlyuz-user-region` or empty (v2 only).
    pub user_region: &'a str,
    /// `x-shlyuz-subject-iin` or empty.
    pub subject_iin: &'a str,
    /// `x-shlyuz-purpose` or empty.
    pub purpose: &'a str,
    /// `x-shlyuz-consent-id` or empty.
    pub consent_id: &'a str,
    /// Lowercase hex SHA-256 of the request message, or empty for client-streaming methods.
    pub request_sha256_hex: &'a str,
}

/// Builds the envelope headers for a call, signing with `signing_key` (clients and tests).
#[derive(Debug, Clone)]
pub struct EnvelopeBuilder {
    /// Message id; a fresh UUID v7 by default.
    pub message_id: String,
    /// Correlation id or empty.
    pub correlation_id: String,
    /// User IIN or empty.
    pub user_id: String,
    /// The user's role or empty.
    pub user_role: String,
    /// The user's region (KATO) or empty.
    pub user_region: String,
    /// Purpose code or empty.
    pub purpose: String,
    /// Subject IIN or empty.
    pub subject_iin: String,
    /// Consent id or empty.
    pub consent_id: String,
    /// Timestamp; now by default.
    pub timestamp: String,
    /// Which canonical string to sign; v2 by default (v1 only to test the transition).
    pub version: EnvelopeVersion,
}

impl Default for EnvelopeBuilder {
    fn default() -> Self {
        Self {
            message_id: uuid::Uuid::now_v7().hyphenated().to_string(),
            correlation_id: String::new(),
            user_id: String::new(),
            user_role: String::new(),
            user_region: String::new(),
            purpose: String::new(),
            subject_iin: String::new(),
            consent_id: String::new(),
            timestamp: format_timestamp(time::OffsetDateTime::now_utc()),
            version: EnvelopeVersion::V2,
        }
    }
}

/// Formats an instant as the envelope expects: RFC 3339 UTC with milliseconds and `Z`.
pub fn format_timestamp(instant: time::OffsetDateTime) -> String {
    let utc = instant.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        utc.year(),
        u8::from(utc.month()),
        utc.day(),
        utc.hour(),
        utc.minute(),
        utc.second(),
        utc.millisecond()
    )
}

/// Lowercase hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, bytes))
}

impl EnvelopeBuilder {
    /// The `(name, value)` metadata pairs, signed for `path` and the encoded request message.
    pub fn sign(
        &self,
        signing_key: &SigningKey,
        path: &str,
        request_message: Option<&[u8]>,
    ) -> Vec<(&'static str, String)> {
        use base64::Engine as _;
        let request_hash = request_message.map(sha256_hex).unwrap_or_default();
        let fields = SignedFields {
            version: self.version,
            message_id: &self.message_id,
            path,
            timestamp: &self.timestamp,
            user_id: &self.user_id,
            user_role: &self.user_role,
            user_region: &self.user_region,
            subject_iin: &self.subject_iin,
            purpose: &self.purpose,
            consent_id: &self.consent_id,
            request_sha256_hex: &request_hash,
        };
        let signature = signing_key.sign(canonical_string(&fields).as_bytes());
        let mut headers = vec![
            (MESSAGE_ID, self.message_id.clone()),
            (TIMESTAMP, self.timestamp.clone()),
            (
                SIGNATURE,
                base64::engine::general_purpose::STANDARD.encode(signature),
            ),
        ];
        if self.version == EnvelopeVersion::V2 {
            headers.push((ENVELOPE_VERSION, "2".to_string()));
        }
        for (name, value) in [
            (CORRELATION_ID, &self.correlation_id),
            (USER_ID, &self.user_id),
            (USER_ROLE, &self.user_role),
            (USER_REGION, &self.user_region),
            (PURPOSE, &self.purpose),
            (SUBJECT_IIN, &self.subject_iin),
            (CONSENT_ID, &self.consent_id),
        ] {
            if !value.is_empty() {
                headers.push((name, value.clone()));
            }
        }
        headers
    }
}

impl EnvelopeBuilder {
    /// A request carrying `message`, with this envelope signed by `signing_key` for `path`.
    pub fn signed_request<M: prost::Message>(
        &self,
        signing_key: &SigningKey,
        path: &str,
        message: M,
    ) -> tonic::Request<M> {
        let encoded = message.encode_to_vec();
        let pairs = self.sign(signing_key, path, Some(&encoded));
        let mut request = tonic::Request::new(message);
        for (name, value) in pairs {
            // Every value the builder produces is visible ASCII except a caller-supplied field with
            // other characters, which the gateway would refuse anyway: leave it out.
            if let Ok(value) = tonic::metadata::MetadataValue::try_from(value.as_str()) {
                request.metadata_mut().insert(name, value);
            }
        }
        request
    }
}
