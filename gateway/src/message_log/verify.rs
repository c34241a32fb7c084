//! Chain verification: walks every chain in order, recomputing each entry's hash and its link to
//! the previous one, and checks every checkpoint's signature and that the entry it signs is still
//! there, unchanged. An edited, deleted, inserted or reordered entry — or a chain cut short after a
//! checkpoint — is reported with the first sequence number where the chain breaks. Each chain's
//! record is checked too: its link signed by a gateway key and naming a previous chain that is
//! still there with the signed head it names (a deleted or forged chain breaks), and its closure
//! (a closed chain ends at its closing entry, which a checkpoint signs).

use shlyuz_kit::db::Database;
use shlyuz_kit::pki::VerifyingKey;

use super::record::{GENESIS_HASH, StoredEntry, chain_link_message, checkpoint_message};
use super::store::{self, ChainRecord, StoredCheckpoint, StoredSubjectAccess};

/// Entries read per query while walking a chain, so memory stays bounded for any chain length
/// (with their subject-access rows: at most 500 per entry).
const PAGE: i64 = 200;

/// The verdict on one chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainReport {
    /// The chain.
    pub chain_id: String,
    /// Entries checked (up to the first break).
    pub entries: i64,
    /// Checkpoints checked.
    pub checkpoints: i64,
    /// First sequence where the chain breaks; `None` when intact.
    pub first_broken_sequence: Option<i64>,
    /// What is wrong there; for an intact chain, a note (a chain never closed).
    pub problem: String,
    /// The chain was closed: by its own shutdown, or by a later start after its run stopped.
    pub closed: bool,
    /// The chain is open and its writer's heartbeat is within the lease.
    pub live: bool,
    /// The chain its signed link names; empty for none (the first chain, or a legacy one).
    pub previous_chain_id: String,
}

impl ChainReport {
    /// Whether every link and checkpoint holds.
    pub fn intact(&self) -> bool {
        self.first_broken_sequence.is_none()
    }
}

/// Verifies `only_chain`, or every chain when it is `None`. `trusted_keys` are the gateway's
/// message-signing keys (the current one and any retired by a rotation); a checkpoint signed by
/// any other key is a break. More than `max_unsigned_entries` entries without a checkpoint
/// (between two checkpoints, or after the last) is a break too: checkpoints were removed, so
/// the entries there are protected only by hashes anyone can recompute. An open chain whose
/// heartbeat is at or after `live_since_ms` is live; an open one older than that is reported
/// (intact, with a note) as never closed.
pub async fn verify_chains(
    database: &Database,
    trusted_keys: &[VerifyingKey],
    max_unsigned_entries: i64,
    live_since_ms: i64,
    only_chain: Option<&str>,
) -> Result<Vec<ChainReport>, sqlx::Error> {
    let chain_ids = match only_chain {
        Some(chain_id) => vec![chain_id.to_string()],
        None => store::chain_ids(database).await?,
    };
    let legacy_chains_digest = store::legacy_chains_digest(database).await?;
    let checks = ChainChecks {
        trusted_keys,
        max_unsigned_entries,
        live_since_ms,
        legacy_chains_digest: &legacy_chains_digest,
    };
    let mut reports = Vec::with_capacity(chain_ids.len());
    for chain_id in chain_ids {
        reports.push(verify_chain(database, &checks, &chain_id).await?);
    }
    Ok(reports)
}

/// What every chain is checked against.
struct ChainChecks<'a> {
    trusted_keys: &'a [VerifyingKey],
    max_unsigned_entries: i64,
    live_since_ms: i64,
    legacy_chains_digest: &'a [u8],
}

