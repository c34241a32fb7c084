//! `shlyuz.gateway.v1.MessageLogService` (get, list, verify) and
//! `shlyuz.gateway.v1.AccessLogService` ("who looked at my data") over the message log's tables.
//! Who may call them is decided by the directory's access rules, like any other route.

use shlyuz_kit::clock::SharedClock;
use shlyuz_kit::db::Database;
use shlyuz_kit::error::{ApiError, parse_iin_field};
use shlyuz_kit::paging::{decode_page_token, encode_page_token, page_size};
use shlyuz_kit::pki::VerifyingKey;
use shlyuz_proto::gateway::v1::access_log_service_server::{
    AccessLogService, AccessLogServiceServer,
};
use shlyuz_proto::gateway::v1::message_log_service_server::{
    MessageLogService, MessageLogServiceServer,
};
use shlyuz_proto::gateway::v1::{
    ChainLink, ChainVerification, Checkpoint, ExportCheckpointsRequest, ExportCheckpointsResponse,
    GetEntryRequest, GetEntryResponse, ListEntriesRequest, ListEntriesResponse,
    ListSubjectAccessRequest, ListSubjectAccessResponse, LogEntry, SubjectAccess,
    VerifyChainRequest, VerifyChainResponse,
};
use tonic::{Request, Response, Status};

use super::MessageLogOptions;
use super::record::StoredEntry;
use super::store::{self, EntryFilter, ListCursor};
use super::verify::verify_chains;
use crate::identity::CallerIdentity;

/// Most bytes of entries in one `ListEntries` page, so that a page of entries naming 500
/// persons each still fits the 64 KiB response limit of the gateway's local routes (with room
/// for the page token and framing); a longer listing continues on the next page.
pub const MAX_PAGE_BYTES: usize = 48 * 1024;

/// What one entry adds to a page beyond its own encoding (field tag and length prefix).
const ENTRY_FRAMING_BYTES: usize = 8;

/// The message-log API.
#[derive(Clone)]
pub struct MessageLogApi {
    database: Database,
    trusted_keys: Vec<VerifyingKey>,
    max_unsigned_entries: i64,
    chain_lease_ms: i64,
    clock: SharedClock,
}

impl std::fmt::Debug for MessageLogApi {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("MessageLogApi")
            .field("trusted_keys", &self.trusted_keys.len())
            .field("max_unsigned_entries", &self.max_unsigned_entries)
            .field("chain_lease_ms", &self.chain_lease_ms)
            .finish_non_exhaustive()
    }
}

/// The tonic server of the message-log API; `trusted_keys` verify checkpoint and link
/// signatures, `options` say how far apart the writer puts its checkpoints and how long a chain's
/// heartbeat lasts, `clock` tells which chains are live.
pub fn message_log_server(
    database: Database,
    trusted_keys: Vec<VerifyingKey>,
    options: &MessageLogOptions,
    clock: SharedClock,
) -> MessageLogServiceServer<MessageLogApi> {
    MessageLogServiceServer::new(
        MessageLogApi::new(database, trusted_keys)
            .with_checkpoint_spacing(options)
            .with_clock(clock),
    )
}

impl MessageLogApi {
    /// The API over the log in `database`; `trusted_keys` verify checkpoint signatures. Chains
    /// are expected to be checkpointed as often as the default [`MessageLogOptions`] say.
    pub fn new(database: Database, trusted_keys: Vec<VerifyingKey>) -> Self {
        let options = MessageLogOptions::default();
        Self {
            database,
            trusted_keys,
            max_unsigned_entries: max_unsigned_entries(&options),
            chain_lease_ms: lease_ms(&options),
            clock: shlyuz_kit::clock::system_clock(),
        }
    }

    /// Expects the checkpoint spacing and the chain lease of a writer configured with `options`.
    pub fn with_checkpoint_spacing(mut self, options: &MessageLogOptions) -> Self {
        self.max_unsigned_entries = max_unsigned_entries(options);
        self.chain_lease_ms = lease_ms(options);
        self
    }

    /// Tells live chains by `clock` (the writers' clock) instead of the system clock.
    pub fn with_clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self
    }
}

