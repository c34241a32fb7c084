//! The message envelope as the gateway checks it: validation of the `x-shlyuz-*` request metadata
//! and verification of the sender's Ed25519 signature over the canonical string. The metadata
//! names, the canonical string and the signing side live in `shlyuz_kit::envelope` (every service
//! signs its calls through the gateway) and are re-exported here.

use http::HeaderMap;
pub use shlyuz_kit::envelope::*;
use shlyuz_kit::error::reasons;
use shlyuz_kit::error::{ApiError, FieldViolation};
use shlyuz_kit::iin::Iin;
use shlyuz_kit::pki::{SIGNATURE_LEN, VerifyingKey};

const MAX_CORRELATION_ID_LENGTH: usize = 128;
const MAX_PURPOSE_LENGTH: usize = 64;
const MAX_CONSENT_ID_LENGTH: usize = 128;
const MAX_ROLE_LENGTH: usize = 64;
const MAX_REGION_LENGTH: usize = 32;

/// Every envelope key a caller may send; each may appear at most once. Any other `x-shlyuz-*`
/// header a caller sends is dropped before the call is forwarded.
pub const ENVELOPE_KEYS: [&str; 11] = [
    MESSAGE_ID,
    CORRELATION_ID,
    USER_ID,
    USER_ROLE,
    USER_REGION,
    PURPOSE,
    SUBJECT_IIN,
    CONSENT_ID,
    TIMESTAMP,
    SIGNATURE,
    ENVELOPE_VERSION,
];

/// A validated envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// Lowercase hyphenated UUID.
    pub message_id: String,
    /// Empty when absent.
    pub correlation_id: String,
    /// Empty when absent; otherwise a valid IIN.
    pub user_id: String,
    /// The user's role; empty when absent (always empty in a v1 envelope).
    pub user_role: String,
    /// The user's region; empty when absent (always empty in a v1 envelope).
    pub user_region: String,
    /// Empty when absent.
    pub purpose: String,
    /// Empty when absent; otherwise one valid IIN, or several separated by commas (batch calls).
    pub subject_iin: String,
    /// Empty when absent.
    pub consent_id: String,
    /// The timestamp exactly as sent (it is part of the signed string).
    pub timestamp: String,
    /// The timestamp in epoch milliseconds.
    pub timestamp_ms: i64,
    /// The decoded signature.
    pub signature: [u8; SIGNATURE_LEN],
    /// The canonical string the signature covers.
    pub version: EnvelopeVersion,
}

/// The one form of a message id the gateway works with — the lower-case hyphenated UUID — or
/// `None` when `text` is not a 36-character UUID. The signature, the replay guard, async
/// idempotency, status look-ups and every forwarded header use this form, so `ABC…` and `abc…`
/// are one message.
pub fn normal_message_id(text: &str) -> Option<String> {
    match uuid::Uuid::try_parse(text) {
        Ok(parsed) if text.len() == 36 => Some(parsed.hyphenated().to_string()),
        _ => None,
    }
}

fn header_text<'a>(
    headers: &'a HeaderMap,
    name: &'static str,
    violations: &mut Vec<FieldViolation>,
) -> Option<&'a str> {
    let value = headers.get(name)?;
    match value.to_str() {
        Ok(text) => Some(text.trim()),
        Err(_) => {
            violations.push(violation(name, "must be visible ASCII"));
            None
        }
    }
}

fn violation(field: &str, description: &str) -> FieldViolation {
    FieldViolation {
        field: field.to_string(),
        description: description.to_string(),
    }
}

fn is_token(text: &str, extra: &[char]) -> bool {
    text.chars()
        .all(|character| character.is_ascii_alphanumeric() || extra.contains(&character))
}

/// The value of `name`: at most `max_length` letters, digits, `_` and `-` (empty when absent).
fn short_token(
    headers: &HeaderMap,
    name: &'static str,
    max_length: usize,
    violations: &mut Vec<FieldViolation>,
) -> String {
    let value = header_text(headers, name, violations)
        .unwrap_or_default()
        .to_string();
    if value.len() > max_length || !is_token(&value, &['_', '-']) {
        violations.push(violation(
            name,
            &format!("must be at most {max_length} characters of letters, digits, '_' and '-'"),
        ));
    }
    value
}

