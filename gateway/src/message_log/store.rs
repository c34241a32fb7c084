//! The message log's SQL: writing a batch (entries, subject-access rows, a checkpoint) in one
//! transaction, and the reads behind the services and chain verification. Portable SQL only
//! (ARCHITECTURE.md §5): `$n` placeholders (except the hot multi-row INSERTs, see [`values_clause`]),
//! BIGINT/TEXT/BLOB columns, row-value comparisons for keyset paging, which SQLite and PostgreSQL
//! both support.

use shlyuz_kit::db::{Database, values_clause};
use sqlx::any::{AnyArguments, AnyRow};
use sqlx::{Arguments, Row};

use super::record::{Channel, HASH_LEN, StoredEntry};

/// Every column of `message_log_entries`, in insert order.
const ENTRY_COLUMNS: [&str; 22] = [
    "chain_id",
    "sequence",
    "time_ms",
    "message_id",
    "correlation_id",
    "sender",
    "user_id",
    "service",
    "method",
    "purpose",
    "subject_iin",
    "request_hash",
    "response_hash",
    "status_code",
    "reason",
    "duration_us",
    "channel",
    "personal_data",
    "request_body",
    "response_body",
    "previous_hash",
    "entry_hash",
];

const SUBJECT_ACCESS_COLUMNS: [&str; 12] = [
    "chain_id",
    "sequence",
    "time_ms",
    "subject_iin",
    "participant_id",
    "user_id",
    "service",
    "method",
    "purpose",
    "message_id",
    "status_code",
    "personal_data",
];

/// Rows per multi-row INSERT, largest first: a batch is split greedily into these sizes, so only a
/// few distinct statements exist and each stays prepared in the connection's statement cache.
const STATEMENT_ROWS: [usize; 3] = [16, 4, 1];

/// `items` split into runs of [`STATEMENT_ROWS`] sizes, largest first.
fn statement_chunks<T>(mut items: &[T]) -> Vec<&[T]> {
    let mut chunks = Vec::new();
    for size in STATEMENT_ROWS {
        while items.len() >= size {
            let (chunk, rest) = items.split_at(size);
            chunks.push(chunk);
            items = rest;
        }
    }
    chunks
}

/// A signed checkpoint as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCheckpoint {
    /// The chain.
    pub chain_id: String,
    /// The entry the checkpoint signs.
    pub sequence: i64,
    /// That entry's hash.
    pub entry_hash: Vec<u8>,
    /// When the checkpoint was made, epoch milliseconds.
    pub time_ms: i64,
    /// Ed25519 signature of [`super::checkpoint_message`].
    pub signature: Vec<u8>,
    /// Lowercase hex of the signer's raw public key.
    pub signer_public_key: String,
}

/// One row of the subject access log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubjectAccessRow {
    /// The chain of the entry.
    pub chain_id: String,
    /// The entry's sequence.
    pub sequence: i64,
    /// When, epoch milliseconds.
    pub time_ms: i64,
    /// The calling participant.
    pub participant_id: String,
    /// The official on whose behalf it called.
    pub user_id: String,
    /// Service.
    pub service: String,
    /// Method.
    pub method: String,
    /// Purpose.
    pub purpose: String,
    /// Message id.
    pub message_id: String,
    /// gRPC status code.
    pub status_code: i64,
}

/// Where a newest-first listing resumes: strictly before this key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListCursor {
    /// Time of the last row returned.
    pub time_ms: i64,
    /// Its chain.
    pub chain_id: String,
    /// Its sequence.
    pub sequence: i64,
}

impl ListCursor {
    /// The cursor after `entry`.
    pub fn after(time_ms: i64, chain_id: &str, sequence: i64) -> ListCursor {
        ListCursor {
            time_ms,
            chain_id: chain_id.to_string(),
            sequence,
        }
    }

    /// `time|chain|sequence`, the key inside page tokens.
    pub fn encode(&self) -> String {
        format!("{}|{}|{}", self.time_ms, self.chain_id, self.sequence)
    }

    /// The inverse of [`ListCursor::encode`]; `None` for anything else.
    pub fn decode(text: &str) -> Option<ListCursor> {
        let mut parts = text.split('|');
        let time_ms = parts.next()?.parse().ok()?;
        let chain_id = parts.next()?.to_string();
        let sequence = parts.next()?.parse().ok()?;
        if parts.next().is_some() || chain_id.is_empty() {
            return None;
        }
        Some(ListCursor {
            time_ms,
            chain_id,
            sequence,
        })
    }
}