/// Most entries a writer with `options` leaves between two checkpoints: a checkpoint is due
/// after `checkpoint_every_entries` and is written with the batch that reaches it, which holds
/// at most `max_batch` entries.
fn max_unsigned_entries(options: &MessageLogOptions) -> i64 {
    let batch = i64::try_from(options.max_batch).unwrap_or(i64::MAX);
    options
        .checkpoint_every_entries
        .max(1)
        .saturating_add(batch.max(1))
}

fn lease_ms(options: &MessageLogOptions) -> i64 {
    i64::try_from(options.chain_lease.as_millis()).unwrap_or(i64::MAX)
}

/// The subject access log API.
#[derive(Debug, Clone)]
pub struct AccessLogApi {
    database: Database,
}

/// The tonic server of the subject access log API.
pub fn access_log_server(database: Database) -> AccessLogServiceServer<AccessLogApi> {
    AccessLogServiceServer::new(AccessLogApi::new(database))
}

impl AccessLogApi {
    /// The API over the subject access log in `database`.
    pub fn new(database: Database) -> Self {
        Self { database }
    }
}

fn entry_message(entry: StoredEntry) -> LogEntry {
    LogEntry {
        chain_id: entry.chain_id,
        sequence: entry.sequence,
        time_ms: entry.time_ms,
        message_id: entry.message_id,
        correlation_id: entry.correlation_id,
        sender: entry.sender,
        user_id: entry.user_id,
        service: entry.service,
        method: entry.method,
        purpose: entry.purpose,
        subject_iin: entry.subject_iin,
        request_hash: hex::encode(entry.request_hash),
        response_hash: entry.response_hash.map(hex::encode).unwrap_or_default(),
        status_code: entry.status_code,
        reason: entry.reason,
        duration_us: entry.duration_us,
        channel: entry.channel.as_str().to_string(),
        previous_hash: hex::encode(entry.previous_hash),
        entry_hash: hex::encode(entry.entry_hash),
        request_body: entry.request_body.unwrap_or_default(),
        response_body: entry.response_body.unwrap_or_default(),
    }
}

/// The page-token scope of a filtered listing: a token only resumes the listing it came from.
fn entries_scope(filter: &EntryFilter) -> String {
    let fingerprint = super::record::sha256(format!("{filter:?}").as_bytes());
    format!("entries/{}", hex::encode(&fingerprint[..12]))
}

fn decode_cursor(token: &str, scope: &str) -> Result<Option<ListCursor>, ApiError> {
    match decode_page_token(token, scope)? {
        None => Ok(None),
        Some(key) => ListCursor::decode(&key).map(Some).ok_or_else(|| {
            ApiError::invalid_field("page_token", "is not a token returned by this list")
        }),
    }
}

fn validate_filter(request: &ListEntriesRequest) -> Result<EntryFilter, ApiError> {
    if !request.subject_iin.is_empty() {
        parse_iin_field("subject_iin", &request.subject_iin)?;
    }
    if request.since_ms < 0 {
        return Err(ApiError::invalid_field("since_ms", "must not be negative"));
    }
    if request.until_ms < 0 {
        return Err(ApiError::invalid_field("until_ms", "must not be negative"));
    }
    if request.until_ms != 0 && request.until_ms <= request.since_ms {
        return Err(ApiError::invalid_field(
            "until_ms",
            "must be after since_ms",
        ));
    }
    Ok(EntryFilter {
        sender: request.sender.clone(),
        service: request.service.clone(),
        method: request.method.clone(),
        subject_iin: request.subject_iin.clone(),
        correlation_id: request.correlation_id.clone(),
        since_ms: request.since_ms,
        until_ms: request.until_ms,
    })
}

