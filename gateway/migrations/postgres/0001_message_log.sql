-- The gateway's tamper-evident message log (one hash chain per gateway instance run), its signed
-- checkpoints, and the subject access log ("who looked at my data").
-- Portable column types only (BIGINT, TEXT, BYTEA); flags are BIGINT 0/1; times are epoch ms UTC.
-- docs/message-log.md describes what entry_hash covers and what a checkpoint signs.

CREATE TABLE message_log_entries (
    chain_id TEXT NOT NULL,
    sequence BIGINT NOT NULL,
    time_ms BIGINT NOT NULL,
    message_id TEXT NOT NULL,
    correlation_id TEXT NOT NULL,
    sender TEXT NOT NULL,
    user_id TEXT NOT NULL,
    service TEXT NOT NULL,
    method TEXT NOT NULL,
    purpose TEXT NOT NULL,
    subject_iin TEXT NOT NULL,
    request_hash BYTEA NOT NULL,
    response_hash BYTEA,
    status_code BIGINT NOT NULL,
    reason TEXT NOT NULL,
    duration_us BIGINT NOT NULL,
    channel TEXT NOT NULL,
    personal_data BIGINT NOT NULL,
    request_body BYTEA,
    response_body BYTEA,
    previous_hash BYTEA NOT NULL,
    entry_hash BYTEA NOT NULL,
    PRIMARY KEY (chain_id, sequence)
);

-- GetEntry: one message of one sender.
CREATE INDEX message_log_entries_by_message ON message_log_entries (sender, message_id);
-- ListEntries, newest first, unfiltered or by time range; the key columns make the cursor unique.
CREATE INDEX message_log_entries_by_time ON message_log_entries (time_ms, chain_id, sequence);
-- ListEntries by sender.
CREATE INDEX message_log_entries_by_sender_time ON message_log_entries (sender, time_ms);
-- ListEntries by subject.
CREATE INDEX message_log_entries_by_subject_time ON message_log_entries (subject_iin, time_ms);
-- ListEntries by correlation id (all messages of one case).
CREATE INDEX message_log_entries_by_correlation ON message_log_entries (correlation_id, time_ms);

CREATE TABLE message_log_checkpoints (
    chain_id TEXT NOT NULL,
    sequence BIGINT NOT NULL,
    entry_hash BYTEA NOT NULL,
    time_ms BIGINT NOT NULL,
    signature BYTEA NOT NULL,
    signer_public_key TEXT NOT NULL,
    PRIMARY KEY (chain_id, sequence)
);

-- One row per subject named by a message-log entry about personal data (a batch call names
-- several), written in the same transaction as the entry; (chain_id, sequence) names that entry.
CREATE TABLE subject_access (
    chain_id TEXT NOT NULL,
    sequence BIGINT NOT NULL,
    time_ms BIGINT NOT NULL,
    subject_iin TEXT NOT NULL,
    participant_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    service TEXT NOT NULL,
    method TEXT NOT NULL,
    purpose TEXT NOT NULL,
    message_id TEXT NOT NULL,
    status_code BIGINT NOT NULL,
    PRIMARY KEY (chain_id, sequence, subject_iin)
);

-- ListSubjectAccess: one subject, newest first.
CREATE INDEX subject_access_by_subject_time ON subject_access (subject_iin, time_ms, chain_id, sequence);
