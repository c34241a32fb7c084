-- One record per message-log chain (issue 15 item 3, issue 14 item 7); docs/message-log.md, "Chains".

-- A chain's record: its signed link to the chain closed last before it started, the heartbeat its
-- writer refreshes while it runs, and its closure (by its own shutdown, or by a later start once the
-- heartbeat is older than the lease). A writer appends only while closed_ms is NULL.
CREATE TABLE message_log_chains (
    chain_id TEXT PRIMARY KEY,
    started_ms BIGINT NOT NULL,
    heartbeat_ms BIGINT NOT NULL,
    -- NULL while open.
    closed_ms BIGINT,
    -- The last entry of the chain at its closure (0: none); a checkpoint signs it.
    closed_sequence BIGINT,
    -- 'shutdown', or the chain id of the run whose start closed it.
    closed_by TEXT NOT NULL,
    -- The chain this one links to ('' for none), its closing sequence and that entry's hash.
    previous_chain_id TEXT NOT NULL,
    previous_sequence BIGINT NOT NULL,
    previous_entry_hash BYTEA NOT NULL,
    -- Ed25519 signature of the link text, and the signer's public key (lowercase hex).
    link_signature BYTEA NOT NULL,
    signer_public_key TEXT NOT NULL,
    -- SHA-256 of the ids of the legacy chains (sorted, joined by newlines) that the link signs.
    legacy_chains_digest BYTEA NOT NULL,
    -- 1: a chain written before this migration (no link); 0: every later chain.
    legacy BIGINT NOT NULL
);

-- A start finds the open chains whose heartbeat is older than the lease, and the newest closed chain.
CREATE INDEX message_log_chains_by_closure ON message_log_chains (closed_ms, heartbeat_ms);

-- Chains written before this migration: unlinked, their heartbeat their last entry's time, so the
-- first start after the migration closes those of runs that are gone.
INSERT INTO message_log_chains (chain_id, started_ms, heartbeat_ms, closed_ms, closed_sequence, closed_by,
    previous_chain_id, previous_sequence, previous_entry_hash, link_signature, signer_public_key, legacy_chains_digest, legacy)
SELECT chain_id, MIN(time_ms), MAX(time_ms), NULL, NULL, '', '', 0, ''::bytea, ''::bytea, '', ''::bytea, 1
FROM message_log_entries GROUP BY chain_id;