async fn verify_chain(
    database: &Database,
    checks: &ChainChecks<'_>,
    chain_id: &str,
) -> Result<ChainReport, sqlx::Error> {
    let trusted_keys = checks.trusted_keys;
    let max_unsigned_entries = checks.max_unsigned_entries;
    let record = store::chain_record(database, chain_id).await?;
    let mut report = ChainReport {
        chain_id: chain_id.to_string(),
        entries: 0,
        checkpoints: 0,
        first_broken_sequence: None,
        problem: String::new(),
        closed: record
            .as_ref()
            .is_some_and(|record| record.closed_ms.is_some()),
        live: record.as_ref().is_some_and(|record| {
            record.closed_ms.is_none() && record.heartbeat_ms >= checks.live_since_ms
        }),
        previous_chain_id: record
            .as_ref()
            .map(|record| record.previous_chain_id.clone())
            .unwrap_or_default(),
    };
    let broken = |report: &mut ChainReport, sequence: i64, problem: String| {
        report.first_broken_sequence = Some(sequence);
        report.problem = problem;
    };
    // The chain's start first: a chain no gateway started is not checked further.
    let link = match &record {
        None => Err(
            "the chain has no chain record: no gateway started it, or its record was deleted"
                .to_string(),
        ),
        Some(record) if record.legacy => Ok(()),
        Some(record) => check_link(database, record, checks).await?,
    };
    if let Err(problem) = link {
        broken(&mut report, 1, problem);
        return Ok(report);
    }
    let checkpoints = store::checkpoints(database, chain_id).await?;
    let mut pending_checkpoints = checkpoints.iter().peekable();
    let mut expected_sequence = 1;
    let mut previous_hash = GENESIS_HASH;
    // The last sequence a checkpoint signs so far.
    let mut signed_up_to = 0;
    'pages: loop {
        let rows = store::chain_rows(database, chain_id, expected_sequence - 1, PAGE).await?;
        if rows.is_empty() {
            break;
        }
        let page_end = expected_sequence - 1 + rows.len() as i64;
        let subject_rows =
            store::chain_subject_rows(database, chain_id, expected_sequence - 1, Some(page_end))
                .await?;
        let mut subject_rows = subject_rows.iter().peekable();
        for row in &rows {
            let entry = match store::entry_from_row(row) {
                Ok(entry) => entry,
                Err(error) => {
                    broken(
                        &mut report,
                        expected_sequence,
                        format!("entry cannot be read: {error}"),
                    );
                    return Ok(report);
                }
            };
            if entry.sequence != expected_sequence {
                broken(
                    &mut report,
                    expected_sequence,
                    format!(
                        "entry {expected_sequence} is missing (next entry is {})",
                        entry.sequence
                    ),
                );
                return Ok(report);
            }
            if entry.previous_hash != previous_hash {
                broken(
                    &mut report,
                    entry.sequence,
                    "previous_hash does not match the hash of the entry before it".to_string(),
                );
                return Ok(report);
            }
            if entry.compute_hash() != entry.entry_hash {
                broken(
                    &mut report,
                    entry.sequence,
                    "the entry's contents do not match its entry_hash".to_string(),
                );
                return Ok(report);
            }
            let mut own_rows = Vec::new();
            while let Some(row) = subject_rows.next_if(|row| row.sequence <= entry.sequence) {
                own_rows.push(row);
            }
            if let Err(problem) = check_subject_rows(&entry, &own_rows) {
                broken(&mut report, entry.sequence, problem);
                return Ok(report);
            }
            while let Some(checkpoint) =
                pending_checkpoints.next_if(|checkpoint| checkpoint.sequence <= entry.sequence)
            {
                if let Err(problem) =
                    check_checkpoint(checkpoint, &entry.entry_hash, entry.sequence, trusted_keys)
                {
                    broken(&mut report, checkpoint.sequence, problem);
                    return Ok(report);
                }
                report.checkpoints += 1;
                signed_up_to = checkpoint.sequence;
            }
            if entry.sequence - signed_up_to > max_unsigned_entries {
                broken(
                    &mut report,
                    entry.sequence,
                    missing_checkpoints(signed_up_to, max_unsigned_entries),
                );
                return Ok(report);
            }
            report.entries += 1;
            previous_hash = entry.entry_hash;
            expected_sequence += 1;
        }
        if (rows.len() as i64) < PAGE {
            break 'pages;
        }
    }
    if let Some(checkpoint) = pending_checkpoints.next() {
        broken(
            &mut report,
            expected_sequence,
            format!(
                "a checkpoint signs entry {} but the chain ends at entry {}: entries were removed",
                checkpoint.sequence,
                expected_sequence - 1
            ),
        );
        return Ok(report);
    }
    let orphans =
        store::chain_subject_rows(database, chain_id, expected_sequence - 1, None).await?;
    // A live chain grows while it is read: rows of an entry written after the last page was read
    // are not orphans, the entry is there now (the next verification checks it).
    let grown_to = match orphans.first() {
        Some(_) => store::chain_head(database, chain_id)
            .await?
            .map_or(0, |(sequence, _)| sequence),
        None => 0,
    };
    if let Some(orphan) = orphans.first().filter(|orphan| orphan.sequence > grown_to) {
        broken(
            &mut report,
            orphan.sequence,
            format!(
                "a subject-access row names entry {}, which is not in the chain",
                orphan.sequence
            ),
        );
        return Ok(report);
    }
    if let Some(record) = &record {
        let last = expected_sequence - 1;
        if let Err((sequence, problem)) = check_closure(record, last, signed_up_to) {
            broken(&mut report, sequence, problem);
        } else if !report.closed && !report.live {
            report.problem = format!(
                "the chain was never closed: its writer stopped without shutdown (no heartbeat for \
                 the lease) and no gateway has started since; entries after {signed_up_to} are \
                 protected by their hash links only until the next start closes it"
            );
        }
    }
    Ok(report)
}

