//! The notify database: notifications and their SMS outbox, the cabinet inbox, conversations,
//! inbound replies and OTPs. Portable SQL; PostgreSQL adds `FOR UPDATE SKIP LOCKED` to the
//! outbox claims so replicas share the work without waiting on each other.

use shlyuz_kit::db::{Database, Dialect};
use sqlx::Row;

/// Accepted, waiting in the outbox.
pub const STATE_QUEUED: &str = "QUEUED";
/// Handed to the provider.
pub const STATE_SENT: &str = "SENT";
/// Delivered.
pub const STATE_DELIVERED: &str = "DELIVERED";
/// Given up.
pub const STATE_FAILED: &str = "FAILED";

/// Channel code stored for SMS.
pub const CHANNEL_SMS: &str = "sms";
/// Channel code stored for the personal cabinet.
pub const CHANNEL_CABINET: &str = "cabinet";

const NOTIFICATION_COLUMNS: &str = "id, idempotency_key, recipient_iin, recipient_phone, channels, template_id, language, text, \
     sms_segments, state, attempts, failure_reason, provider_message_id, conversation_id, accepted_ms, updated_ms";

/// One notification row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotificationRow {
    /// Id (UUID v7).
    pub id: String,
    /// Caller's idempotency key.
    pub idempotency_key: String,
    /// Recipient IIN or empty.
    pub recipient_iin: String,
    /// Phone, E.164, or empty until looked up.
    pub recipient_phone: String,
    /// Channel codes, comma-separated.
    pub channels: String,
    /// Template id.
    pub template_id: String,
    /// Language code.
    pub language: String,
    /// Rendered text.
    pub text: String,
    /// SMS segments (0 without SMS).
    pub sms_segments: i64,
    /// QUEUED, SENT, DELIVERED or FAILED.
    pub state: String,
    /// Delivery attempts made.
    pub attempts: i64,
    /// Why it failed.
    pub failure_reason: String,
    /// The provider's id of the SMS.
    pub provider_message_id: String,
    /// Conversation opened with it, or empty.
    pub conversation_id: String,
    /// Accepted, epoch ms.
    pub accepted_ms: i64,
    /// Last change, epoch ms.
    pub updated_ms: i64,
}

impl NotificationRow {
    /// Whether the notice goes by SMS.
    pub fn has_sms(&self) -> bool {
        self.channels.split(',').any(|code| code == CHANNEL_SMS)
    }
}

fn notification_from_row(row: &sqlx::any::AnyRow) -> Result<NotificationRow, sqlx::Error> {
    Ok(NotificationRow {
        id: row.try_get("id")?,
        idempotency_key: row.try_get("idempotency_key")?,
        recipient_iin: row.try_get("recipient_iin")?,
        recipient_phone: row.try_get("recipient_phone")?,
        channels: row.try_get("channels")?,
        template_id: row.try_get("template_id")?,
        language: row.try_get("language")?,
        text: row.try_get("text")?,
        sms_segments: row.try_get("sms_segments")?,
        state: row.try_get("state")?,
        attempts: row.try_get("attempts")?,
        failure_reason: row.try_get("failure_reason")?,
        provider_message_id: row.try_get("provider_message_id")?,
        conversation_id: row.try_get("conversation_id")?,
        accepted_ms: row.try_get("accepted_ms")?,
        updated_ms: row.try_get("updated_ms")?,
    })
}

/// A reply window to open with a notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewConversation {
    /// Participant that receives the replies.
    pub reply_participant: String,
    /// Accepted codes.
    pub accepted_codes: Vec<String>,
    /// Correlation id the replies carry.
    pub correlation_id: String,
    /// When the window closes, epoch ms.
    pub expires_ms: i64,
}

/// A notification to accept.
#[derive(Debug, Clone)]
pub struct NewNotification {
    /// The row (state QUEUED, or DELIVERED for cabinet-only notices).
    pub row: NotificationRow,
    /// Its reply window, if any.
    pub conversation: Option<NewConversation>,
}

/// What accepting a notification did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// The stored notification (the earlier one for a repeated idempotency key).
    pub notification: NotificationRow,
    /// True when the idempotency key was seen before.
    pub duplicate: bool,
}