/// Filters of `ListEntries`; empty strings and zero times do not filter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EntryFilter {
    /// Sender.
    pub sender: String,
    /// Service.
    pub service: String,
    /// Method.
    pub method: String,
    /// Subject IIN.
    pub subject_iin: String,
    /// Correlation id.
    pub correlation_id: String,
    /// At or after, epoch ms (0: unbounded).
    pub since_ms: i64,
    /// Before, epoch ms (0: unbounded).
    pub until_ms: i64,
}

fn bind<'q, T>(arguments: &mut AnyArguments<'q>, value: T) -> Result<(), sqlx::Error>
where
    T: 'q + sqlx::Encode<'q, sqlx::Any> + sqlx::Type<sqlx::Any>,
{
    arguments.add(value).map_err(sqlx::Error::Encode)
}

/// Whether a write landed on its chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Appended {
    /// Committed.
    Written,
    /// Nothing was written: the chain is closed (another instance closed it after its heartbeat
    /// lapsed), so its writer must go on in a new chain.
    ChainClosed,
}

/// Refreshes the heartbeat of `chain_id` inside `transaction` if the chain is still open; whether
/// it is. A closing start takes the same row first, so a write and a closure never interleave.
async fn refresh_open_chain(
    transaction: &mut sqlx::Transaction<'_, sqlx::Any>,
    chain_id: &str,
    now_ms: i64,
) -> Result<bool, sqlx::Error> {
    let updated = sqlx::query(
        "UPDATE message_log_chains SET heartbeat_ms = $1 WHERE chain_id = $2 AND closed_ms IS NULL",
    )
    .bind(now_ms)
    .bind(chain_id.to_string())
    .execute(&mut **transaction)
    .await?;
    Ok(updated.rows_affected() == 1)
}

/// Writes `entries` (all of `chain_id`), their subject-access rows and `checkpoint` in one
/// transaction, and refreshes the chain's heartbeat to `now_ms` — unless the chain was closed,
/// in which case nothing is written.
pub async fn write_batch(
    database: &Database,
    chain_id: &str,
    now_ms: i64,
    entries: &[StoredEntry],
    checkpoint: Option<&StoredCheckpoint>,
) -> Result<Appended, sqlx::Error> {
    let mut transaction = database.pool().begin().await?;
    if !refresh_open_chain(&mut transaction, chain_id, now_ms).await? {
        transaction.rollback().await?;
        return Ok(Appended::ChainClosed);
    }
    for chunk in statement_chunks(entries) {
        let sql = format!(
            "INSERT INTO message_log_entries ({}) VALUES {}",
            ENTRY_COLUMNS.join(", "),
            values_clause(database.dialect(), chunk.len(), ENTRY_COLUMNS.len())
        );
        let mut arguments = AnyArguments::default();
        for entry in chunk {
            bind(&mut arguments, entry.chain_id.clone())?;
            bind(&mut arguments, entry.sequence)?;
            bind(&mut arguments, entry.time_ms)?;
            bind(&mut arguments, entry.message_id.clone())?;
            bind(&mut arguments, entry.correlation_id.clone())?;
            bind(&mut arguments, entry.sender.clone())?;
            bind(&mut arguments, entry.user_id.clone())?;
            bind(&mut arguments, entry.service.clone())?;
            bind(&mut arguments, entry.method.clone())?;
            bind(&mut arguments, entry.purpose.clone())?;
            bind(&mut arguments, entry.subject_iin.clone())?;
            bind(&mut arguments, entry.request_hash.to_vec())?;
            bind(
                &mut arguments,
                entry.response_hash.map(|hash| hash.to_vec()),
            )?;
            bind(&mut arguments, i64::from(entry.status_code))?;
            bind(&mut arguments, entry.reason.clone())?;
            bind(&mut arguments, entry.duration_us)?;
            bind(&mut arguments, entry.channel.as_str().to_string())?;
            bind(&mut arguments, i64::from(entry.personal_data))?;
            bind(&mut arguments, entry.request_body.clone())?;
            bind(&mut arguments, entry.response_body.clone())?;
            bind(&mut arguments, entry.previous_hash.to_vec())?;
            bind(&mut arguments, entry.entry_hash.to_vec())?;
        }
        sqlx::query_with(&sql, arguments)
            .execute(&mut *transaction)
            .await?;
    }
    let accesses: Vec<(&StoredEntry, &str)> = entries
        .iter()
        .flat_map(|entry| {
            entry
                .accessed_subjects()
                .into_iter()
                .map(move |subject| (entry, subject))
        })
        .collect();
    for chunk in statement_chunks(&accesses) {
        let sql = format!(
            "INSERT INTO subject_access ({}) VALUES {}",
            SUBJECT_ACCESS_COLUMNS.join(", "),
            values_clause(
                database.dialect(),
                chunk.len(),
                SUBJECT_ACCESS_COLUMNS.len()
            )
        );
        let mut arguments = AnyArguments::default();
        for (entry, subject) in chunk {
            bind(&mut arguments, entry.chain_id.clone())?;
            bind(&mut arguments, entry.sequence)?;
            bind(&mut arguments, entry.time_ms)?;
            bind(&mut arguments, subject.to_string())?;
            bind(&mut arguments, entry.sender.clone())?;
            bind(&mut arguments, entry.user_id.clone())?;
            bind(&mut arguments, entry.service.clone())?;
            bind(&mut arguments, entry.method.clone())?;
            bind(&mut arguments, entry.purpose.clone())?;
            bind(&mut arguments, entry.message_id.clone())?;
            bind(&mut arguments, i64::from(entry.status_code))?;
            bind(&mut arguments, i64::from(entry.personal_data))?;
        }
        sqlx::query_with(&sql, arguments)
            .execute(&mut *transaction)
            .await?;
    }
    if let Some(checkpoint) = checkpoint {
        insert_checkpoint(&mut transaction, checkpoint).await?;
    }
    transaction.commit().await?;
    Ok(Appended::Written)
}

