//! What one message-log entry holds and how it is hashed: the record the proxy hands in, the
//! entry as stored with its place in a chain, and the canonical bytes that the hash chain and the
//! checkpoint signatures cover (docs/message-log.md describes them byte by byte).

use std::fmt;

/// Length of a SHA-256 digest, the size of every hash in the log.
pub const HASH_LEN: usize = 32;

/// Version tag opening every entry's canonical bytes; a new layout gets a new tag.
pub const ENTRY_FORMAT_TAG: &str = "shlyuz-message-log-entry-v1";

/// First line of the message a checkpoint signature covers.
pub const CHECKPOINT_FORMAT_TAG: &str = "shlyuz-checkpoint-v1";

/// First line of the message a chain's link signature covers.
pub const CHAIN_LINK_FORMAT_TAG: &str = "shlyuz-chain-link-v1";

/// The `previous_hash` of the first entry of every chain.
pub const GENESIS_HASH: [u8; HASH_LEN] = [0; HASH_LEN];

/// How a call reached the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Channel {
    /// The transparent gRPC proxy.
    Sync,
    /// Store and forward.
    Async,
}

impl Channel {
    /// The stored and hashed spelling: `sync` or `async`.
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Sync => "sync",
            Channel::Async => "async",
        }
    }

    /// The channel a stored spelling names, `None` for anything else.
    pub fn parse(text: &str) -> Option<Channel> {
        match text {
            "sync" => Some(Channel::Sync),
            "async" => Some(Channel::Async),
            _ => None,
        }
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.as_str())
    }
}

/// One finished call, as the proxy or the async channel hands it to the message log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord {
    /// When the gateway finished the call, epoch milliseconds UTC.
    pub time_ms: i64,
    /// `x-shlyuz-message-id`.
    pub message_id: String,
    /// `x-shlyuz-correlation-id`, empty when absent.
    pub correlation_id: String,
    /// The calling participant.
    pub sender: String,
    /// `x-shlyuz-user-id`, empty when absent.
    pub user_id: String,
    /// Fully qualified gRPC service.
    pub service: String,
    /// Method name.
    pub method: String,
    /// `x-shlyuz-purpose`, empty when absent.
    pub purpose: String,
    /// `x-shlyuz-subject-iin`, empty when absent.
    pub subject_iin: String,
    /// SHA-256 of the request message.
    pub request_hash: [u8; HASH_LEN],
    /// SHA-256 of the response message, `None` when there was none.
    pub response_hash: Option<[u8; HASH_LEN]>,
    /// gRPC status code of the call (0 = OK).
    pub status_code: i32,
    /// `ErrorInfo` reason when the gateway refused or failed the call.
    pub reason: String,
    /// Time the gateway spent on the call, microseconds.
    pub duration_us: i64,
    /// Sync or async channel.
    pub channel: Channel,
    /// The call concerns personal data: with a subject IIN it also makes a subject-access row.
    pub personal_data: bool,
    /// The request message; stored only when the log is configured to store bodies.
    pub request_body: Option<Vec<u8>>,
    /// The response message; stored only when the log is configured to store bodies.
    pub response_body: Option<Vec<u8>>,
}

impl LogRecord {
    /// The first field the database could not store or index, so one bad record is refused
    /// alone instead of failing the whole batch it would join: a NUL character (PostgreSQL
    /// refuses it in TEXT), or an indexed field longer than [`MAX_INDEXED_FIELD_BYTES`]
    /// (a PostgreSQL btree row holds at most 2,704 bytes).
    pub(crate) fn first_unstorable_field(&self) -> Option<&'static str> {
        let indexed_fields = [
            ("message_id", &self.message_id),
            ("correlation_id", &self.correlation_id),
            ("sender", &self.sender),
            ("service", &self.service),
            ("method", &self.method),
        ];
        let other_fields = [
            ("user_id", &self.user_id),
            ("purpose", &self.purpose),
            ("subject_iin", &self.subject_iin),
            ("reason", &self.reason),
        ];
        indexed_fields
            .into_iter()
            .find(|(_, value)| value.len() > MAX_INDEXED_FIELD_BYTES)
            .or_else(|| {
                indexed_fields
                    .into_iter()
                    .chain(other_fields)
                    .find(|(_, value)| value.contains('\0'))
            })
            .map(|(name, _)| name)
    }
}

/// Longest value of an indexed text field of an entry (two of them share one index row).
/// The gateway never logs more (paths are cut at 512 characters, envelope values at 64).
pub const MAX_INDEXED_FIELD_BYTES: usize = 1_024;

/// Where an entry landed: its chain and its sequence number in that chain.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LogPosition {
    /// The chain of the gateway instance run that wrote the entry.
    pub chain_id: String,
    /// Position in the chain, from 1.
    pub sequence: i64,
}