/// The notification with `key`, if any.
pub async fn find_by_idempotency_key(
    database: &Database,
    key: &str,
) -> Result<Option<NotificationRow>, sqlx::Error> {
    let row = sqlx::query(&format!(
        "SELECT {NOTIFICATION_COLUMNS} FROM notifications WHERE idempotency_key = $1"
    ))
    .bind(key.to_string())
    .fetch_optional(database.pool())
    .await?;
    row.as_ref().map(notification_from_row).transpose()
}

/// Stores the notification, its outbox row (SMS), its inbox item (cabinet) and its conversation
/// in one transaction. A key seen before returns the stored notification and writes nothing.
pub async fn accept(
    database: &Database,
    notification: &NewNotification,
) -> Result<Accepted, sqlx::Error> {
    let row = &notification.row;
    if let Some(existing) = find_by_idempotency_key(database, &row.idempotency_key).await? {
        return Ok(Accepted {
            notification: existing,
            duplicate: true,
        });
    }
    match insert_all(database, notification).await {
        Ok(()) => Ok(Accepted {
            notification: row.clone(),
            duplicate: false,
        }),
        Err(error) => {
            // Two callers with one key at once: the loser's insert hits the unique key; answer
            // with the winner's notification.
            match find_by_idempotency_key(database, &row.idempotency_key).await? {
                Some(existing) => Ok(Accepted {
                    notification: existing,
                    duplicate: true,
                }),
                None => Err(error),
            }
        }
    }
}

async fn insert_all(
    database: &Database,
    notification: &NewNotification,
) -> Result<(), sqlx::Error> {
    let row = &notification.row;
    let mut transaction = database.pool().begin().await?;
    sqlx::query(&format!(
        "INSERT INTO notifications ({NOTIFICATION_COLUMNS}) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)"
    ))
    .bind(row.id.clone())
    .bind(row.idempotency_key.clone())
    .bind(row.recipient_iin.clone())
    .bind(row.recipient_phone.clone())
    .bind(row.channels.clone())
    .bind(row.template_id.clone())
    .bind(row.language.clone())
    .bind(row.text.clone())
    .bind(row.sms_segments)
    .bind(row.state.clone())
    .bind(row.attempts)
    .bind(row.failure_reason.clone())
    .bind(row.provider_message_id.clone())
    .bind(row.conversation_id.clone())
    .bind(row.accepted_ms)
    .bind(row.updated_ms)
    .execute(&mut *transaction)
    .await?;
    if row.has_sms() {
        sqlx::query(
            "INSERT INTO sms_outbox (notification_id, next_attempt_ms, lease_owner, lease_until_ms, last_error) \
             VALUES ($1, $2, '', 0, '')",
        )
        .bind(row.id.clone())
        .bind(row.accepted_ms)
        .execute(&mut *transaction)
        .await?;
    }
    if row.channels.split(',').any(|code| code == CHANNEL_CABINET) {
        sqlx::query(
            "INSERT INTO inbox_items (id, iin, template_id, language, text, created_ms, read_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, 0)",
        )
        .bind(row.id.clone())
        .bind(row.recipient_iin.clone())
        .bind(row.template_id.clone())
        .bind(row.language.clone())
        .bind(row.text.clone())
        .bind(row.accepted_ms)
        .execute(&mut *transaction)
        .await?;
    }
    if let Some(conversation) = &notification.conversation {
        sqlx::query(
            "INSERT INTO conversations (id, notification_id, phone, recipient_iin, language, reply_participant, \
             accepted_codes, correlation_id, expires_ms, closed_ms, created_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 0, $10)",
        )
        .bind(row.conversation_id.clone())
        .bind(row.id.clone())
        .bind(row.recipient_phone.clone())
        .bind(row.recipient_iin.clone())
        .bind(row.language.clone())
        .bind(conversation.reply_participant.clone())
        .bind(conversation.accepted_codes.join(","))
        .bind(conversation.correlation_id.clone())
        .bind(conversation.expires_ms)
        .bind(row.accepted_ms)
        .execute(&mut *transaction)
        .await?;
    }
    transaction.commit().await
}

/// The notification `id`, if any.
pub async fn get_notification(
    database: &Database,
    id: &str,
) -> Result<Option<NotificationRow>, sqlx::Error> {
    let row = sqlx::query(&format!(
        "SELECT {NOTIFICATION_COLUMNS} FROM notifications WHERE id = $1"
    ))
    .bind(id.to_string())
    .fetch_optional(database.pool())
    .await?;
    row.as_ref().map(notification_from_row).transpose()
}