/// Writes one checkpoint on its own (its chain's heartbeat refreshed to `now_ms`), unless the
/// chain was closed.
pub async fn write_checkpoint(
    database: &Database,
    now_ms: i64,
    checkpoint: &StoredCheckpoint,
) -> Result<Appended, sqlx::Error> {
    let mut transaction = database.pool().begin().await?;
    if !refresh_open_chain(&mut transaction, &checkpoint.chain_id, now_ms).await? {
        transaction.rollback().await?;
        return Ok(Appended::ChainClosed);
    }
    insert_checkpoint(&mut transaction, checkpoint).await?;
    transaction.commit().await?;
    Ok(Appended::Written)
}

/// Refreshes the heartbeat of the open chain `chain_id`; whether it is still open.
pub async fn heartbeat(
    database: &Database,
    chain_id: &str,
    now_ms: i64,
) -> Result<bool, sqlx::Error> {
    let mut transaction = database.pool().begin().await?;
    let open = refresh_open_chain(&mut transaction, chain_id, now_ms).await?;
    transaction.commit().await?;
    Ok(open)
}

/// A chain's record (table `message_log_chains`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainRecord {
    /// The chain.
    pub chain_id: String,
    /// When its writer started, epoch milliseconds.
    pub started_ms: i64,
    /// When its writer last showed it was alive, epoch milliseconds.
    pub heartbeat_ms: i64,
    /// When it was closed; `None` while open.
    pub closed_ms: Option<i64>,
    /// Its last entry at the closure (0: none).
    pub closed_sequence: Option<i64>,
    /// `shutdown`, or the chain of the run whose start closed it.
    pub closed_by: String,
    /// The chain it links to, empty for none.
    pub previous_chain_id: String,
    /// That chain's closing sequence (0: it had no entry).
    pub previous_sequence: i64,
    /// That entry's hash, empty when none.
    pub previous_entry_hash: Vec<u8>,
    /// Ed25519 signature of [`super::record::chain_link_message`].
    pub link_signature: Vec<u8>,
    /// Lowercase hex of the signer's raw public key.
    pub signer_public_key: String,
    /// What the link signs of the legacy chains: [`legacy_chains_digest`] at the chain's start.
    pub legacy_chains_digest: Vec<u8>,
    /// Written before chains had records (migration 0007): no link.
    pub legacy: bool,
}

/// Stores the record of a new, open chain.
pub async fn insert_chain(database: &Database, chain: &ChainRecord) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO message_log_chains (chain_id, started_ms, heartbeat_ms, closed_ms, closed_sequence, \
         closed_by, previous_chain_id, previous_sequence, previous_entry_hash, link_signature, \
         signer_public_key, legacy_chains_digest, legacy) \
         VALUES ($1, $2, $3, NULL, NULL, '', $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(chain.chain_id.clone())
    .bind(chain.started_ms)
    .bind(chain.heartbeat_ms)
    .bind(chain.previous_chain_id.clone())
    .bind(chain.previous_sequence)
    .bind(chain.previous_entry_hash.clone())
    .bind(chain.link_signature.clone())
    .bind(chain.signer_public_key.clone())
    .bind(chain.legacy_chains_digest.clone())
    .bind(i64::from(chain.legacy))
    .execute(database.pool())
    .await?;
    Ok(())
}

const SELECT_CHAIN: &str = "SELECT chain_id, started_ms, heartbeat_ms, closed_ms, closed_sequence, closed_by, \
     previous_chain_id, previous_sequence, previous_entry_hash, link_signature, signer_public_key, \
     legacy_chains_digest, legacy FROM message_log_chains";