impl fmt::Display for LogPosition {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}:{}", self.chain_id, self.sequence)
    }
}

/// One entry as stored: a record's fields with its place in a chain and its hash links.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEntry {
    /// The chain.
    pub chain_id: String,
    /// Position in the chain, from 1.
    pub sequence: i64,
    /// See [`LogRecord::time_ms`].
    pub time_ms: i64,
    /// See [`LogRecord::message_id`].
    pub message_id: String,
    /// See [`LogRecord::correlation_id`].
    pub correlation_id: String,
    /// See [`LogRecord::sender`].
    pub sender: String,
    /// See [`LogRecord::user_id`].
    pub user_id: String,
    /// See [`LogRecord::service`].
    pub service: String,
    /// See [`LogRecord::method`].
    pub method: String,
    /// See [`LogRecord::purpose`].
    pub purpose: String,
    /// See [`LogRecord::subject_iin`].
    pub subject_iin: String,
    /// See [`LogRecord::request_hash`].
    pub request_hash: [u8; HASH_LEN],
    /// See [`LogRecord::response_hash`].
    pub response_hash: Option<[u8; HASH_LEN]>,
    /// See [`LogRecord::status_code`].
    pub status_code: i32,
    /// See [`LogRecord::reason`].
    pub reason: String,
    /// See [`LogRecord::duration_us`].
    pub duration_us: i64,
    /// See [`LogRecord::channel`].
    pub channel: Channel,
    /// See [`LogRecord::personal_data`].
    pub personal_data: bool,
    /// The stored request body, `None` when bodies are not stored.
    pub request_body: Option<Vec<u8>>,
    /// The stored response body, `None` when bodies are not stored.
    pub response_body: Option<Vec<u8>>,
    /// `entry_hash` of the previous entry of the chain, [`GENESIS_HASH`] for the first.
    pub previous_hash: [u8; HASH_LEN],
    /// SHA-256 of `previous_hash` followed by the canonical bytes of this entry.
    pub entry_hash: [u8; HASH_LEN],
}

impl StoredEntry {
    /// Places `record` at `sequence` of `chain_id`, after the entry whose hash is
    /// `previous_hash`, and computes its hash; bodies are kept only when `store_bodies` is set.
    pub fn seal(
        chain_id: String,
        sequence: i64,
        previous_hash: [u8; HASH_LEN],
        record: LogRecord,
        store_bodies: bool,
    ) -> StoredEntry {
        let (request_body, response_body) = if store_bodies {
            (record.request_body, record.response_body)
        } else {
            (None, None)
        };
        let mut entry = StoredEntry {
            chain_id,
            sequence,
            time_ms: record.time_ms,
            message_id: record.message_id,
            correlation_id: record.correlation_id,
            sender: record.sender,
            user_id: record.user_id,
            service: record.service,
            method: record.method,
            purpose: record.purpose,
            subject_iin: record.subject_iin,
            request_hash: record.request_hash,
            response_hash: record.response_hash,
            status_code: record.status_code,
            reason: record.reason,
            duration_us: record.duration_us,
            channel: record.channel,
            personal_data: record.personal_data,
            request_body,
            response_body,
            previous_hash,
            entry_hash: GENESIS_HASH,
        };
        entry.entry_hash = entry.compute_hash();
        entry
    }

    /// The position of this entry.
    pub fn position(&self) -> LogPosition {
        LogPosition {
            chain_id: self.chain_id.clone(),
            sequence: self.sequence,
        }
    }

    /// Moves the entry to `sequence` after the entry whose hash is `previous_hash` (a retry
    /// after its batch failed) and recomputes its hash.
    pub fn relink(&mut self, sequence: i64, previous_hash: [u8; HASH_LEN]) {
        self.sequence = sequence;
        self.previous_hash = previous_hash;
        self.entry_hash = self.compute_hash();
    }

    /// The persons this entry names, each getting one subject-access row: every item of the
    /// comma-separated `subject_iin` that is a valid IIN (spaces around it ignored), sorted and
    /// without duplicates. Other items (only a refused call's raw header has them) name nobody.
    /// The rows of a personal-data entry are the subject access log; the others only let
    /// `ListEntries` find the entry by subject.
    pub fn accessed_subjects(&self) -> Vec<&str> {
        let mut subjects: Vec<&str> = self
            .subject_iin
            .split(',')
            .map(str::trim)
            .filter(|item| shlyuz_kit::iin::Iin::parse(item).is_ok())
            .collect();
        subjects.sort_unstable();
        subjects.dedup();
        subjects
    }

