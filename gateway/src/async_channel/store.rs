//! The async channel's SQL: the durable queue (`async_messages`) and the inboxes (`async_inbox`).
//! Portable SQL except the claim of due messages, where PostgreSQL adds `FOR UPDATE SKIP LOCKED`
//! so that several gateway replicas share the queue without waiting on each other's rows.

use shlyuz_kit::db::{Database, Dialect};
use sqlx::Row;
use sqlx::any::AnyRow;

/// Delivery states as stored.
pub const ON_DELIVERY: &str = "ON_DELIVERY";
/// The target answered OK or the recipient acknowledged.
pub const DELIVERED: &str = "DELIVERED";
/// The target answered with a permanent error.
pub const NOT_DELIVERED: &str = "NOT_DELIVERED";
/// Expired before delivery.
pub const DELIVERY_STOPPED: &str = "DELIVERY_STOPPED";

/// Inbox item kinds as stored.
pub const KIND_MESSAGE: &str = "MESSAGE";
/// The outcome of a sent message.
pub const KIND_RESULT: &str = "RESULT";

/// One message as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageRow {
    /// Row id (UUID).
    pub id: String,
    /// Sending participant.
    pub sender: String,
    /// Envelope message id.
    pub message_id: String,
    /// Envelope correlation id.
    pub correlation_id: String,
    /// Envelope user id.
    pub user_id: String,
    /// Envelope purpose.
    pub purpose: String,
    /// Envelope subject IIN(s).
    pub subject_iin: String,
    /// Envelope consent id.
    pub consent_id: String,
    /// Target service (empty for recipient messages).
    pub service: String,
    /// Target method (empty for recipient messages).
    pub method: String,
    /// Recipient participant (empty for service messages).
    pub recipient: String,
    /// Who receives the outcome.
    pub reply_to: String,
    /// The serialized message.
    pub payload: Vec<u8>,
    /// Its protobuf type, for recipients.
    pub payload_type: String,
    /// The target route carries personal data.
    pub personal_data: bool,
    /// One of the states above.
    pub state: String,
    /// Attempts so far.
    pub attempts: i64,
    /// Accepted at, epoch ms.
    pub accepted_ms: i64,
    /// Expires at, epoch ms.
    pub expires_ms: i64,
    /// Next attempt not before, epoch ms.
    pub next_attempt_ms: i64,
    /// Final state reached at, epoch ms (0 while on delivery).
    pub finished_ms: i64,
    /// gRPC code of the final answer.
    pub response_code: i64,
    /// Status message of the final answer.
    pub response_message: String,
    /// Response message on success.
    pub response_payload: Option<Vec<u8>>,
    /// The last failure.
    pub last_error: String,
    /// The `ErrorInfo`-style reason of a final state other than DELIVERED (`MESSAGE_EXPIRED`,
    /// `SENDER_NOT_REGISTERED`, `CONSENT_REQUIRED`, …); empty otherwise.
    pub reason: String,
}

const MESSAGE_COLUMNS: &str = "id, sender, message_id, correlation_id, user_id, purpose, subject_iin, consent_id, \
     service, method, recipient, reply_to, payload, payload_type, personal_data, state, attempts, accepted_ms, \
     expires_ms, next_attempt_ms, finished_ms, response_code, response_message, response_payload, last_error, reason";