fn chain_from_row(row: &AnyRow) -> Result<ChainRecord, sqlx::Error> {
    let legacy: i64 = row.try_get("legacy")?;
    Ok(ChainRecord {
        chain_id: row.try_get("chain_id")?,
        started_ms: row.try_get("started_ms")?,
        heartbeat_ms: row.try_get("heartbeat_ms")?,
        closed_ms: row.try_get("closed_ms")?,
        closed_sequence: row.try_get("closed_sequence")?,
        closed_by: row.try_get("closed_by")?,
        previous_chain_id: row.try_get("previous_chain_id")?,
        previous_sequence: row.try_get("previous_sequence")?,
        previous_entry_hash: row.try_get("previous_entry_hash")?,
        link_signature: row.try_get("link_signature")?,
        signer_public_key: row.try_get("signer_public_key")?,
        legacy_chains_digest: row.try_get("legacy_chains_digest")?,
        legacy: legacy != 0,
    })
}

/// The record of `chain_id`, `None` when it has none.
pub async fn chain_record(
    database: &Database,
    chain_id: &str,
) -> Result<Option<ChainRecord>, sqlx::Error> {
    let row = sqlx::query(&format!("{SELECT_CHAIN} WHERE chain_id = $1"))
        .bind(chain_id.to_string())
        .fetch_optional(database.pool())
        .await?;
    row.as_ref().map(chain_from_row).transpose()
}

/// SHA-256 of the ids of the chains written before chains had records (migration 0007), sorted
/// and joined by `\n`: every link signs it, so such a chain cannot be added or removed unnoticed.
pub async fn legacy_chains_digest(database: &Database) -> Result<Vec<u8>, sqlx::Error> {
    let rows =
        sqlx::query("SELECT chain_id FROM message_log_chains WHERE legacy = 1 ORDER BY chain_id")
            .fetch_all(database.pool())
            .await?;
    let ids: Vec<String> = rows
        .iter()
        .map(|row| row.try_get("chain_id"))
        .collect::<Result<_, _>>()?;
    Ok(super::record::sha256(ids.join("\n").as_bytes()).to_vec())
}

/// The chain closed last (by closure time, then chain id), `None` when no chain is closed.
pub async fn newest_closed_chain(database: &Database) -> Result<Option<ChainRecord>, sqlx::Error> {
    let row = sqlx::query(&format!(
        "{SELECT_CHAIN} WHERE closed_ms IS NOT NULL ORDER BY closed_ms DESC, chain_id DESC LIMIT 1"
    ))
    .fetch_optional(database.pool())
    .await?;
    row.as_ref().map(chain_from_row).transpose()
}

/// The open chains whose heartbeat is older than `cutoff_ms`, oldest first.
pub async fn stale_chains(database: &Database, cutoff_ms: i64) -> Result<Vec<String>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT chain_id FROM message_log_chains WHERE closed_ms IS NULL AND heartbeat_ms < $1 \
         ORDER BY chain_id",
    )
    .bind(cutoff_ms)
    .fetch_all(database.pool())
    .await?;
    rows.iter().map(|row| row.try_get("chain_id")).collect()
}

/// Closes `chain_id` if it is still open with a heartbeat older than `cutoff_ms` (its writer is
/// gone): in one transaction, takes its record (so its writer, if it comes back, finds it closed
/// and writes nothing more to it), reads its last entry and signs it with `sign` when no
/// checkpoint signs it yet. Whether this call closed it.
pub async fn close_stale_chain(
    database: &Database,
    chain_id: &str,
    cutoff_ms: i64,
    now_ms: i64,
    closed_by: &str,
    sign: &(dyn Fn(&str, i64, &[u8]) -> StoredCheckpoint + Send + Sync),
) -> Result<bool, sqlx::Error> {
    let mut transaction = database.pool().begin().await?;
    let taken = sqlx::query(
        "UPDATE message_log_chains SET closed_ms = $1, closed_by = $2 \
         WHERE chain_id = $3 AND closed_ms IS NULL AND heartbeat_ms < $4",
    )
    .bind(now_ms)
    .bind(closed_by.to_string())
    .bind(chain_id.to_string())
    .bind(cutoff_ms)
    .execute(&mut *transaction)
    .await?;
    if taken.rows_affected() != 1 {
        transaction.rollback().await?;
        return Ok(false);
    }
    let head = sqlx::query(
        "SELECT sequence, entry_hash FROM message_log_entries WHERE chain_id = $1 ORDER BY sequence DESC LIMIT 1",
    )
    .bind(chain_id.to_string())
    .fetch_optional(&mut *transaction)
    .await?;
    let closed_sequence = match head {
        None => 0,
        Some(head) => {
            let sequence: i64 = head.try_get("sequence")?;
            let entry_hash: Vec<u8> = head.try_get("entry_hash")?;
            let signed = sqlx::query(
                "SELECT sequence FROM message_log_checkpoints WHERE chain_id = $1 AND sequence = $2",
            )
            .bind(chain_id.to_string())
            .bind(sequence)
            .fetch_optional(&mut *transaction)
            .await?;
            if signed.is_none() {
                insert_checkpoint(&mut transaction, &sign(chain_id, sequence, &entry_hash)).await?;
            }
            sequence
        }
    };
    sqlx::query("UPDATE message_log_chains SET closed_sequence = $1 WHERE chain_id = $2")
        .bind(closed_sequence)
        .bind(chain_id.to_string())
        .execute(&mut *transaction)
        .await?;
    transaction.commit().await?;
    Ok(true)
}