/// Claims up to `limit` due outbox rows for `owner` until `lease_until_ms`, counting the attempt
/// on each notification. A row is due when its next attempt has come and nobody holds an
/// unexpired lease on it, so a worker that died mid-send leaves its rows to the next one.
pub async fn claim_due(
    database: &Database,
    owner: &str,
    now_ms: i64,
    lease_until_ms: i64,
    limit: i64,
) -> Result<Vec<NotificationRow>, sqlx::Error> {
    let lock = match database.dialect() {
        Dialect::Postgres => " FOR UPDATE SKIP LOCKED",
        Dialect::Sqlite => "",
    };
    let mut transaction = database.pool().begin().await?;
    let claimed = sqlx::query(&format!(
        "UPDATE sms_outbox SET lease_owner = $1, lease_until_ms = $2 \
         WHERE notification_id IN (SELECT notification_id FROM sms_outbox \
             WHERE next_attempt_ms <= $3 AND lease_until_ms <= $3 \
             ORDER BY next_attempt_ms, notification_id LIMIT $4{lock}) \
         RETURNING notification_id, next_attempt_ms"
    ))
    .bind(owner.to_string())
    .bind(lease_until_ms)
    .bind(now_ms)
    .bind(limit)
    .fetch_all(&mut *transaction)
    .await?;
    // RETURNING follows no order: claim in the order the rows fell due (ids are UUID v7, so ties
    // within a millisecond keep the order of acceptance).
    let mut due = Vec::with_capacity(claimed.len());
    for claim in &claimed {
        let id: String = claim.try_get("notification_id")?;
        let next_attempt_ms: i64 = claim.try_get("next_attempt_ms")?;
        due.push((next_attempt_ms, id));
    }
    due.sort();
    let mut rows = Vec::with_capacity(due.len());
    for (_, id) in due {
        let row = sqlx::query(&format!(
            "UPDATE notifications SET attempts = attempts + 1, updated_ms = $2 WHERE id = $1 \
             RETURNING {NOTIFICATION_COLUMNS}"
        ))
        .bind(id)
        .bind(now_ms)
        .fetch_one(&mut *transaction)
        .await?;
        rows.push(notification_from_row(&row)?);
    }
    transaction.commit().await?;
    Ok(rows)
}

/// Deletes the outbox row `owner` holds for `id` inside `transaction`; `false` when the lease was
/// lost to another worker.
async fn release_outbox(
    transaction: &mut sqlx::Transaction<'_, sqlx::Any>,
    id: &str,
    owner: &str,
) -> Result<bool, sqlx::Error> {
    let deleted =
        sqlx::query("DELETE FROM sms_outbox WHERE notification_id = $1 AND lease_owner = $2")
            .bind(id.to_string())
            .bind(owner.to_string())
            .execute(&mut **transaction)
            .await?;
    Ok(deleted.rows_affected() == 1)
}

#[cfg(test)]
/// Records the provider's acceptance: state SENT (unless a delivery report already came), the
/// phone used and the provider's id; the outbox row goes. `false` when the lease was lost.
pub async fn mark_sent(
    database: &Database,
    id: &str,
    owner: &str,
    phone: &str,
    provider_message_id: &str,
    now_ms: i64,
) -> Result<bool, sqlx::Error> {
    let mut transaction = database.pool().begin().await?;
    let marked = mark_sent_in(
        &mut transaction,
        id,
        owner,
        phone,
        provider_message_id,
        now_ms,
    )
    .await?;
    transaction.commit().await?;
    Ok(marked)
}

/// [`mark_sent`] inside `transaction` (the worker records a whole batch in one).
pub async fn mark_sent_in(
    transaction: &mut sqlx::Transaction<'_, sqlx::Any>,
    id: &str,
    owner: &str,
    phone: &str,
    provider_message_id: &str,
    now_ms: i64,
) -> Result<bool, sqlx::Error> {
    if !release_outbox(transaction, id, owner).await? {
        return Ok(false);
    }
    sqlx::query(
        "UPDATE notifications SET state = $2, recipient_phone = $3, provider_message_id = $4, updated_ms = $5 \
         WHERE id = $1 AND state = $6",
    )
    .bind(id.to_string())
    .bind(STATE_SENT)
    .bind(phone.to_string())
    .bind(provider_message_id.to_string())
    .bind(now_ms)
    .bind(STATE_QUEUED)
    .execute(&mut **transaction)
    .await?;
    Ok(true)
}