/// Checks a chain's signed link: signed by a gateway key, over the legacy chains there are, and
/// naming a previous chain that is still there with a checkpoint signing the head it names.
async fn check_link(
    database: &Database,
    record: &ChainRecord,
    checks: &ChainChecks<'_>,
) -> Result<Result<(), String>, sqlx::Error> {
    let Some(signer) = checks
        .trusted_keys
        .iter()
        .find(|key| hex::encode(key.as_bytes()) == record.signer_public_key)
    else {
        return Ok(Err(format!(
            "the chain's link is signed by key {}, which is not a gateway key",
            record.signer_public_key
        )));
    };
    let message = chain_link_message(
        &record.chain_id,
        record.started_ms,
        &record.previous_chain_id,
        record.previous_sequence,
        &record.previous_entry_hash,
        &record.legacy_chains_digest,
    );
    if signer
        .verify(message.as_bytes(), &record.link_signature)
        .is_err()
    {
        return Ok(Err(
            "the chain's link has an invalid signature: no gateway started this chain".to_string(),
        ));
    }
    if record.legacy_chains_digest != checks.legacy_chains_digest {
        return Ok(Err(
            "the chains from before chain records (migration 0007) are not the ones this chain's \
             link signs: one was added or removed"
                .to_string(),
        ));
    }
    if record.previous_chain_id.is_empty() {
        return Ok(Ok(()));
    }
    let previous = &record.previous_chain_id;
    if store::chain_record(database, previous).await?.is_none() {
        return Ok(Err(format!(
            "the previous chain {previous}, which this chain's signed link names, is missing"
        )));
    }
    if record.previous_sequence > 0 {
        let head = store::checkpoint_at(database, previous, record.previous_sequence).await?;
        if head.is_none_or(|head| head.entry_hash != record.previous_entry_hash) {
            return Ok(Err(format!(
                "the previous chain {previous} has no checkpoint signing entry {} with the hash \
                 this chain's signed link names",
                record.previous_sequence
            )));
        }
    }
    Ok(Ok(()))
}