/// Closes the writer's own chain `chain_id` at `closed_sequence` (its shutdown), with
/// `checkpoint` (signing that entry) when it is not signed yet. Whether the chain was still open.
pub async fn close_own_chain(
    database: &Database,
    chain_id: &str,
    now_ms: i64,
    closed_sequence: i64,
    checkpoint: Option<&StoredCheckpoint>,
) -> Result<bool, sqlx::Error> {
    let mut transaction = database.pool().begin().await?;
    let closed = sqlx::query(
        "UPDATE message_log_chains SET heartbeat_ms = $1, closed_ms = $1, closed_sequence = $2, \
         closed_by = 'shutdown' WHERE chain_id = $3 AND closed_ms IS NULL",
    )
    .bind(now_ms)
    .bind(closed_sequence)
    .bind(chain_id.to_string())
    .execute(&mut *transaction)
    .await?;
    if closed.rows_affected() != 1 {
        transaction.rollback().await?;
        return Ok(false);
    }
    if let Some(checkpoint) = checkpoint {
        insert_checkpoint(&mut transaction, checkpoint).await?;
    }
    transaction.commit().await?;
    Ok(true)
}

/// The checkpoint of `chain_id` at `sequence`, if any.
pub async fn checkpoint_at(
    database: &Database,
    chain_id: &str,
    sequence: i64,
) -> Result<Option<StoredCheckpoint>, sqlx::Error> {
    let mut found = checkpoints_after(database, chain_id, sequence - 1, 1).await?;
    Ok(found
        .pop()
        .filter(|checkpoint| checkpoint.sequence == sequence))
}

async fn insert_checkpoint(
    transaction: &mut sqlx::Transaction<'_, sqlx::Any>,
    checkpoint: &StoredCheckpoint,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO message_log_checkpoints (chain_id, sequence, entry_hash, time_ms, signature, signer_public_key) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(checkpoint.chain_id.clone())
    .bind(checkpoint.sequence)
    .bind(checkpoint.entry_hash.clone())
    .bind(checkpoint.time_ms)
    .bind(checkpoint.signature.clone())
    .bind(checkpoint.signer_public_key.clone())
    .execute(&mut **transaction)
    .await?;
    Ok(())
}

/// The last entry of `chain_id` as (sequence, entry hash), `None` for an empty chain.
pub async fn chain_head(
    database: &Database,
    chain_id: &str,
) -> Result<Option<(i64, Vec<u8>)>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT sequence, entry_hash FROM message_log_entries WHERE chain_id = $1 ORDER BY sequence DESC LIMIT 1",
    )
    .bind(chain_id.to_string())
    .fetch_optional(database.pool())
    .await?;
    row.map(|row| Ok((row.try_get("sequence")?, row.try_get("entry_hash")?)))
        .transpose()
}

/// The sequence of the last checkpoint of `chain_id`, 0 when it has none.
pub async fn last_checkpoint_sequence(
    database: &Database,
    chain_id: &str,
) -> Result<i64, sqlx::Error> {
    let row = sqlx::query(
        "SELECT sequence FROM message_log_checkpoints WHERE chain_id = $1 ORDER BY sequence DESC LIMIT 1",
    )
    .bind(chain_id.to_string())
    .fetch_optional(database.pool())
    .await?;
    row.map(|row| row.try_get("sequence"))
        .transpose()
        .map(Option::unwrap_or_default)
}

const SELECT_ENTRY: &str = "SELECT chain_id, sequence, time_ms, message_id, correlation_id, sender, user_id, service, \
     method, purpose, subject_iin, request_hash, response_hash, status_code, reason, duration_us, channel, \
     personal_data, request_body, response_body, previous_hash, entry_hash FROM message_log_entries";