/// Records the final failure with `reason` inside `transaction`; the outbox row goes. `false` when
/// the lease was lost.
pub async fn mark_failed_in(
    transaction: &mut sqlx::Transaction<'_, sqlx::Any>,
    id: &str,
    owner: &str,
    reason: &str,
    now_ms: i64,
) -> Result<bool, sqlx::Error> {
    if !release_outbox(transaction, id, owner).await? {
        return Ok(false);
    }
    sqlx::query(
        "UPDATE notifications SET state = $2, failure_reason = $3, updated_ms = $4 WHERE id = $1",
    )
    .bind(id.to_string())
    .bind(STATE_FAILED)
    .bind(reason.to_string())
    .bind(now_ms)
    .execute(&mut **transaction)
    .await?;
    queue_delivery_failure(transaction, id, reason, now_ms).await?;
    Ok(true)
}

/// Outcome of an `inbound_replies` row that tells a conversation's participant its SMS failed.
pub const OUTCOME_DELIVERY_FAILED: &str = "DELIVERY_FAILED";

/// When notification `id` opened a conversation that is still open, closes it and queues a
/// `DeliveryFailed` for its participant (forwarded like a reply, with the same retries).
pub async fn queue_delivery_failure(
    connection: &mut sqlx::AnyConnection,
    id: &str,
    reason: &str,
    now_ms: i64,
) -> Result<(), sqlx::Error> {
    let closed = sqlx::query(
        "UPDATE conversations SET expires_ms = $2 WHERE notification_id = $1 AND expires_ms > $2 \
         RETURNING id",
    )
    .bind(id.to_string())
    .bind(now_ms)
    .fetch_all(&mut *connection)
    .await?;
    for conversation in closed {
        let conversation_id: String = conversation.try_get("id")?;
        sqlx::query(
            "INSERT INTO inbound_replies (id, provider_message_id, from_phone, text, code, outcome, \
             conversation_id, answer_notification_id, forward_pending, forward_attempts, \
             forward_next_ms, forward_error, received_ms) \
             VALUES ($1, '', '', $2, '', $3, $4, '', 1, 0, $5, '', $5)",
        )
        .bind(uuid::Uuid::now_v7().to_string())
        .bind(reason.to_string())
        .bind(OUTCOME_DELIVERY_FAILED)
        .bind(conversation_id)
        .bind(now_ms)
        .execute(&mut *connection)
        .await?;
    }
    Ok(())
}

/// Puts a claimed row back for another attempt at `next_attempt_ms`, inside `transaction`.
pub async fn reschedule_in(
    transaction: &mut sqlx::Transaction<'_, sqlx::Any>,
    id: &str,
    owner: &str,
    next_attempt_ms: i64,
    last_error: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE sms_outbox SET next_attempt_ms = $1, last_error = $2, lease_owner = '', lease_until_ms = 0 \
         WHERE notification_id = $3 AND lease_owner = $4",
    )
    .bind(next_attempt_ms)
    .bind(last_error.to_string())
    .bind(id.to_string())
    .bind(owner.to_string())
    .execute(&mut **transaction)
    .await?;
    Ok(())
}

/// Stores the phone found for a notification (and its conversation), inside `transaction`.
pub async fn set_phone_in(
    transaction: &mut sqlx::Transaction<'_, sqlx::Any>,
    id: &str,
    phone: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE notifications SET recipient_phone = $2 WHERE id = $1")
        .bind(id.to_string())
        .bind(phone.to_string())
        .execute(&mut **transaction)
        .await?;
    sqlx::query("UPDATE conversations SET phone = $2 WHERE notification_id = $1")
        .bind(id.to_string())
        .bind(phone.to_string())
        .execute(&mut **transaction)
        .await?;
    Ok(())
}