fn message_from_row(row: &AnyRow) -> Result<MessageRow, sqlx::Error> {
    let personal_data: i64 = row.try_get("personal_data")?;
    Ok(MessageRow {
        id: row.try_get("id")?,
        sender: row.try_get("sender")?,
        message_id: row.try_get("message_id")?,
        correlation_id: row.try_get("correlation_id")?,
        user_id: row.try_get("user_id")?,
        purpose: row.try_get("purpose")?,
        subject_iin: row.try_get("subject_iin")?,
        consent_id: row.try_get("consent_id")?,
        service: row.try_get("service")?,
        method: row.try_get("method")?,
        recipient: row.try_get("recipient")?,
        reply_to: row.try_get("reply_to")?,
        payload: row.try_get("payload")?,
        payload_type: row.try_get("payload_type")?,
        personal_data: personal_data != 0,
        state: row.try_get("state")?,
        attempts: row.try_get("attempts")?,
        accepted_ms: row.try_get("accepted_ms")?,
        expires_ms: row.try_get("expires_ms")?,
        next_attempt_ms: row.try_get("next_attempt_ms")?,
        finished_ms: row.try_get("finished_ms")?,
        response_code: row.try_get("response_code")?,
        response_message: row.try_get("response_message")?,
        response_payload: row.try_get("response_payload")?,
        last_error: row.try_get("last_error")?,
        reason: row.try_get("reason")?,
    })
}

/// The message `message_id` of `sender`.
pub async fn find(
    database: &Database,
    sender: &str,
    message_id: &str,
) -> Result<Option<MessageRow>, sqlx::Error> {
    let row = sqlx::query(&format!(
        "SELECT {MESSAGE_COLUMNS} FROM async_messages WHERE sender = $1 AND message_id = $2"
    ))
    .bind(sender.to_string())
    .bind(message_id.to_string())
    .fetch_optional(database.pool())
    .await?;
    row.as_ref().map(message_from_row).transpose()
}

/// Stores a new message (and, for a recipient, its inbox item). Returns the stored row and
/// whether the sender had already sent this message id (then nothing is written). One statement
/// (`ON CONFLICT DO NOTHING`) in the common case, so acceptance costs one round trip and commit.
pub async fn insert(
    database: &Database,
    message: &MessageRow,
) -> Result<(MessageRow, bool), sqlx::Error> {
    // A recipient message and its inbox item commit together; a service message is one row.
    let mut transaction = if message.recipient.is_empty() {
        None
    } else {
        Some(database.pool().begin().await?)
    };
    let sql = format!(
        "INSERT INTO async_messages ({MESSAGE_COLUMNS}) VALUES \
         ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24, $25, $26) \
         ON CONFLICT (sender, message_id) DO NOTHING RETURNING id"
    );
    let statement = sqlx::query(&sql)
        .bind(message.id.clone())
        .bind(message.sender.clone())
        .bind(message.message_id.clone())
        .bind(message.correlation_id.clone())
        .bind(message.user_id.clone())
        .bind(message.purpose.clone())
        .bind(message.subject_iin.clone())
        .bind(message.consent_id.clone())
        .bind(message.service.clone())
        .bind(message.method.clone())
        .bind(message.recipient.clone())
        .bind(message.reply_to.clone())
        .bind(message.payload.clone())
        .bind(message.payload_type.clone())
        .bind(i64::from(message.personal_data))
        .bind(message.state.clone())
        .bind(message.attempts)
        .bind(message.accepted_ms)
        .bind(message.expires_ms)
        .bind(message.next_attempt_ms)
        .bind(message.finished_ms)
        .bind(message.response_code)
        .bind(message.response_message.clone())
        .bind(message.response_payload.clone())
        .bind(message.last_error.clone())
        .bind(message.reason.clone());
    let inserted = match transaction.as_mut() {
        Some(transaction) => statement.fetch_optional(&mut **transaction).await?,
        None => statement.fetch_optional(database.pool()).await?,
    };
    if inserted.is_none() {
        if let Some(transaction) = transaction {
            transaction.rollback().await?;
        }
        return match find(database, &message.sender, &message.message_id).await? {
            Some(existing) => Ok((existing, true)),
            None => Err(sqlx::Error::RowNotFound),
        };
    }
    if let Some(mut transaction) = transaction {
        insert_inbox_item(
            &mut transaction,
            &message.recipient,
            KIND_MESSAGE,
            &message.id,
            message.accepted_ms,
        )
        .await?;
        transaction.commit().await?;
    }
    Ok((message.clone(), false))
}

