-- Inbox items housing could not read (unknown payload type or undecodable), kept before they are
-- acknowledged so that nothing the gateway delivered is lost.
CREATE TABLE inbox_unreadable (
    item_id TEXT PRIMARY KEY,
    payload_type TEXT NOT NULL,
    payload BYTEA NOT NULL,
    received_at_ms BIGINT NOT NULL
);