/// What is wrong with an `x-shlyuz-subject-iin` value, `None` when it is empty or a list of 1 to
/// [`MAX_SUBJECTS`] valid IINs separated by commas.
fn subject_list_problem(value: &str) -> Option<String> {
    if value.is_empty() {
        return None;
    }
    let mut count = 0;
    for (index, part) in value.split(',').enumerate() {
        count += 1;
        if let Err(error) = Iin::parse(part) {
            return Some(if index == 0 && !value.contains(',') {
                error.to_string()
            } else {
                format!("IIN number {} of the list: {error}", index + 1)
            });
        }
    }
    (count > MAX_SUBJECTS)
        .then(|| format!("names {count} subjects; at most {MAX_SUBJECTS} are allowed"))
}

/// What is wrong with an `x-shlyuz-consent-id` value, `None` when it is empty or a list of 1 to
/// [`MAX_SUBJECTS`] ids separated by commas (one per subject of a batch call), each at most 128
/// letters, digits, `-`, `_`, `.` and `:`.
fn consent_list_problem(value: &str) -> Option<String> {
    if value.is_empty() {
        return None;
    }
    let ids: Vec<&str> = value.split(',').collect();
    if ids.len() > MAX_SUBJECTS {
        return Some(format!(
            "names {} consents; at most {MAX_SUBJECTS} are allowed",
            ids.len()
        ));
    }
    let well_formed = |id: &str| {
        !id.is_empty() && id.len() <= MAX_CONSENT_ID_LENGTH && is_token(id, &['-', '_', '.', ':'])
    };
    ids.iter().position(|id| !well_formed(id)).map(|index| {
        let rule = "must be at most 128 characters of letters, digits, '-', '_', '.', ':'";
        if ids.len() == 1 {
            rule.to_string()
        } else {
            format!("consent id number {} of the list {rule}", index + 1)
        }
    })
}