#[tonic::async_trait]
impl MessageLogService for MessageLogApi {
    async fn get_entry(
        &self,
        request: Request<GetEntryRequest>,
    ) -> Result<Response<GetEntryResponse>, Status> {
        let caller = CallerIdentity::of(&request).map(|identity| identity.participant_id.clone());
        let message = request.into_inner();
        if message.message_id.is_empty() {
            return Err(ApiError::invalid_field("message_id", "is required").into());
        }
        let sender = if message.sender.is_empty() {
            caller.ok_or_else(|| {
                ApiError::invalid_field(
                    "sender",
                    "is required when the caller's identity is not known",
                )
            })?
        } else {
            message.sender
        };
        let entry = store::entry_by_message(&self.database, &sender, &message.message_id)
            .await
            .map_err(ApiError::from)?;
        match entry {
            Some(entry) => Ok(Response::new(GetEntryResponse {
                entry: Some(entry_message(entry)),
            })),
            None => Err(ApiError::not_found(
                "ENTRY_NOT_FOUND",
                format!(
                    "no message-log entry for message {} of {sender}",
                    message.message_id
                ),
            )
            .into()),
        }
    }

    async fn list_entries(
        &self,
        request: Request<ListEntriesRequest>,
    ) -> Result<Response<ListEntriesResponse>, Status> {
        let message = request.into_inner();
        let limit = page_size(message.page_size)?;
        let filter = validate_filter(&message)?;
        let scope = entries_scope(&filter);
        let cursor = decode_cursor(&message.page_token, &scope)?;
        // One row more than the page tells whether another page follows.
        let mut entries = store::list_entries(&self.database, &filter, cursor.as_ref(), limit + 1)
            .await
            .map_err(ApiError::from)?;
        let mut has_more = entries.len() > limit;
        entries.truncate(limit);
        // A page ends early rather than outgrow MAX_PAGE_BYTES; it holds at least one entry.
        let mut page = Vec::with_capacity(entries.len());
        let mut page_bytes = 0;
        let mut last_key = None;
        for entry in entries {
            let key = ListCursor::after(entry.time_ms, &entry.chain_id, entry.sequence);
            let message = entry_message(entry);
            let size = prost::Message::encoded_len(&message) + ENTRY_FRAMING_BYTES;
            if !page.is_empty() && page_bytes + size > MAX_PAGE_BYTES {
                has_more = true;
                break;
            }
            page_bytes += size;
            page.push(message);
            last_key = Some(key);
        }
        let next_page_token = match last_key {
            Some(last) if has_more => encode_page_token(&scope, &last.encode()),
            _ => String::new(),
        };
        let response = Response::new(ListEntriesResponse {
            entries: page,
            next_page_token,
        });
        // Reading the log about a person is an access to that person's data: the gateway logs
        // this call with the subject (and a subject-access row), as for any declared answer.
        Ok(shlyuz_kit::subject::declare_response_subjects(
            response,
            [filter.subject_iin.as_str()],
        ))
    }

    async fn export_checkpoints(
        &self,
        request: Request<ExportCheckpointsRequest>,
    ) -> Result<Response<ExportCheckpointsResponse>, Status> {
        let message = request.into_inner();
        if message.chain_id.is_empty() {
            return Err(ApiError::invalid_field("chain_id", "is required").into());
        }
        let limit = page_size(message.page_size)?;
        let scope = format!("checkpoints/{}", message.chain_id);
        let after_sequence = match decode_page_token(&message.page_token, &scope)? {
            None => 0,
            Some(key) => key.parse::<i64>().map_err(|_| {
                ApiError::invalid_field("page_token", "is not a token returned by this list")
            })?,
        };
        // One row more than the page tells whether another page follows.
        let mut checkpoints = store::checkpoints_after(
            &self.database,
            &message.chain_id,
            after_sequence,
            i64::try_from(limit + 1).unwrap_or(i64::MAX),
        )
        .await
        .map_err(ApiError::from)?;
        let has_more = checkpoints.len() > limit;
        checkpoints.truncate(limit);
        let link = store::chain_record(&self.database, &message.chain_id)
            .await
            .map_err(ApiError::from)?
            .filter(|chain| !chain.legacy)
            .map(|chain| ChainLink {
                signed_message: super::record::chain_link_message(
                    &chain.chain_id,
                    chain.started_ms,
                    &chain.previous_chain_id,
                    chain.previous_sequence,
                    &chain.previous_entry_hash,
                    &chain.legacy_chains_digest,
                ),
                previous_entry_hash: hex::encode(&chain.previous_entry_hash),
                closed: chain.closed_ms.is_some(),
                closed_sequence: chain.closed_sequence.unwrap_or_default(),
                chain_id: chain.chain_id,
                started_ms: chain.started_ms,
                previous_chain_id: chain.previous_chain_id,
                previous_sequence: chain.previous_sequence,
                signature: chain.link_signature,
                signer_public_key: chain.signer_public_key,
            });
        let next_page_token = match checkpoints.last() {
            Some(last) if has_more => encode_page_token(&scope, &last.sequence.to_string()),
            _ => String::new(),
        };
        Ok(Response::new(ExportCheckpointsResponse {
            checkpoints: checkpoints
                .into_iter()
                .map(|checkpoint| Checkpoint {
                    signed_message: super::record::checkpoint_message(
                        &checkpoint.chain_id,
                        checkpoint.sequence,
                        &checkpoint.entry_hash,
                        checkpoint.time_ms,
                    ),
                    entry_hash: hex::encode(&checkpoint.entry_hash),
                    chain_id: checkpoint.chain_id,
                    sequence: checkpoint.sequence,
                    time_ms: checkpoint.time_ms,
                    signature: checkpoint.signature,
                    signer_public_key: checkpoint.signer_public_key,
                })
                .collect(),
            next_page_token,
            link,
        }))
    }

