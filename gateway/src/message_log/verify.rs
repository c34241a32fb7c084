//! Chain verification: walks every chain in order, recomputing each entry's hash and its link to
//! the previous one, and checks every checkpoint's signature and that the entry it signs is still
//! there, unchanged. An edited, deleted, inserted or reordered entry — or a chain cut short after a
//! checkpoint — is reported with the first sequence number where the chain breaks.

use shlyuz_kit::db::Database;
use shlyuz_kit::pki::VerifyingKey;

use super::record::{GENESIS_HASH, StoredEntry, checkpoint_message};
use super::store::{self, StoredCheckpoint, StoredSubjectAccess};

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
    /// What is wrong there.
    pub problem: String,
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
/// the entries there are protected only by hashes anyone can recompute.
pub async fn verify_chains(
    database: &Database,
    trusted_keys: &[VerifyingKey],
    max_unsigned_entries: i64,
    only_chain: Option<&str>,
) -> Result<Vec<ChainReport>, sqlx::Error> {
    let chain_ids = match only_chain {
        Some(chain_id) => vec![chain_id.to_string()],
        None => store::chain_ids(database).await?,
    };
    let mut reports = Vec::with_capacity(chain_ids.len());
    for chain_id in chain_ids {
        reports.push(verify_chain(database, trusted_keys, max_unsigned_entries, &chain_id).await?);
    }
    Ok(reports)
}

async fn verify_chain(
    database: &Database,
    trusted_keys: &[VerifyingKey],
    max_unsigned_entries: i64,
    chain_id: &str,
) -> Result<ChainReport, sqlx::Error> {
    let checkpoints = store::checkpoints(database, chain_id).await?;
    let mut report = ChainReport {
        chain_id: chain_id.to_string(),
        entries: 0,
        checkpoints: 0,
        first_broken_sequence: None,
        problem: String::new(),
    };
    let broken = |report: &mut ChainReport, sequence: i64, problem: String| {
        report.first_broken_sequence = Some(sequence);
        report.problem = problem;
    };
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
    if let Some(orphan) = orphans.first() {
        broken(
            &mut report,
            orphan.sequence,
            format!(
                "a subject-access row names entry {}, which is not in the chain",
                orphan.sequence
            ),
        );
    }
    Ok(report)
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