/// Reads and validates the envelope; every problem is reported at once as `INVALID_ARGUMENT`
/// naming the metadata keys.
pub fn parse_envelope(headers: &HeaderMap) -> Result<Envelope, ApiError> {
    let mut violations = Vec::new();
    // A receiver that reads another value than the gateway checked would see an envelope nobody
    // signed: every key once, or the call is refused.
    for key in ENVELOPE_KEYS {
        if headers.get_all(key).iter().nth(1).is_some() {
            violations.push(violation(key, "must appear at most once"));
        }
    }
    if !violations.is_empty() {
        return Err(ApiError::invalid_fields(violations));
    }

    let version = match header_text(headers, ENVELOPE_VERSION, &mut violations) {
        None => EnvelopeVersion::V1,
        Some("2") => EnvelopeVersion::V2,
        Some(_) => {
            violations.push(violation(ENVELOPE_VERSION, "must be 2 (or absent for v1)"));
            EnvelopeVersion::V2
        }
    };

    let message_id = match header_text(headers, MESSAGE_ID, &mut violations) {
        None | Some("") => {
            if !violations.iter().any(|found| found.field == MESSAGE_ID) {
                violations.push(violation(MESSAGE_ID, "is required"));
            }
            String::new()
        }
        Some(text) => match normal_message_id(text) {
            Some(normal) => normal,
            None => {
                violations.push(violation(
                    MESSAGE_ID,
                    "must be a UUID such as 0191f5a0-3c1e-7b3a-9a52-5d0b5e0f6c11",
                ));
                String::new()
            }
        },
    };

    let correlation_id = header_text(headers, CORRELATION_ID, &mut violations)
        .unwrap_or_default()
        .to_string();
    if correlation_id.len() > MAX_CORRELATION_ID_LENGTH
        || !is_token(&correlation_id, &['-', '_', '.', ':'])
    {
        violations.push(violation(
            CORRELATION_ID,
            "must be at most 128 characters of letters, digits, '-', '_', '.', ':'",
        ));
    }

    let user_id = header_text(headers, USER_ID, &mut violations)
        .unwrap_or_default()
        .to_string();
    if !user_id.is_empty()
        && let Err(error) = Iin::parse(&user_id)
    {
        violations.push(violation(USER_ID, &error.to_string()));
    }

    let user_role = short_token(headers, USER_ROLE, MAX_ROLE_LENGTH, &mut violations);
    let user_region = short_token(headers, USER_REGION, MAX_REGION_LENGTH, &mut violations);
    if version == EnvelopeVersion::V1 {
        for (name, value) in [(USER_ROLE, &user_role), (USER_REGION, &user_region)] {
            if !value.is_empty() {
                violations.push(violation(
                    name,
                    "is covered only by envelope v2: sign shlyuz-envelope-v2 and send x-shlyuz-envelope-version: 2",
                ));
            }
        }
    }

    let purpose = header_text(headers, PURPOSE, &mut violations)
        .unwrap_or_default()
        .to_string();
    if purpose.len() > MAX_PURPOSE_LENGTH || !is_token(&purpose, &['_']) {
        violations.push(violation(
            PURPOSE,
            "must be at most 64 characters of letters, digits and '_'",
        ));
    }

    let subject_iin = header_text(headers, SUBJECT_IIN, &mut violations)
        .unwrap_or_default()
        .to_string();
    if let Some(problem) = subject_list_problem(&subject_iin) {
        violations.push(violation(SUBJECT_IIN, &problem));
    }

    let consent_id = header_text(headers, CONSENT_ID, &mut violations)
        .unwrap_or_default()
        .to_string();
    if let Some(problem) = consent_list_problem(&consent_id) {
        violations.push(violation(CONSENT_ID, &problem));
    }

    let timestamp = header_text(headers, TIMESTAMP, &mut violations)
        .unwrap_or_default()
        .to_string();
    let timestamp_ms = if timestamp.is_empty() {
        if !violations.iter().any(|found| found.field == TIMESTAMP) {
            violations.push(violation(TIMESTAMP, "is required"));
        }
        0
    } else {
        match parse_timestamp_ms(&timestamp) {
            Some(milliseconds) => milliseconds,
            None => {
                violations.push(violation(
                    TIMESTAMP,
                    "must be RFC 3339 in UTC such as 2026-11-25T07:30:00.123Z",
                ));
                0
            }
        }
    };

    let mut signature = [0_u8; SIGNATURE_LEN];
    match header_text(headers, SIGNATURE, &mut violations) {
        None | Some("") => {
            if !violations.iter().any(|found| found.field == SIGNATURE) {
                violations.push(violation(SIGNATURE, "is required"));
            }
        }
        Some(text) => {
            use base64::Engine as _;
            match base64::engine::general_purpose::STANDARD.decode(text) {
                Ok(decoded) if decoded.len() == SIGNATURE_LEN => {
                    signature.copy_from_slice(&decoded)
                }
                _ => violations.push(violation(
                    SIGNATURE,
                    "must be the base64 of a 64-byte Ed25519 signature",
                )),
            }
        }
    }

    if !violations.is_empty() {
        return Err(ApiError::invalid_fields(violations));
    }
    Ok(Envelope {
        message_id,
        correlation_id,
        user_id,
        user_role,
        user_region,
        purpose,
        subject_iin,
        consent_id,
        timestamp,
        timestamp_ms,
        signature,
        version,
    })
}

fn parse_timestamp_ms(text: &str) -> Option<i64> {
    if !text.ends_with('Z') {
        return None;
    }
    let parsed =
        time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()?;
    i64::try_from(parsed.unix_timestamp_nanos() / 1_000_000).ok()
}

