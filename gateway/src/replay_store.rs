//! The replay guard shared by every gateway replica on one database (`gateway.replay_guard =
//! "shared"`): a `(sender, message id)` row per call, kept until its replay window has passed. The
//! in-memory guard of each replica still answers first, so a replay to the same replica costs no
//! database round trip; the shared row catches the replay sent to another replica. Claims of
//! concurrent calls are written in one statement per batch.

use std::time::Duration;

use shlyuz_kit::clock::SharedClock;
use shlyuz_kit::db::{Database, placeholder, values_clause};
use shlyuz_kit::error::ApiError;
use shlyuz_kit::shutdown::ShutdownSignal;
use sqlx::Row;

/// How often expired rows are deleted.
const PURGE_INTERVAL: Duration = Duration::from_secs(60);

/// Claims waiting for the next batch, at most this many per statement.
const MAX_BATCH: usize = 256;

/// One call's claim, answered through `reply`.
struct Claim {
    sender: String,
    message_id: String,
    expires_ms: i64,
    now_ms: i64,
    reply: tokio::sync::oneshot::Sender<Result<bool, ()>>,
}

/// `(sender, message id)` claims in the gateway's database. Concurrent calls' claims are written
/// together, one statement per batch (as the message log does), so the shared guard costs one
/// round trip per batch rather than per call.
#[derive(Clone)]
pub struct SharedReplayGuard {
    database: Database,
    claims: tokio::sync::mpsc::Sender<Claim>,
}

impl SharedReplayGuard {
    /// A guard over `database` (migrated); starts its batch writer on the current runtime.
    pub fn new(database: Database) -> Self {
        let (claims, queue) = tokio::sync::mpsc::channel(MAX_BATCH * 4);
        tokio::spawn(write_claims(database.clone(), queue));
        Self { database, claims }
    }

    /// Claims `message_id` for `sender` until `expires_ms`; `false` when another call holds a live
    /// claim (a replay). An expired claim is taken over. A database failure refuses the call
    /// (`UNAVAILABLE`): without the shared record a replay could not be told apart.
    pub async fn claim(
        &self,
        sender: &str,
        message_id: &str,
        now_ms: i64,
        expires_ms: i64,
    ) -> Result<bool, ApiError> {
        let unavailable = || {
            ApiError::unavailable(
                "REPLAY_GUARD_UNAVAILABLE",
                "the gateway cannot check for replays right now; retry",
            )
        };
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.claims
            .send(Claim {
                sender: sender.to_string(),
                message_id: message_id.to_string(),
                expires_ms,
                now_ms,
                reply,
            })
            .await
            .map_err(|_| unavailable())?;
        match answer.await {
            Ok(Ok(first)) => Ok(first),
            Ok(Err(())) | Err(_) => Err(unavailable()),
        }
    }

    /// Releases a claim (the call was refused before it reached the upstream, so the sender may
    /// correct it and send it again with the same id).
    pub async fn release(&self, sender: &str, message_id: &str) {
        if let Err(error) =
            sqlx::query("DELETE FROM replay_guard WHERE sender = $1 AND message_id = $2")
                .bind(sender)
                .bind(message_id)
                .execute(self.database.pool())
                .await
        {
            tracing::warn!(error = %error, "shared replay guard: claim not released");
        }
    }

    /// Deletes claims whose window has passed; returns how many.
    pub async fn purge(&self, now_ms: i64) -> Result<u64, sqlx::Error> {
        Ok(
            sqlx::query("DELETE FROM replay_guard WHERE expires_ms <= $1")
                .bind(now_ms)
                .execute(self.database.pool())
                .await?
                .rows_affected(),
        )
    }

    /// Purges expired claims every minute until shutdown.
    pub async fn run_purge(self, clock: SharedClock, shutdown: ShutdownSignal) {
        let (this, clock) = (&self, &clock);
        shlyuz_kit::task::every(PURGE_INTERVAL, shutdown, || async move {
            if let Err(error) = this.purge(clock.now_millis()).await {
                tracing::warn!(error = %error, "replay guard purge failed");
            }
        })
        .await;
    }
}

/// Writes waiting claims in batches until every guard is dropped.
async fn write_claims(database: Database, mut queue: tokio::sync::mpsc::Receiver<Claim>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while queue.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let claims = std::mem::take(&mut batch);
        match claim_batch(&database, &claims).await {
            Ok(claimed) => {
                for (claim, first) in claims.into_iter().zip(claimed) {
                    let _ = claim.reply.send(Ok(first));
                }
            }
            Err(error) => {
                tracing::error!(error = %error, claims = claims.len(), "shared replay guard unavailable");
                for claim in claims {
                    let _ = claim.reply.send(Err(()));
                }
            }
        }
    }
}

/// One statement for `claims`: which of them are the first live claim of their key. A key twice
/// in one batch is claimed by its first occurrence only.
async fn claim_batch(database: &Database, claims: &[Claim]) -> Result<Vec<bool>, sqlx::Error> {
    let mut first_of_key: std::collections::HashMap<(&str, &str), usize> =
        std::collections::HashMap::new();
    let mut unique: Vec<usize> = Vec::new();
    for (index, claim) in claims.iter().enumerate() {
        first_of_key
            .entry((claim.sender.as_str(), claim.message_id.as_str()))
            .or_insert_with(|| {
                unique.push(index);
                index
            });
    }
    let now_ms = claims.iter().map(|claim| claim.now_ms).max().unwrap_or(0);
    let dialect = database.dialect();
    let values = values_clause(dialect, unique.len(), 3);
    let now_placeholder = placeholder(dialect, unique.len() * 3 + 1);
    let sql = format!(
        "INSERT INTO replay_guard (sender, message_id, expires_ms) VALUES {values}
         ON CONFLICT (sender, message_id) DO UPDATE SET expires_ms = excluded.expires_ms
         WHERE replay_guard.expires_ms <= {now_placeholder}
         RETURNING sender, message_id"
    );
    let mut query = sqlx::query(&sql);
    for index in &unique {
        let claim = &claims[*index];
        query = query
            .bind(claim.sender.clone())
            .bind(claim.message_id.clone())
            .bind(claim.expires_ms);
    }
    let rows = query.bind(now_ms).fetch_all(database.pool()).await?;
    let mut won: std::collections::HashSet<(String, String)> = std::collections::HashSet::new();
    for row in rows {
        won.insert((row.try_get("sender")?, row.try_get("message_id")?));
    }
    Ok(claims
        .iter()
        .enumerate()
        .map(|(index, claim)| {
            first_of_key.get(&(claim.sender.as_str(), claim.message_id.as_str())) == Some(&index)
                && won.contains(&(claim.sender.clone(), claim.message_id.clone()))
        })
        .collect())
}