/// The columns of [`SELECT_ENTRY`] of the entries table aliased `e`.
const ENTRY_SELECT_COLUMNS: &str = "e.chain_id, e.sequence, e.time_ms, e.message_id, e.correlation_id, e.sender, \
     e.user_id, e.service, e.method, e.purpose, e.subject_iin, e.request_hash, e.response_hash, e.status_code, \
     e.reason, e.duration_us, e.channel, e.personal_data, e.request_body, e.response_body, e.previous_hash, \
     e.entry_hash";

fn hash_column(row: &AnyRow, column: &str) -> Result<[u8; HASH_LEN], sqlx::Error> {
    let bytes: Vec<u8> = row.try_get(column)?;
    bytes
        .try_into()
        .map_err(|bytes: Vec<u8>| sqlx::Error::ColumnDecode {
            index: column.to_string(),
            source: format!(
                "expected a {HASH_LEN}-byte hash, found {} bytes",
                bytes.len()
            )
            .into(),
        })
}

fn optional_hash_column(row: &AnyRow, column: &str) -> Result<Option<[u8; HASH_LEN]>, sqlx::Error> {
    let bytes: Option<Vec<u8>> = row.try_get(column)?;
    match bytes {
        None => Ok(None),
        Some(_) => hash_column(row, column).map(Some),
    }
}

/// Decodes one `SELECT_ENTRY` row.
pub fn entry_from_row(row: &AnyRow) -> Result<StoredEntry, sqlx::Error> {
    let channel_text: String = row.try_get("channel")?;
    let channel = Channel::parse(&channel_text).ok_or_else(|| sqlx::Error::ColumnDecode {
        index: "channel".to_string(),
        source: format!("unknown channel {channel_text:?}").into(),
    })?;
    let status_code: i64 = row.try_get("status_code")?;
    let personal_data: i64 = row.try_get("personal_data")?;
    Ok(StoredEntry {
        chain_id: row.try_get("chain_id")?,
        sequence: row.try_get("sequence")?,
        time_ms: row.try_get("time_ms")?,
        message_id: row.try_get("message_id")?,
        correlation_id: row.try_get("correlation_id")?,
        sender: row.try_get("sender")?,
        user_id: row.try_get("user_id")?,
        service: row.try_get("service")?,
        method: row.try_get("method")?,
        purpose: row.try_get("purpose")?,
        subject_iin: row.try_get("subject_iin")?,
        request_hash: hash_column(row, "request_hash")?,
        response_hash: optional_hash_column(row, "response_hash")?,
        status_code: i32::try_from(status_code).unwrap_or(i32::MAX),
        reason: row.try_get("reason")?,
        duration_us: row.try_get("duration_us")?,
        channel,
        personal_data: personal_data != 0,
        request_body: row.try_get("request_body")?,
        response_body: row.try_get("response_body")?,
        previous_hash: hash_column(row, "previous_hash")?,
        entry_hash: hash_column(row, "entry_hash")?,
    })
}

/// The entry of `sender`'s message `message_id`. A message id can have several entries (a refused
/// call retried, a replay refused); the answer is the latest entry that is not a replay refusal.
pub async fn entry_by_message(
    database: &Database,
    sender: &str,
    message_id: &str,
) -> Result<Option<StoredEntry>, sqlx::Error> {
    let sql = format!(
        "{SELECT_ENTRY} WHERE sender = $1 AND message_id = $2 \
         ORDER BY CASE WHEN reason = 'MESSAGE_REPLAYED' THEN 1 ELSE 0 END, time_ms DESC, sequence DESC LIMIT 1"
    );
    let row = sqlx::query(&sql)
        .bind(sender.to_string())
        .bind(message_id.to_string())
        .fetch_optional(database.pool())
        .await?;
    row.as_ref().map(entry_from_row).transpose()
}

