-- The async channel's durable queue and the participants' inboxes.
-- Portable column types only (BIGINT, TEXT, BLOB); times are epoch ms UTC.

CREATE TABLE async_messages (
    id TEXT PRIMARY KEY,
    sender TEXT NOT NULL,
    message_id TEXT NOT NULL,
    correlation_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    purpose TEXT NOT NULL,
    subject_iin TEXT NOT NULL,
    consent_id TEXT NOT NULL,
    -- Either a service method (service, method) or a participant (recipient).
    service TEXT NOT NULL,
    method TEXT NOT NULL,
    recipient TEXT NOT NULL,
    reply_to TEXT NOT NULL,
    payload BLOB NOT NULL,
    payload_type TEXT NOT NULL,
    personal_data BIGINT NOT NULL,
    -- ON_DELIVERY, DELIVERED, NOT_DELIVERED, DELIVERY_STOPPED
    state TEXT NOT NULL,
    attempts BIGINT NOT NULL,
    accepted_ms BIGINT NOT NULL,
    expires_ms BIGINT NOT NULL,
    next_attempt_ms BIGINT NOT NULL,
    -- The gateway instance delivering it now, and until when its claim holds.
    lease_owner TEXT NOT NULL DEFAULT '',
    lease_until_ms BIGINT NOT NULL DEFAULT 0,
    finished_ms BIGINT NOT NULL,
    response_code BIGINT NOT NULL,
    response_message TEXT NOT NULL,
    response_payload BLOB,
    last_error TEXT NOT NULL,
    UNIQUE (sender, message_id)
);

-- The delivery queue: due service-target messages.
CREATE INDEX async_messages_due ON async_messages (state, next_attempt_ms);

CREATE TABLE async_inbox (
    item_id TEXT PRIMARY KEY,
    participant TEXT NOT NULL,
    -- MESSAGE or RESULT
    kind TEXT NOT NULL,
    message_row_id TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    acked BIGINT NOT NULL,
    UNIQUE (message_row_id, kind)
);

-- GetMessages / StreamMessages: one participant's unacknowledged items, oldest first.
CREATE INDEX async_inbox_pending ON async_inbox (participant, acked, created_ms);