async fn insert_inbox_item(
    transaction: &mut sqlx::Transaction<'_, sqlx::Any>,
    participant: &str,
    kind: &str,
    message_row_id: &str,
    created_ms: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO async_inbox (item_id, participant, kind, message_row_id, created_ms, acked) VALUES ($1, $2, $3, $4, $5, 0)",
    )
    .bind(uuid::Uuid::now_v7().to_string())
    .bind(participant.to_string())
    .bind(kind.to_string())
    .bind(message_row_id.to_string())
    .bind(created_ms)
    .execute(&mut **transaction)
    .await?;
    Ok(())
}

/// How long a claim holds, per target service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimLeases {
    /// `(service, claim until epoch ms)` of every routed service.
    pub by_service: Vec<(String, i64)>,
    /// The claim of a message whose service has no route (it is stopped at once).
    pub otherwise_until_ms: i64,
}

/// Claims up to `limit` due service-target messages for `owner`, each until the lease of its own
/// service, counting the attempt. A message is due when it is on delivery, its next attempt has
/// come, it has not expired, and nobody holds an unexpired claim on it.
pub async fn claim_due(
    database: &Database,
    owner: &str,
    now_ms: i64,
    leases: &ClaimLeases,
    limit: i64,
) -> Result<Vec<MessageRow>, sqlx::Error> {
    let lock = match database.dialect() {
        Dialect::Postgres => " FOR UPDATE SKIP LOCKED",
        Dialect::Sqlite => "",
    };
    // One statement whatever the routes: `CASE service WHEN $5 THEN $6 … ELSE $2 END`.
    let cases: String = (0..leases.by_service.len())
        .map(|index| format!(" WHEN ${} THEN ${}", 5 + 2 * index, 6 + 2 * index))
        .collect();
    let lease_until = if cases.is_empty() {
        "$2".to_string()
    } else {
        format!("CASE service{cases} ELSE $2 END")
    };
    let sql = format!(
        "UPDATE async_messages SET lease_owner = $1, lease_until_ms = {lease_until}, attempts = attempts + 1 \
         WHERE id IN (SELECT id FROM async_messages \
             WHERE state = 'ON_DELIVERY' AND recipient = '' AND next_attempt_ms <= $3 \
             AND expires_ms > $3 AND lease_until_ms <= $3 \
             ORDER BY next_attempt_ms LIMIT $4{lock}) \
         RETURNING {MESSAGE_COLUMNS}"
    );
    let mut statement = sqlx::query(&sql)
        .bind(owner.to_string())
        .bind(leases.otherwise_until_ms)
        .bind(now_ms)
        .bind(limit);
    for (service, until_ms) in &leases.by_service {
        statement = statement.bind(service.clone()).bind(*until_ms);
    }
    let rows = statement.fetch_all(database.pool()).await?;
    rows.iter().map(message_from_row).collect()
}

/// Extends `owner`'s claim on a message it is still delivering; `false` when the claim is lost.
pub async fn extend_claim(
    database: &Database,
    id: &str,
    owner: &str,
    lease_until_ms: i64,
) -> Result<bool, sqlx::Error> {
    let updated = sqlx::query(
        "UPDATE async_messages SET lease_until_ms = $1 \
         WHERE id = $2 AND lease_owner = $3 AND state = 'ON_DELIVERY'",
    )
    .bind(lease_until_ms)
    .bind(id.to_string())
    .bind(owner.to_string())
    .execute(database.pool())
    .await?
    .rows_affected();
    Ok(updated > 0)
}

/// Puts a claimed message back for another attempt at `next_attempt_ms`.
pub async fn reschedule(
    database: &Database,
    id: &str,
    owner: &str,
    next_attempt_ms: i64,
    last_error: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE async_messages SET next_attempt_ms = $1, last_error = $2, lease_owner = '', lease_until_ms = 0 \
         WHERE id = $3 AND lease_owner = $4 AND state = 'ON_DELIVERY'",
    )
    .bind(next_attempt_ms)
    .bind(last_error.to_string())
    .bind(id.to_string())
    .bind(owner.to_string())
    .execute(database.pool())
    .await?;
    Ok(())
}