/// Applies a provider's delivery report; `false` when no notification has that provider id.
pub async fn apply_delivery_report(
    database: &Database,
    provider_message_id: &str,
    delivered: bool,
    reason: &str,
    now_ms: i64,
) -> Result<bool, sqlx::Error> {
    let (state, failure_reason) = if delivered {
        (STATE_DELIVERED, "")
    } else {
        (STATE_FAILED, reason)
    };
    let mut transaction = database.pool().begin().await?;
    let updated = sqlx::query(
        "UPDATE notifications SET state = $2, failure_reason = $3, updated_ms = $4 \
         WHERE provider_message_id = $1 AND provider_message_id <> '' AND state IN ($5, $6) \
         RETURNING id",
    )
    .bind(provider_message_id.to_string())
    .bind(state)
    .bind(failure_reason.to_string())
    .bind(now_ms)
    .bind(STATE_SENT)
    .bind(STATE_QUEUED)
    .fetch_all(&mut *transaction)
    .await?;
    if !delivered {
        // A failed delivery report closes the reply window the SMS opened and tells its participant.
        for row in &updated {
            let id: String = row.try_get("id")?;
            queue_delivery_failure(&mut transaction, &id, failure_reason, now_ms).await?;
        }
    }
    transaction.commit().await?;
    Ok(!updated.is_empty())
}

#[cfg(test)]
/// Rows still waiting in the outbox (operations and tests).
pub async fn outbox_len(database: &Database) -> Result<i64, sqlx::Error> {
    let row = sqlx::query("SELECT COUNT(*) AS waiting FROM sms_outbox")
        .fetch_one(database.pool())
        .await?;
    row.try_get("waiting")
}

/// One personal-cabinet item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboxRow {
    /// Id (the notification id).
    pub id: String,
    /// Template id.
    pub template_id: String,
    /// Language code.
    pub language: String,
    /// Text.
    pub text: String,
    /// Arrived, epoch ms.
    pub created_ms: i64,
    /// Read, epoch ms, or 0.
    pub read_ms: i64,
}

/// One page of `iin`'s inbox, newest first, after `after_id` (exclusive); `limit + 1` rows are
/// read so the caller knows whether another page follows.
pub async fn list_inbox(
    database: &Database,
    iin: &str,
    before_id: Option<&str>,
    unread_only: bool,
    limit: i64,
) -> Result<Vec<InboxRow>, sqlx::Error> {
    let unread_filter = if unread_only { " AND read_ms = 0" } else { "" };
    let rows = sqlx::query(&format!(
        "SELECT id, template_id, language, text, created_ms, read_ms FROM inbox_items \
         WHERE iin = $1 AND ($2 = '' OR id < $2){unread_filter} ORDER BY id DESC LIMIT $3"
    ))
    .bind(iin.to_string())
    .bind(before_id.unwrap_or_default().to_string())
    .bind(limit)
    .fetch_all(database.pool())
    .await?;
    rows.iter()
        .map(|row| {
            Ok(InboxRow {
                id: row.try_get("id")?,
                template_id: row.try_get("template_id")?,
                language: row.try_get("language")?,
                text: row.try_get("text")?,
                created_ms: row.try_get("created_ms")?,
                read_ms: row.try_get("read_ms")?,
            })
        })
        .collect()
}

/// Unread items in `iin`'s inbox.
pub async fn unread_count(database: &Database, iin: &str) -> Result<i64, sqlx::Error> {
    let row =
        sqlx::query("SELECT COUNT(*) AS unread FROM inbox_items WHERE iin = $1 AND read_ms = 0")
            .bind(iin.to_string())
            .fetch_one(database.pool())
            .await?;
    row.try_get("unread")
}

/// Marks unread items of `iin` read; returns how many changed.
pub async fn mark_read(
    database: &Database,
    iin: &str,
    item_ids: &[String],
    now_ms: i64,
) -> Result<u64, sqlx::Error> {
    let mut transaction = database.pool().begin().await?;
    let mut marked = 0;
    for item_id in item_ids {
        let updated = sqlx::query(
            "UPDATE inbox_items SET read_ms = $3 WHERE id = $1 AND iin = $2 AND read_ms = 0",
        )
        .bind(item_id.clone())
        .bind(iin.to_string())
        .bind(now_ms)
        .execute(&mut *transaction)
        .await?;
        marked += updated.rows_affected();
    }
    transaction.commit().await?;
    Ok(marked)
}