    /// The canonical encoding of every field except the hash links: the format tag, then each
    /// field as a 4-byte big-endian length followed by its bytes, in a fixed order. Bodies enter
    /// as the SHA-256 of the stored body, so a stored body cannot be swapped without breaking
    /// the chain.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let mut encoder = CanonicalEncoder::default();
        encoder.field(ENTRY_FORMAT_TAG.as_bytes());
        encoder.field(self.chain_id.as_bytes());
        encoder.field(&self.sequence.to_be_bytes());
        encoder.field(&self.time_ms.to_be_bytes());
        encoder.field(self.message_id.as_bytes());
        encoder.field(self.correlation_id.as_bytes());
        encoder.field(self.sender.as_bytes());
        encoder.field(self.user_id.as_bytes());
        encoder.field(self.service.as_bytes());
        encoder.field(self.method.as_bytes());
        encoder.field(self.purpose.as_bytes());
        encoder.field(self.subject_iin.as_bytes());
        encoder.field(&self.request_hash);
        encoder.optional_field(self.response_hash.as_ref().map(|hash| hash.as_slice()));
        encoder.field(&self.status_code.to_be_bytes());
        encoder.field(self.reason.as_bytes());
        encoder.field(&self.duration_us.to_be_bytes());
        encoder.field(self.channel.as_str().as_bytes());
        encoder.field(&[u8::from(self.personal_data)]);
        let request_body_digest = self.request_body.as_deref().map(sha256);
        encoder.optional_field(request_body_digest.as_ref().map(|digest| digest.as_slice()));
        let response_body_digest = self.response_body.as_deref().map(sha256);
        encoder.optional_field(
            response_body_digest
                .as_ref()
                .map(|digest| digest.as_slice()),
        );
        encoder.bytes
    }

    /// What `entry_hash` must be: SHA-256 of `previous_hash` followed by the canonical bytes.
    pub fn compute_hash(&self) -> [u8; HASH_LEN] {
        let mut context = ring::digest::Context::new(&ring::digest::SHA256);
        context.update(&self.previous_hash);
        context.update(&self.canonical_bytes());
        digest_to_array(context.finish())
    }
}

/// Builds canonical bytes: every field is a u32 big-endian length, then the bytes.
#[derive(Default)]
struct CanonicalEncoder {
    bytes: Vec<u8>,
}

impl CanonicalEncoder {
    fn field(&mut self, value: &[u8]) {
        // Nothing the gateway logs comes near 4 GiB (gRPC messages are limited far below), so
        // saturating here never changes an encoding in practice.
        let length = u32::try_from(value.len()).unwrap_or(u32::MAX);
        self.bytes.extend_from_slice(&length.to_be_bytes());
        self.bytes.extend_from_slice(value);
    }

    /// An absent value is an empty field; a present one is always 32 bytes, so the two never
    /// collide.
    fn optional_field(&mut self, value: Option<&[u8]>) {
        self.field(value.unwrap_or_default());
    }
}

/// The exact text a checkpoint signature covers, UTF-8, lines separated by `\n`, no final
/// newline: the tag, the chain id, the sequence in decimal, the entry hash in lowercase hex and
/// the checkpoint time in decimal epoch milliseconds.
pub fn checkpoint_message(
    chain_id: &str,
    sequence: i64,
    entry_hash: &[u8],
    time_ms: i64,
) -> String {
    format!(
        "{CHECKPOINT_FORMAT_TAG}\n{chain_id}\n{sequence}\n{}\n{time_ms}",
        hex::encode(entry_hash)
    )
}

/// The exact text a chain's link signature covers, UTF-8, lines separated by `\n`, no final
/// newline: the tag, the chain id, its start time in decimal epoch milliseconds, the previous
/// chain's id (empty for a chain that links to none), the sequence of that chain's closing head in
/// decimal (0 when it had no entry), that entry's hash in lowercase hex (empty when none), and the
/// lowercase hex SHA-256 of the ids of the chains written before chains had records (sorted,
/// joined by `\n`).
pub fn chain_link_message(
    chain_id: &str,
    started_ms: i64,
    previous_chain_id: &str,
    previous_sequence: i64,
    previous_entry_hash: &[u8],
    legacy_chains_digest: &[u8],
) -> String {
    format!(
        "{CHAIN_LINK_FORMAT_TAG}\n{chain_id}\n{started_ms}\n{previous_chain_id}\n{previous_sequence}\n{}\n{}",
        hex::encode(previous_entry_hash),
        hex::encode(legacy_chains_digest)
    )
}

/// SHA-256 of `bytes`.
pub fn sha256(bytes: &[u8]) -> [u8; HASH_LEN] {
    digest_to_array(ring::digest::digest(&ring::digest::SHA256, bytes))
}

fn digest_to_array(digest: ring::digest::Digest) -> [u8; HASH_LEN] {
    let mut hash = [0_u8; HASH_LEN];
    // A SHA-256 digest is always 32 bytes.
    hash.copy_from_slice(digest.as_ref());
    hash
}