/// Checks a chain's end against its record (`last`: its last entry, `signed_up_to`: the last entry
/// a checkpoint signs): a closed chain ends at its closing entry and a checkpoint signs it. A
/// legacy chain (closed by the first start after migration 0007, while an old writer may still
/// append) only needs its last entry signed.
fn check_closure(record: &ChainRecord, last: i64, signed_up_to: i64) -> Result<(), (i64, String)> {
    if record.closed_ms.is_none() {
        return Ok(());
    }
    if !record.legacy {
        let closed_at = record.closed_sequence.unwrap_or_default();
        if last > closed_at {
            return Err((
                closed_at + 1,
                format!("entries follow entry {closed_at}, where the chain was closed"),
            ));
        }
        if last < closed_at {
            return Err((
                last + 1,
                format!(
                    "the chain was closed at entry {closed_at} but ends at entry {last}: entries were removed"
                ),
            ));
        }
    }
    if last > signed_up_to {
        return Err((
            last,
            format!("the chain is closed but no checkpoint signs its last entry {last}"),
        ));
    }
    Ok(())
}

/// What a chain lacking checkpoints after `signed_up_to` is told.
fn missing_checkpoints(signed_up_to: i64, max_unsigned_entries: i64) -> String {
    format!(
        "checkpoints are missing: no checkpoint signs the {max_unsigned_entries} entries after entry {signed_up_to}"
    )
}

/// Checks the subject-access rows stored for `entry` (`rows`, sorted by subject): each names a
/// person the entry names and repeats the entry's fields; a personal-data entry has a row for
/// every person it names. An entry on a route without personal data may lack its rows (entries
/// written before those rows existed have none); such rows only serve `ListEntries`.
fn check_subject_rows(entry: &StoredEntry, rows: &[&StoredSubjectAccess]) -> Result<(), String> {
    let expected = entry.accessed_subjects();
    let named_raw = |subject: &str| entry.subject_iin.split(',').any(|item| item == subject);
    for row in rows {
        if row.sequence != entry.sequence {
            return Err(format!(
                "a subject-access row names entry {}, which is not in the chain",
                row.sequence
            ));
        }
        let subject = row.subject_iin.as_str();
        if !expected.contains(&subject) && !named_raw(subject) {
            return Err(format!(
                "a subject-access row of entry {} names {subject}, whom the entry does not name",
                entry.sequence
            ));
        }
        let access = &row.row;
        let same = access.time_ms == entry.time_ms
            && access.participant_id == entry.sender
            && access.user_id == entry.user_id
            && access.service == entry.service
            && access.method == entry.method
            && access.purpose == entry.purpose
            && access.message_id == entry.message_id
            && access.status_code == i64::from(entry.status_code)
            && row.personal_data == entry.personal_data;
        if !same {
            return Err(format!(
                "the subject-access row of {subject} does not match entry {}",
                entry.sequence
            ));
        }
    }
    if entry.personal_data
        && let Some(missing) = expected
            .iter()
            .find(|subject| !rows.iter().any(|row| row.subject_iin == **subject))
    {
        return Err(format!(
            "entry {} names {missing} but the subject access log has no row for it",
            entry.sequence
        ));
    }
    Ok(())
}

/// Checks one checkpoint against the entry at its sequence (`entry_sequence`).
fn check_checkpoint(
    checkpoint: &StoredCheckpoint,
    entry_hash: &[u8],
    entry_sequence: i64,
    trusted_keys: &[VerifyingKey],
) -> Result<(), String> {
    if checkpoint.sequence != entry_sequence {
        return Err(format!(
            "checkpoint {} names no entry of the chain",
            checkpoint.sequence
        ));
    }
    if checkpoint.entry_hash != entry_hash {
        return Err(format!(
            "checkpoint {} signs a different entry hash than the stored entry",
            checkpoint.sequence
        ));
    }
    let Some(signer) = trusted_keys
        .iter()
        .find(|key| hex::encode(key.as_bytes()) == checkpoint.signer_public_key)
    else {
        return Err(format!(
            "checkpoint {} is signed by key {}, which is not a gateway key",
            checkpoint.sequence, checkpoint.signer_public_key
        ));
    };
    let message = checkpoint_message(
        &checkpoint.chain_id,
        checkpoint.sequence,
        &checkpoint.entry_hash,
        checkpoint.time_ms,
    );
    signer
        .verify(message.as_bytes(), &checkpoint.signature)
        .map_err(|_| {
            format!(
                "checkpoint {} has an invalid signature",
                checkpoint.sequence
            )
        })
}