/// The final answer of a delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finish {
    /// DELIVERED, NOT_DELIVERED or DELIVERY_STOPPED.
    pub state: &'static str,
    /// When, epoch ms.
    pub finished_ms: i64,
    /// gRPC code of the answer.
    pub response_code: i64,
    /// Its status message.
    pub response_message: String,
    /// The response on success.
    pub response_payload: Option<Vec<u8>>,
    /// Why, for a final state other than DELIVERED (an `ErrorInfo` reason).
    pub reason: String,
    /// Keep the sent payload (`gateway.store_bodies`); otherwise it is cleared now.
    pub keep_payload: bool,
}

/// Records the final state of a message `owner` holds and puts its outcome into the `reply_to`
/// inbox, in one transaction. `false` when the claim was lost (another instance took over).
pub async fn finish(
    database: &Database,
    message: &MessageRow,
    owner: &str,
    finish: &Finish,
) -> Result<bool, sqlx::Error> {
    let mut transaction = database.pool().begin().await?;
    let clear_payload = if finish.keep_payload {
        ""
    } else {
        ", payload = $9"
    };
    let sql = format!(
        "UPDATE async_messages SET state = $1, finished_ms = $2, response_code = $3, response_message = $4, \
         response_payload = $5, reason = $8, lease_owner = '', lease_until_ms = 0{clear_payload} \
         WHERE id = $6 AND lease_owner = $7 AND state = 'ON_DELIVERY'"
    );
    let mut statement = sqlx::query(&sql)
        .bind(finish.state.to_string())
        .bind(finish.finished_ms)
        .bind(finish.response_code)
        .bind(finish.response_message.clone())
        .bind(finish.response_payload.clone())
        .bind(message.id.clone())
        .bind(owner.to_string())
        .bind(finish.reason.clone());
    if !finish.keep_payload {
        statement = statement.bind(Vec::<u8>::new());
    }
    let updated = statement.execute(&mut *transaction).await?.rows_affected();
    if updated == 0 {
        transaction.rollback().await?;
        return Ok(false);
    }
    if message.recipient.is_empty() {
        insert_inbox_item(
            &mut transaction,
            &message.reply_to,
            KIND_RESULT,
            &message.id,
            finish.finished_ms,
        )
        .await?;
    }
    transaction.commit().await?;
    Ok(true)
}

/// Ends every expired message that nobody is delivering now as DELIVERY_STOPPED (with its
/// outcome in the reply-to inbox, or its unacknowledged inbox item withdrawn); returns them.
pub async fn stop_expired(
    database: &Database,
    owner: &str,
    now_ms: i64,
    limit: i64,
    keep_payload: bool,
) -> Result<Vec<MessageRow>, sqlx::Error> {
    // Claim them first, so that two instances never stop the same message twice.
    let lock = match database.dialect() {
        Dialect::Postgres => " FOR UPDATE SKIP LOCKED",
        Dialect::Sqlite => "",
    };
    let rows = sqlx::query(&format!(
        "UPDATE async_messages SET lease_owner = $1, lease_until_ms = $2 \
         WHERE id IN (SELECT id FROM async_messages WHERE state = 'ON_DELIVERY' AND expires_ms <= $3 \
             AND lease_until_ms <= $3 ORDER BY expires_ms LIMIT $4{lock}) \
         RETURNING {MESSAGE_COLUMNS}"
    ))
    .bind(owner.to_string())
    .bind(now_ms + 60_000)
    .bind(now_ms)
    .bind(limit)
    .fetch_all(database.pool())
    .await?;
    let claimed: Vec<MessageRow> = rows
        .iter()
        .map(message_from_row)
        .collect::<Result<_, _>>()?;
    let mut stopped = Vec::with_capacity(claimed.len());
    for message in claimed {
        let outcome = Finish {
            state: DELIVERY_STOPPED,
            finished_ms: now_ms,
            response_code: i64::from(tonic::Code::DeadlineExceeded as i32),
            response_message: if message.last_error.is_empty() {
                "the message expired before it was delivered".to_string()
            } else {
                format!(
                    "the message expired before it was delivered; last error: {}",
                    message.last_error
                )
            },
            response_payload: None,
            reason: "MESSAGE_EXPIRED".to_string(),
            keep_payload,
        };
        if finish(database, &message, owner, &outcome).await? {
            if !message.recipient.is_empty() {
                sqlx::query("UPDATE async_inbox SET acked = 1 WHERE message_row_id = $1 AND kind = 'MESSAGE'")
                    .bind(message.id.clone())
                    .execute(database.pool())
                    .await?;
            }
            stopped.push(message);
        }
    }
    Ok(stopped)
}