/// Up to `limit` entries matching `filter`, newest first, strictly before `cursor`. A subject
/// filter reads the subject-access rows (one per person an entry names), so an entry naming
/// hundreds of persons is found by each of them.
pub async fn list_entries(
    database: &Database,
    filter: &EntryFilter,
    cursor: Option<&ListCursor>,
    limit: usize,
) -> Result<Vec<StoredEntry>, sqlx::Error> {
    let mut conditions: Vec<String> = Vec::new();
    let mut arguments = AnyArguments::default();
    let mut next_placeholder = 1;
    // With a subject filter the listing is driven by the subject's rows (alias a), whose
    // (time_ms, chain_id, sequence) equal their entry's.
    let (from, key) = if filter.subject_iin.is_empty() {
        ("message_log_entries e".to_string(), "e")
    } else {
        conditions.push(format!("a.subject_iin = ${next_placeholder}"));
        next_placeholder += 1;
        bind(&mut arguments, filter.subject_iin.clone())?;
        (
            "subject_access a JOIN message_log_entries e \
             ON e.chain_id = a.chain_id AND e.sequence = a.sequence"
                .to_string(),
            "a",
        )
    };
    let mut text_condition =
        |column: &str, value: &str, arguments: &mut AnyArguments<'_>| -> Result<(), sqlx::Error> {
            if !value.is_empty() {
                conditions.push(format!("e.{column} = ${next_placeholder}"));
                next_placeholder += 1;
                bind(arguments, value.to_string())?;
            }
            Ok(())
        };
    text_condition("sender", &filter.sender, &mut arguments)?;
    text_condition("service", &filter.service, &mut arguments)?;
    text_condition("method", &filter.method, &mut arguments)?;
    text_condition("correlation_id", &filter.correlation_id, &mut arguments)?;
    if filter.since_ms != 0 {
        conditions.push(format!("{key}.time_ms >= ${next_placeholder}"));
        next_placeholder += 1;
        bind(&mut arguments, filter.since_ms)?;
    }
    if filter.until_ms != 0 {
        conditions.push(format!("{key}.time_ms < ${next_placeholder}"));
        next_placeholder += 1;
        bind(&mut arguments, filter.until_ms)?;
    }
    if let Some(cursor) = cursor {
        conditions.push(format!(
            "({key}.time_ms, {key}.chain_id, {key}.sequence) < (${}, ${}, ${})",
            next_placeholder,
            next_placeholder + 1,
            next_placeholder + 2
        ));
        next_placeholder += 3;
        bind(&mut arguments, cursor.time_ms)?;
        bind(&mut arguments, cursor.chain_id.clone())?;
        bind(&mut arguments, cursor.sequence)?;
    }
    let where_clause = if conditions.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", conditions.join(" AND "))
    };
    let sql = format!(
        "SELECT {ENTRY_SELECT_COLUMNS} FROM {from}{where_clause} \
         ORDER BY {key}.time_ms DESC, {key}.chain_id DESC, {key}.sequence DESC LIMIT ${next_placeholder}"
    );
    bind(&mut arguments, i64::try_from(limit).unwrap_or(i64::MAX))?;
    let rows = sqlx::query_with(&sql, arguments)
        .fetch_all(database.pool())
        .await?;
    rows.iter().map(entry_from_row).collect()
}

/// Up to `limit` accesses to `subject_iin`'s personal data, newest first, strictly before `cursor`.
pub async fn list_subject_access(
    database: &Database,
    subject_iin: &str,
    cursor: Option<&ListCursor>,
    limit: usize,
) -> Result<Vec<SubjectAccessRow>, sqlx::Error> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let columns = "chain_id, sequence, time_ms, participant_id, user_id, service, method, purpose, message_id, status_code";
    let rows =
        match cursor {
            None => sqlx::query(&format!(
                "SELECT {columns} FROM subject_access WHERE subject_iin = $1 AND personal_data = 1 \
                 ORDER BY time_ms DESC, chain_id DESC, sequence DESC LIMIT $2"
            ))
            .bind(subject_iin.to_string())
            .bind(limit)
            .fetch_all(database.pool())
            .await?,
            Some(cursor) => sqlx::query(&format!(
                "SELECT {columns} FROM subject_access WHERE subject_iin = $1 AND personal_data = 1 \
                 AND (time_ms, chain_id, sequence) < ($2, $3, $4) \
                 ORDER BY time_ms DESC, chain_id DESC, sequence DESC LIMIT $5"
            ))
            .bind(subject_iin.to_string())
            .bind(cursor.time_ms)
            .bind(cursor.chain_id.clone())
            .bind(cursor.sequence)
            .bind(limit)
            .fetch_all(database.pool())
            .await?,
        };
    rows.iter().map(subject_access_row).collect()
}

/// A `subject_access` row as the access log shows it.
fn subject_access_row(row: &AnyRow) -> Result<SubjectAccessRow, sqlx::Error> {
    Ok(SubjectAccessRow {
        chain_id: row.try_get("chain_id")?,
        sequence: row.try_get("sequence")?,
        time_ms: row.try_get("time_ms")?,
        participant_id: row.try_get("participant_id")?,
        user_id: row.try_get("user_id")?,
        service: row.try_get("service")?,
        method: row.try_get("method")?,
        purpose: row.try_get("purpose")?,
        message_id: row.try_get("message_id")?,
        status_code: row.try_get("status_code")?,
    })
}

/// Every chain id, oldest first (chain ids are time-ordered UUIDs): of entries, checkpoints,
/// subject-access rows and chain records, so rows left of a deleted chain are found too.
pub async fn chain_ids(database: &Database) -> Result<Vec<String>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT chain_id FROM message_log_entries GROUP BY chain_id \
         UNION SELECT chain_id FROM message_log_checkpoints GROUP BY chain_id \
         UNION SELECT chain_id FROM subject_access GROUP BY chain_id \
         UNION SELECT chain_id FROM message_log_chains ORDER BY chain_id",
    )
    .fetch_all(database.pool())
    .await?;
    rows.iter().map(|row| row.try_get("chain_id")).collect()
}

