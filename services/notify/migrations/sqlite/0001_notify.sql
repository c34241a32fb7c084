-- Notices: one row per accepted notification; the SMS part is delivered through sms_outbox.
CREATE TABLE notifications (
    id TEXT PRIMARY KEY,
    idempotency_key TEXT NOT NULL UNIQUE,
    recipient_iin TEXT NOT NULL,
    recipient_phone TEXT NOT NULL,
    channels TEXT NOT NULL,
    template_id TEXT NOT NULL,
    language TEXT NOT NULL,
    text TEXT NOT NULL,
    sms_segments BIGINT NOT NULL,
    state TEXT NOT NULL,
    attempts BIGINT NOT NULL,
    failure_reason TEXT NOT NULL,
    provider_message_id TEXT NOT NULL,
    conversation_id TEXT NOT NULL,
    accepted_ms BIGINT NOT NULL,
    updated_ms BIGINT NOT NULL
);
CREATE INDEX notifications_provider_message ON notifications (provider_message_id);

-- The transactional outbox: written in the same transaction as the notification.
CREATE TABLE sms_outbox (
    notification_id TEXT PRIMARY KEY,
    next_attempt_ms BIGINT NOT NULL,
    lease_owner TEXT NOT NULL,
    lease_until_ms BIGINT NOT NULL,
    last_error TEXT NOT NULL
);
CREATE INDEX sms_outbox_due ON sms_outbox (next_attempt_ms);

-- Personal-cabinet inbox.
CREATE TABLE inbox_items (
    id TEXT PRIMARY KEY,
    iin TEXT NOT NULL,
    template_id TEXT NOT NULL,
    language TEXT NOT NULL,
    text TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    read_ms BIGINT NOT NULL
);
CREATE INDEX inbox_items_by_iin ON inbox_items (iin, id);

-- Reply windows opened by an SMS (e.g. a housing offer, 48 hours).
CREATE TABLE conversations (
    id TEXT PRIMARY KEY,
    notification_id TEXT NOT NULL,
    phone TEXT NOT NULL,
    recipient_iin TEXT NOT NULL,
    language TEXT NOT NULL,
    reply_participant TEXT NOT NULL,
    accepted_codes TEXT NOT NULL,
    correlation_id TEXT NOT NULL,
    expires_ms BIGINT NOT NULL,
    closed_ms BIGINT NOT NULL,
    created_ms BIGINT NOT NULL
);
CREATE INDEX conversations_by_phone ON conversations (phone, expires_ms);

-- Incoming SMS; routed replies wait here until the gateway has accepted them.
CREATE TABLE inbound_replies (
    id TEXT PRIMARY KEY,
    provider_message_id TEXT NOT NULL,
    from_phone TEXT NOT NULL,
    text TEXT NOT NULL,
    code TEXT NOT NULL,
    outcome TEXT NOT NULL,
    conversation_id TEXT NOT NULL,
    answer_notification_id TEXT NOT NULL,
    forward_pending BIGINT NOT NULL,
    forward_attempts BIGINT NOT NULL,
    forward_next_ms BIGINT NOT NULL,
    forward_error TEXT NOT NULL,
    received_ms BIGINT NOT NULL
);
CREATE INDEX inbound_replies_pending ON inbound_replies (forward_pending, forward_next_ms);
-- A provider that posts one SMS twice at once gets one reply row.
CREATE UNIQUE INDEX inbound_replies_provider ON inbound_replies (provider_message_id) WHERE provider_message_id <> '';

-- One-time passwords: only a salted hash of the code is stored.
CREATE TABLE otps (
    id TEXT PRIMARY KEY,
    phone TEXT NOT NULL,
    purpose TEXT NOT NULL,
    salt BLOB NOT NULL,
    code_hash BLOB NOT NULL,
    attempts BIGINT NOT NULL,
    max_attempts BIGINT NOT NULL,
    used BIGINT NOT NULL,
    issued_ms BIGINT NOT NULL,
    expires_ms BIGINT NOT NULL
);
CREATE INDEX otps_by_phone ON otps (phone, issued_ms);