/// One inbox item with its message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboxRow {
    /// Item id.
    pub item_id: String,
    /// MESSAGE or RESULT.
    pub kind: String,
    /// Entered the inbox at, epoch ms.
    pub created_ms: i64,
    /// The message.
    pub message: MessageRow,
}

/// Up to `limit` unacknowledged items of `participant`, oldest first.
pub async fn pending_inbox(
    database: &Database,
    participant: &str,
    limit: i64,
) -> Result<Vec<InboxRow>, sqlx::Error> {
    let columns: String = MESSAGE_COLUMNS
        .split(',')
        .map(|column| format!("m.{}", column.trim()))
        .collect::<Vec<_>>()
        .join(", ");
    let rows = sqlx::query(&format!(
        "SELECT i.item_id, i.kind, i.created_ms, {columns} FROM async_inbox i \
         JOIN async_messages m ON m.id = i.message_row_id \
         WHERE i.participant = $1 AND i.acked = 0 ORDER BY i.created_ms, i.item_id LIMIT $2"
    ))
    .bind(participant.to_string())
    .bind(limit)
    .fetch_all(database.pool())
    .await?;
    rows.iter()
        .map(|row| {
            Ok(InboxRow {
                item_id: row.try_get("item_id")?,
                kind: row.try_get("kind")?,
                created_ms: row.try_get("created_ms")?,
                message: message_from_row(row)?,
            })
        })
        .collect()
}

/// The recipient messages that acknowledging `participant`'s `item_ids` would deliver (a pending
/// MESSAGE item whose message is still on delivery), so that their hand-over is logged before it
/// is recorded.
pub async fn deliverable_by_acknowledgement(
    database: &Database,
    participant: &str,
    item_ids: &[String],
) -> Result<Vec<MessageRow>, sqlx::Error> {
    if item_ids.is_empty() {
        return Ok(Vec::new());
    }
    let columns: String = MESSAGE_COLUMNS
        .split(',')
        .map(|column| format!("m.{}", column.trim()))
        .collect::<Vec<_>>()
        .join(", ");
    let placeholders: Vec<String> = (0..item_ids.len())
        .map(|index| format!("${}", index + 2))
        .collect();
    let sql = format!(
        "SELECT {columns} FROM async_inbox i JOIN async_messages m ON m.id = i.message_row_id \
         WHERE i.participant = $1 AND i.acked = 0 AND i.kind = 'MESSAGE' AND m.state = 'ON_DELIVERY' \
         AND i.item_id IN ({})",
        placeholders.join(", ")
    );
    let mut statement = sqlx::query(&sql).bind(participant.to_string());
    for item_id in item_ids {
        statement = statement.bind(item_id.clone());
    }
    let rows = statement.fetch_all(database.pool()).await?;
    rows.iter().map(message_from_row).collect()
}