/// Up to `limit` rows of `chain_id` after `after_sequence`, in chain order.
pub async fn chain_rows(
    database: &Database,
    chain_id: &str,
    after_sequence: i64,
    limit: i64,
) -> Result<Vec<AnyRow>, sqlx::Error> {
    sqlx::query(&format!(
        "{SELECT_ENTRY} WHERE chain_id = $1 AND sequence > $2 ORDER BY sequence LIMIT $3"
    ))
    .bind(chain_id.to_string())
    .bind(after_sequence)
    .bind(limit)
    .fetch_all(database.pool())
    .await
}

/// One stored subject-access row with the entry it claims, for verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSubjectAccess {
    /// The entry it names.
    pub sequence: i64,
    /// The person.
    pub subject_iin: String,
    /// Everything else the row says, as the entry must say it.
    pub row: SubjectAccessRow,
    /// Whether the row belongs to the access log.
    pub personal_data: bool,
}

/// The subject-access rows of `chain_id` with sequence in `after_sequence + 1 ..= up_to`
/// (`None`: to the end), in chain order, then by subject.
pub async fn chain_subject_rows(
    database: &Database,
    chain_id: &str,
    after_sequence: i64,
    up_to: Option<i64>,
) -> Result<Vec<StoredSubjectAccess>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT chain_id, sequence, time_ms, subject_iin, participant_id, user_id, service, method, purpose, \
         message_id, status_code, personal_data FROM subject_access \
         WHERE chain_id = $1 AND sequence > $2 AND sequence <= $3 ORDER BY sequence, subject_iin",
    )
    .bind(chain_id.to_string())
    .bind(after_sequence)
    .bind(up_to.unwrap_or(i64::MAX))
    .fetch_all(database.pool())
    .await?;
    rows.iter()
        .map(|row| {
            let personal_data: i64 = row.try_get("personal_data")?;
            Ok(StoredSubjectAccess {
                sequence: row.try_get("sequence")?,
                subject_iin: row.try_get("subject_iin")?,
                personal_data: personal_data != 0,
                row: subject_access_row(row)?,
            })
        })
        .collect()
}

/// Every checkpoint of `chain_id`, in chain order.
pub async fn checkpoints(
    database: &Database,
    chain_id: &str,
) -> Result<Vec<StoredCheckpoint>, sqlx::Error> {
    checkpoints_after(database, chain_id, 0, i64::MAX).await
}

/// Up to `limit` checkpoints of `chain_id` after `after_sequence`, in chain order.
pub async fn checkpoints_after(
    database: &Database,
    chain_id: &str,
    after_sequence: i64,
    limit: i64,
) -> Result<Vec<StoredCheckpoint>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT chain_id, sequence, entry_hash, time_ms, signature, signer_public_key \
         FROM message_log_checkpoints WHERE chain_id = $1 AND sequence > $2 ORDER BY sequence LIMIT $3",
    )
    .bind(chain_id.to_string())
    .bind(after_sequence)
    .bind(limit)
    .fetch_all(database.pool())
    .await?;
    rows.iter()
        .map(|row| {
            Ok(StoredCheckpoint {
                chain_id: row.try_get("chain_id")?,
                sequence: row.try_get("sequence")?,
                entry_hash: row.try_get("entry_hash")?,
                time_ms: row.try_get("time_ms")?,
                signature: row.try_get("signature")?,
                signer_public_key: row.try_get("signer_public_key")?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_split_into_few_statement_sizes() {
        let items: Vec<usize> = (0..41).collect();
        let sizes: Vec<usize> = statement_chunks(&items)
            .iter()
            .map(|chunk| chunk.len())
            .collect();
        assert_eq!(sizes, vec![16, 16, 4, 4, 1]);
        let rejoined: Vec<usize> = statement_chunks(&items).concat();
        assert_eq!(rejoined, items);
    }

    #[test]
    fn cursor_round_trips_and_refuses_garbage() {
        let cursor = ListCursor::after(
            1_700_000_000_123,
            "0191f5a0-3c1e-7b3a-9a52-5d0b5e0f6c11",
            42,
        );
        assert_eq!(ListCursor::decode(&cursor.encode()), Some(cursor));
        for garbage in ["", "1|x", "a|x|1", "1|x|b", "1||2", "1|x|2|3"] {
            assert_eq!(ListCursor::decode(garbage), None, "{garbage}");
        }
    }
}