impl Envelope {
    /// The signed fields of this envelope for `path` and the request hash.
    pub fn signed_fields<'a>(
        &'a self,
        path: &'a str,
        request_sha256_hex: &'a str,
    ) -> SignedFields<'a> {
        SignedFields {
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
            request_sha256_hex,
        }
    }

    /// Checks the signature against the sender's registered key.
    pub fn verify(
        &self,
        key: &VerifyingKey,
        path: &str,
        request_sha256_hex: &str,
    ) -> Result<(), ApiError> {
        let canonical = canonical_string(&self.signed_fields(path, request_sha256_hex));
        key.verify(canonical.as_bytes(), &self.signature)
            .map_err(|_| {
                ApiError::unauthenticated(
                    reasons::SIGNATURE_INVALID,
                    "x-shlyuz-signature does not verify with the sender's registered signing key",
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;
    use http::HeaderValue;

    use super::*;

    /// The worked example of docs/gateway.md; its signature was computed independently with
    /// Python's `cryptography` package.
    const EXAMPLE_SEED: [u8; 32] = [
        0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24,
        25, 26, 27, 28, 29, 30, 31,
    ];
    const EXAMPLE_SIGNATURE: &str =
        "pURJj2h0AclzUmbgx0pqFG1w8w4C2FnTCdiWwS1Bq7YGh63VtuDi6y1BniXwD+b5xB0uX9zQgLzX2/5w0Z5TDg==";
    const EXAMPLE_PATH: &str = "/shlyuz.registry.v1.PersonRegistryService/GetPerson";

    fn example_key() -> shlyuz_kit::pki::SigningKey {
        // PKCS#8 v1 wrapping of an Ed25519 seed (RFC 8410).
        let mut pkcs8 = hex::decode("302e020100300506032b657004220420").expect("hex");
        pkcs8.extend_from_slice(&EXAMPLE_SEED);
        shlyuz_kit::pki::SigningKey::from_pkcs8_der(&pkcs8).expect("key")
    }

    fn example_builder() -> EnvelopeBuilder {
        EnvelopeBuilder {
            message_id: "0191f5a0-3c1e-7b3a-9a52-5d0b5e0f6c11".to_string(),
            correlation_id: String::new(),
            user_id: "850315400025".to_string(),
            user_role: String::new(),
            user_region: String::new(),
            purpose: "MILITARY_RECRUITMENT".to_string(),
            subject_iin: "900101300017".to_string(),
            consent_id: String::new(),
            timestamp: "2026-11-25T07:30:00.123Z".to_string(),
            version: EnvelopeVersion::V1,
        }
    }

    fn example_body() -> Vec<u8> {
        let mut body = vec![0x0a, 0x0c];
        body.extend_from_slice(b"900101300017");
        body
    }

    fn headers_of(pairs: &[(&'static str, String)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.insert(*name, HeaderValue::from_str(value).expect("header value"));
        }
        headers
    }

    #[test]
    fn worked_example_matches_the_documentation() {
        let key = example_key();
        assert_eq!(
            hex::encode(key.verifying_key().as_bytes()),
            "03a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8"
        );
        let body = example_body();
        assert_eq!(
            sha256_hex(&body),
            "2daffebfcabb587e0c427cb55ac631fa9ca3c1c765a94392021ade47706b648d"
        );
        let pairs = example_builder().sign(&key, EXAMPLE_PATH, Some(&body));
        let signature = pairs
            .iter()
            .find(|(name, _)| *name == SIGNATURE)
            .map(|(_, value)| value.clone());
        assert_eq!(signature.as_deref(), Some(EXAMPLE_SIGNATURE));

        let envelope = parse_envelope(&headers_of(&pairs)).expect("valid envelope");
        let canonical = canonical_string(&envelope.signed_fields(EXAMPLE_PATH, &sha256_hex(&body)));
        assert_eq!(
            canonical,
            "shlyuz-envelope-v1\n0191f5a0-3c1e-7b3a-9a52-5d0b5e0f6c11\n\
             /shlyuz.registry.v1.PersonRegistryService/GetPerson\n2026-11-25T07:30:00.123Z\n\
             850315400025\n900101300017\nMILITARY_RECRUITMENT\n\n\
             2daffebfcabb587e0c427cb55ac631fa9ca3c1c765a94392021ade47706b648d"
        );
        envelope
            .verify(&key.verifying_key(), EXAMPLE_PATH, &sha256_hex(&body))
            .expect("signature verifies");
    }

    #[test]
    fn tampering_with_any_signed_field_breaks_the_signature() {
        let key = example_key();
        let body = example_body();
        let pairs = example_builder().sign(&key, EXAMPLE_PATH, Some(&body));
        let envelope = parse_envelope(&headers_of(&pairs)).expect("valid");
        let hash = sha256_hex(&body);
        assert!(
            envelope
                .verify(&key.verifying_key(), "/other.Service/GetPerson", &hash)
                .is_err()
        );
        assert!(
            envelope
                .verify(&key.verifying_key(), EXAMPLE_PATH, &sha256_hex(b"other"))
                .is_err()
        );
        let mut other_subject = envelope.clone();
        other_subject.subject_iin = "850315400025".to_string();
        let refused = other_subject
            .verify(&key.verifying_key(), EXAMPLE_PATH, &hash)
            .expect_err("subject is signed");
        assert_eq!(refused.reason(), "SIGNATURE_INVALID");
    }

    #[test]
    fn missing_fields_are_all_named() {
        let error = parse_envelope(&HeaderMap::new()).expect_err("empty envelope");
        let fields: Vec<&str> = error
            .field_violations()
            .iter()
            .map(|v| v.field.as_str())
            .collect();
        assert_eq!(fields, vec![MESSAGE_ID, TIMESTAMP, SIGNATURE]);
    }

    #[test]
    fn malformed_fields_are_named() {
        let key = example_key();
        let good = example_builder().sign(&key, EXAMPLE_PATH, None);
        let cases: Vec<(&'static str, &str)> = vec![
            (MESSAGE_ID, "not-a-uuid"),
            (TIMESTAMP, "2026-11-25 07:30:00"),
            (TIMESTAMP, "2026-11-25T07:30:00+05:00"),
            (SIGNATURE, "c2hvcnQ="),
            (SUBJECT_IIN, "900101300015"),
            (USER_ID, "12345"),
            (PURPOSE, "recruitment purpose!"),
            (CORRELATION_ID, "has spaces"),
        ];
        for (field, bad_value) in cases {
            let mut headers = headers_of(&good);
            headers.insert(field, HeaderValue::from_str(bad_value).expect("value"));
            let error = parse_envelope(&headers).expect_err(bad_value);
            let fields: Vec<&str> = error
                .field_violations()
                .iter()
                .map(|v| v.field.as_str())
                .collect();
            assert_eq!(fields, vec![field], "{bad_value}");
            assert_eq!(error.code(), tonic::Code::InvalidArgument);
        }
        let mut oversized = headers_of(&good);
        oversized.insert(
            CORRELATION_ID,
            HeaderValue::from_str(&"a".repeat(129)).expect("value"),
        );
        assert!(parse_envelope(&oversized).is_err());
    }

    #[test]
    fn signature_must_decode_to_64_bytes() {
        let key = example_key();
        let mut pairs = example_builder().sign(&key, EXAMPLE_PATH, None);
        for pair in &mut pairs {
            if pair.0 == SIGNATURE {
                pair.1 = base64::engine::general_purpose::STANDARD.encode([0_u8; 63]);
            }
        }
        let error = parse_envelope(&headers_of(&pairs)).expect_err("short signature");
        assert_eq!(error.field_violations()[0].field, SIGNATURE);
    }

    fn v2_builder() -> EnvelopeBuilder {
        EnvelopeBuilder {
            user_role: "ddo_executor".to_string(),
            user_region: "110000000".to_string(),
            version: EnvelopeVersion::V2,
            ..example_builder()
        }
    }

    /// The v2 worked example of docs/gateway.md, signed independently with Python's
    /// `cryptography` package.
    const EXAMPLE_SIGNATURE_V2: &str =
        "MKIRnI1xAdNs1JvilvOwnhS/REQC84IeHXrNWzWScXp4fk3TneA7Yrb2GjT4QVSf+aptjK+OBC0MtbDQduqjDg==";

    #[test]
    fn v2_worked_example_matches_the_documentation() {
        let body = example_body();
        let pairs = v2_builder().sign(&example_key(), EXAMPLE_PATH, Some(&body));
        let signature = pairs
            .iter()
            .find(|(name, _)| *name == SIGNATURE)
            .map(|(_, value)| value.clone());
        assert_eq!(signature.as_deref(), Some(EXAMPLE_SIGNATURE_V2));
        let version = pairs
            .iter()
            .find(|(name, _)| *name == ENVELOPE_VERSION)
            .map(|(_, value)| value.as_str());
        assert_eq!(version, Some("2"));
        let envelope = parse_envelope(&headers_of(&pairs)).expect("valid envelope");
        assert_eq!(
            canonical_string(&envelope.signed_fields(EXAMPLE_PATH, &sha256_hex(&body))),
            "shlyuz-envelope-v2\n0191f5a0-3c1e-7b3a-9a52-5d0b5e0f6c11\n\
             /shlyuz.registry.v1.PersonRegistryService/GetPerson\n2026-11-25T07:30:00.123Z\n\
             850315400025\nddo_executor\n110000000\n900101300017\nMILITARY_RECRUITMENT\n\n\
             2daffebfcabb587e0c427cb55ac631fa9ca3c1c765a94392021ade47706b648d"
        );
    }

    #[test]
    fn v2_signs_the_role_and_the_region() {
        let key = example_key();
        let body = example_body();
        let pairs = v2_builder().sign(&key, EXAMPLE_PATH, Some(&body));
        let envelope = parse_envelope(&headers_of(&pairs)).expect("valid v2 envelope");
        assert_eq!(envelope.version, EnvelopeVersion::V2);
        assert_eq!(envelope.user_role, "ddo_executor");
        let hash = sha256_hex(&body);
        let canonical = canonical_string(&envelope.signed_fields(EXAMPLE_PATH, &hash));
        assert!(canonical.starts_with("shlyuz-envelope-v2\n"), "{canonical}");
        envelope
            .verify(&key.verifying_key(), EXAMPLE_PATH, &hash)
            .expect("v2 signature verifies");
        for (name, forged) in [(USER_ROLE, "head"), (USER_REGION, "750000000")] {
            let mut headers = headers_of(&pairs);
            headers.insert(name, HeaderValue::from_static(forged));
            let tampered = parse_envelope(&headers).expect("well formed");
            let refused = tampered
                .verify(&key.verifying_key(), EXAMPLE_PATH, &hash)
                .expect_err("the role and the region are signed");
            assert_eq!(refused.reason(), "SIGNATURE_INVALID", "{name}");
        }
    }

    #[test]
    fn a_v1_envelope_cannot_carry_a_role_or_a_region() {
        let key = example_key();
        let mut pairs = example_builder().sign(&key, EXAMPLE_PATH, None);
        pairs.push((USER_ROLE, "head".to_string()));
        let error = parse_envelope(&headers_of(&pairs)).expect_err("unsigned role");
        assert_eq!(error.field_violations()[0].field, USER_ROLE);
        let mut headers = headers_of(&example_builder().sign(&key, EXAMPLE_PATH, None));
        headers.insert(ENVELOPE_VERSION, HeaderValue::from_static("3"));
        let error = parse_envelope(&headers).expect_err("unknown version");
        assert_eq!(error.field_violations()[0].field, ENVELOPE_VERSION);
    }

    #[test]
    fn every_envelope_key_may_appear_only_once() {
        let key = example_key();
        let pairs = v2_builder().sign(&key, EXAMPLE_PATH, None);
        for name in ENVELOPE_KEYS {
            let mut headers = headers_of(&pairs);
            let value = headers
                .get(name)
                .cloned()
                .unwrap_or_else(|| HeaderValue::from_static("x"));
            headers.append(name, value.clone());
            headers.append(name, value);
            let error = parse_envelope(&headers).expect_err(name);
            assert_eq!(error.code(), tonic::Code::InvalidArgument, "{name}");
            let fields: Vec<&str> = error
                .field_violations()
                .iter()
                .map(|found| found.field.as_str())
                .collect();
            assert_eq!(fields, vec![name]);
        }
    }

    #[test]
    fn timestamps_format_and_parse() {
        let instant = time::macros::datetime!(2026-11-25 07:30:00.123 UTC);
        let text = format_timestamp(instant);
        assert_eq!(text, "2026-11-25T07:30:00.123Z");
        assert_eq!(parse_timestamp_ms(&text), Some(1_795_591_800_123));
    }
}