/// Acknowledges `participant`'s items; a MESSAGE item acknowledged ends its message DELIVERED.
/// Without `keep_payloads` (`gateway.store_bodies` off) the payload of a message delivered so,
/// and the response of a RESULT acknowledged, are cleared in the same transaction.
/// Returns the messages delivered by this acknowledgement and how many items were acknowledged.
pub async fn acknowledge(
    database: &Database,
    participant: &str,
    item_ids: &[String],
    now_ms: i64,
    keep_payloads: bool,
) -> Result<(usize, Vec<MessageRow>), sqlx::Error> {
    let mut transaction = database.pool().begin().await?;
    let mut acknowledged = 0;
    let mut delivered = Vec::new();
    for item_id in item_ids {
        let row = sqlx::query(
            "UPDATE async_inbox SET acked = 1 WHERE item_id = $1 AND participant = $2 AND acked = 0 \
             RETURNING kind, message_row_id",
        )
        .bind(item_id.clone())
        .bind(participant.to_string())
        .fetch_optional(&mut *transaction)
        .await?;
        let Some(row) = row else { continue };
        acknowledged += 1;
        let kind: String = row.try_get("kind")?;
        let message_row_id: String = row.try_get("message_row_id")?;
        if kind == KIND_MESSAGE {
            let updated = sqlx::query(&format!(
                "UPDATE async_messages SET state = 'DELIVERED', finished_ms = $1, attempts = attempts + 1 \
                 WHERE id = $2 AND state = 'ON_DELIVERY' RETURNING {MESSAGE_COLUMNS}"
            ))
            .bind(now_ms)
            .bind(message_row_id.clone())
            .fetch_optional(&mut *transaction)
            .await?;
            if let Some(updated) = updated {
                delivered.push(message_from_row(&updated)?);
            }
        }
        if !keep_payloads {
            sqlx::query(
                "UPDATE async_messages SET payload = $1, response_payload = NULL \
                 WHERE id = $2 AND state <> 'ON_DELIVERY'",
            )
            .bind(Vec::<u8>::new())
            .bind(message_row_id.clone())
            .execute(&mut *transaction)
            .await?;
        }
    }
    transaction.commit().await?;
    Ok((acknowledged, delivered))
}

/// Messages on delivery and the acceptance time of the oldest, for the queue metrics.
pub async fn queue_stats(database: &Database) -> Result<(i64, Option<i64>), sqlx::Error> {
    let row = sqlx::query("SELECT COUNT(*) AS depth, MIN(accepted_ms) AS oldest FROM async_messages WHERE state = 'ON_DELIVERY'")
        .fetch_one(database.pool())
        .await?;
    Ok((row.try_get("depth")?, row.try_get("oldest")?))
}

/// Deletes up to `limit` messages that reached their final state at or before `before_ms`, with
/// their inbox items (the retention of `gateway.async_retention_hours`); returns how many.
pub async fn delete_finished_before(
    database: &Database,
    before_ms: i64,
    limit: i64,
) -> Result<usize, sqlx::Error> {
    let ids: Vec<String> = sqlx::query(
        "SELECT id FROM async_messages WHERE finished_ms > 0 AND finished_ms <= $1 \
         AND state <> 'ON_DELIVERY' ORDER BY finished_ms LIMIT $2",
    )
    .bind(before_ms)
    .bind(limit)
    .fetch_all(database.pool())
    .await?
    .iter()
    .map(|row| row.try_get("id"))
    .collect::<Result<_, _>>()?;
    if ids.is_empty() {
        return Ok(0);
    }
    let placeholders: Vec<String> = (1..=ids.len()).map(|index| format!("${index}")).collect();
    let placeholders = placeholders.join(", ");
    let mut transaction = database.pool().begin().await?;
    for sql in [
        format!("DELETE FROM async_inbox WHERE message_row_id IN ({placeholders})"),
        format!("DELETE FROM async_messages WHERE id IN ({placeholders})"),
    ] {
        let mut statement = sqlx::query(&sql);
        for id in &ids {
            statement = statement.bind(id.clone());
        }
        statement.execute(&mut *transaction).await?;
    }
    transaction.commit().await?;
    Ok(ids.len())
}