    async fn verify_chain(
        &self,
        request: Request<VerifyChainRequest>,
    ) -> Result<Response<VerifyChainResponse>, Status> {
        let message = request.into_inner();
        let only_chain = (!message.chain_id.is_empty()).then_some(message.chain_id.as_str());
        let reports = verify_chains(
            &self.database,
            &self.trusted_keys,
            self.max_unsigned_entries,
            self.clock.now_millis().saturating_sub(self.chain_lease_ms),
            only_chain,
        )
        .await
        .map_err(ApiError::from)?;
        let intact = reports.iter().all(|report| report.intact());
        Ok(Response::new(VerifyChainResponse {
            intact,
            chains: reports
                .into_iter()
                .map(|report| ChainVerification {
                    intact: report.intact(),
                    first_broken_sequence: report.first_broken_sequence.unwrap_or_default(),
                    chain_id: report.chain_id,
                    entries: report.entries,
                    checkpoints: report.checkpoints,
                    problem: report.problem,
                    closed: report.closed,
                    live: report.live,
                    previous_chain_id: report.previous_chain_id,
                })
                .collect(),
        }))
    }
}

#[tonic::async_trait]
impl AccessLogService for AccessLogApi {
    async fn list_subject_access(
        &self,
        request: Request<ListSubjectAccessRequest>,
    ) -> Result<Response<ListSubjectAccessResponse>, Status> {
        // Whose access log is read is itself personal data: only the subject the call names.
        let named = shlyuz_kit::subject::Subjects::from_metadata(request.metadata());
        let message = request.into_inner();
        let subject = parse_iin_field("subject_iin", &message.subject_iin)?;
        named?.require("subject_iin", &subject)?;
        let limit = page_size(message.page_size)?;
        let scope = format!("subject-access/{subject}");
        let cursor = decode_cursor(&message.page_token, &scope)?;
        let mut rows = store::list_subject_access(
            &self.database,
            subject.as_str(),
            cursor.as_ref(),
            limit + 1,
        )
        .await
        .map_err(ApiError::from)?;
        let has_more = rows.len() > limit;
        rows.truncate(limit);
        let next_page_token = match rows.last() {
            Some(last) if has_more => encode_page_token(
                &scope,
                &ListCursor::after(last.time_ms, &last.chain_id, last.sequence).encode(),
            ),
            _ => String::new(),
        };
        Ok(Response::new(ListSubjectAccessResponse {
            accesses: rows
                .into_iter()
                .map(|row| SubjectAccess {
                    time_ms: row.time_ms,
                    participant_id: row.participant_id,
                    user_id: row.user_id,
                    service: row.service,
                    method: row.method,
                    purpose: row.purpose,
                    message_id: row.message_id,
                    status_code: i32::try_from(row.status_code).unwrap_or(i32::MAX),
                })
                .collect(),
            next_page_token,
        }))
    }
}
