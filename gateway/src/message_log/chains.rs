//! Chain records: what a starting writer does before its first entry. It closes the chains of
//! runs that stopped without a shutdown (an open chain whose heartbeat is older than the lease),
//! signing the last entry of each, and then opens its own chain with a signed link to the chain
//! closed last, so that a deleted or forged chain breaks a link (docs/message-log.md, "Chains").

use shlyuz_kit::clock::SharedClock;
use shlyuz_kit::db::Database;
use shlyuz_kit::pki::SigningKey;

use super::record::{chain_link_message, checkpoint_message};
use super::store::{self, ChainRecord, StoredCheckpoint};

/// A checkpoint of `chain_id` signing `entry_hash` at `sequence`, made at `time_ms`.
pub(super) fn signed_checkpoint(
    signing_key: &SigningKey,
    chain_id: &str,
    sequence: i64,
    entry_hash: &[u8],
    time_ms: i64,
) -> StoredCheckpoint {
    let message = checkpoint_message(chain_id, sequence, entry_hash, time_ms);
    StoredCheckpoint {
        chain_id: chain_id.to_string(),
        sequence,
        entry_hash: entry_hash.to_vec(),
        time_ms,
        signature: signing_key.sign(message.as_bytes()).to_vec(),
        signer_public_key: hex::encode(signing_key.verifying_key().as_bytes()),
    }
}

/// Closes every open chain whose heartbeat is older than `lease_ms` (on the clock of this
/// instance), each with a signed checkpoint over its last entry; `closer` (the chain about to
/// start, or the running writer sweeping, whose own chain is never closed here) is recorded as
/// who closed them. Returns the chains this call closed; a chain another
/// starting instance closed first, or whose writer refreshed its heartbeat meanwhile, is left, and
/// so is one that could not be closed now (a warning; the next heartbeat or start tries again): someone else's
/// chain never keeps this instance from starting its own.
pub(super) async fn close_stale_chains(
    database: &Database,
    signing_key: &SigningKey,
    clock: &SharedClock,
    lease_ms: i64,
    closer: &str,
) -> Result<Vec<String>, sqlx::Error> {
    let now_ms = clock.now_millis();
    let cutoff_ms = now_ms.saturating_sub(lease_ms);
    let sign = |chain_id: &str, sequence: i64, entry_hash: &[u8]| {
        signed_checkpoint(signing_key, chain_id, sequence, entry_hash, now_ms)
    };
    let mut closed = Vec::new();
    for chain_id in store::stale_chains(database, cutoff_ms).await? {
        if chain_id == closer {
            // A running writer sweeping: its own chain is live, however late its last beat.
            continue;
        }
        match store::close_stale_chain(database, &chain_id, cutoff_ms, now_ms, closer, &sign).await
        {
            Ok(true) => {
                tracing::warn!(chain_id = %chain_id, closed_by = %closer, "message log chain of a run that stopped without shutdown closed");
                closed.push(chain_id);
            }
            Ok(false) => {}
            Err(error) => {
                tracing::warn!(chain_id = %chain_id, error = %error, "message log chain of a stopped run not closed")
            }
        }
    }
    Ok(closed)
}

/// Opens the new chain `chain_id`: its record, open, with a heartbeat of now and a link signed
/// over the chain closed last — its id, its closing sequence and the hash its closing checkpoint
/// signs (no link when no chain is closed yet) — and over the ids of the legacy chains.
pub(super) async fn open_chain(
    database: &Database,
    signing_key: &SigningKey,
    clock: &SharedClock,
    chain_id: String,
) -> Result<ChainRecord, sqlx::Error> {
    let started_ms = clock.now_millis();
    let (previous_chain_id, previous_sequence, previous_entry_hash) =
        match store::newest_closed_chain(database).await? {
            None => (String::new(), 0, Vec::new()),
            Some(previous) => {
                let sequence = previous.closed_sequence.unwrap_or_default();
                let hash = if sequence > 0 {
                    store::checkpoint_at(database, &previous.chain_id, sequence)
                        .await?
                        .map(|checkpoint| checkpoint.entry_hash)
                        .unwrap_or_default()
                } else {
                    Vec::new()
                };
                (previous.chain_id, sequence, hash)
            }
        };
    let legacy_chains_digest = store::legacy_chains_digest(database).await?;
    let message = chain_link_message(
        &chain_id,
        started_ms,
        &previous_chain_id,
        previous_sequence,
        &previous_entry_hash,
        &legacy_chains_digest,
    );
    let chain = ChainRecord {
        chain_id,
        started_ms,
        heartbeat_ms: started_ms,
        closed_ms: None,
        closed_sequence: None,
        closed_by: String::new(),
        previous_chain_id,
        previous_sequence,
        previous_entry_hash,
        link_signature: signing_key.sign(message.as_bytes()).to_vec(),
        signer_public_key: hex::encode(signing_key.verifying_key().as_bytes()),
        legacy_chains_digest,
        legacy: false,
    };
    store::insert_chain(database, &chain).await?;
    Ok(chain)
}