/// What `sender` has in flight: its messages still on delivery and their payload bytes, for the
/// per-sender async quota.
pub async fn in_flight(database: &Database, sender: &str) -> Result<(i64, i64), sqlx::Error> {
    let row = sqlx::query(
        "SELECT COUNT(*) AS messages, COALESCE(SUM(LENGTH(payload)), 0) AS bytes \
         FROM async_messages WHERE sender = $1 AND state = 'ON_DELIVERY'",
    )
    .bind(sender.to_string())
    .fetch_one(database.pool())
    .await?;
    Ok((row.try_get("messages")?, row.try_get("bytes")?))
}

#[cfg(test)]
mod tests {
    use shlyuz_kit::db::{Database, Migrations};
    use sqlx::Row;

    /// Stores an async message row with only the fields the migration looks at filled in.
    async fn stored(database: &Database, sender: &str, message_id: &str) {
        sqlx::query(
            "INSERT INTO async_messages (id, sender, message_id, correlation_id, user_id, purpose, subject_iin, \
             consent_id, service, method, recipient, reply_to, payload, payload_type, personal_data, state, \
             attempts, accepted_ms, expires_ms, next_attempt_ms, finished_ms, response_code, response_message, \
             last_error) VALUES ($1, $2, $3, '', '', '', '', '', '', '', 'intake', $2, $4, '', 0, 'ON_DELIVERY', \
             0, 0, 1, 0, 0, 0, '', '')",
        )
        .bind(uuid::Uuid::now_v7().to_string())
        .bind(sender.to_string())
        .bind(message_id.to_string())
        .bind(Vec::<u8>::new())
        .execute(database.pool())
        .await
        .expect("insert");
    }

    async fn ids_of(database: &Database, sender: &str) -> Vec<String> {
        let mut ids: Vec<String> =
            sqlx::query("SELECT message_id FROM async_messages WHERE sender = $1")
                .bind(sender.to_string())
                .fetch_all(database.pool())
                .await
                .expect("select")
                .iter()
                .map(|row| row.try_get("message_id").expect("message_id"))
                .collect();
        // Byte order, whatever the database's collation.
        ids.sort();
        ids
    }

    shlyuz_kit::storage_test!(
        migration_0006_lower_cases_the_message_ids_stored_as_sent,
        |database: Database| async move {
            let before_0006 = Migrations {
                sqlite: crate::SQLITE_MIGRATIONS.split_at(3).0,
                postgres: crate::POSTGRES_MIGRATIONS.split_at(3).0,
            };
            database.migrate(&before_0006).await.expect("0001-0003");
            let upper = "0191F5A0-3C1E-7B3A-9A52-5D0B5E0F6C11";
            // One spelling: becomes lower case. Two spellings of one id: both kept as they are.
            stored(&database, "ops", upper).await;
            stored(&database, "sdu", upper).await;
            stored(&database, "sdu", &upper.to_lowercase()).await;
            stored(&database, "intake", upper).await;
            stored(&database, "intake", "0191f5a0-3c1e-7b3a-9a52-5D0B5E0F6C11").await;
            database
                .migrate(&crate::MIGRATIONS)
                .await
                .expect("every migration");
            assert_eq!(ids_of(&database, "ops").await, vec![upper.to_lowercase()]);
            assert_eq!(
                ids_of(&database, "sdu").await,
                vec![upper.to_string(), upper.to_lowercase()]
            );
            assert_eq!(
                ids_of(&database, "intake").await,
                vec![
                    upper.to_string(),
                    "0191f5a0-3c1e-7b3a-9a52-5D0B5E0F6C11".to_string()
                ]
            );
        }
    );
}
