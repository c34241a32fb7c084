-- Async delivery: why a message ended as it did, and the retention sweep of final messages.

-- The ErrorInfo-style reason of a final state (DELIVERY_STOPPED: SENDER_NOT_REGISTERED,
-- ACCESS_DENIED, CONSENT_REQUIRED, MESSAGE_EXPIRED, …); empty while on delivery and when delivered.
ALTER TABLE async_messages ADD COLUMN reason TEXT NOT NULL DEFAULT '';

-- The retention sweep (gateway.async_retention_hours): final messages, oldest first.
CREATE INDEX async_messages_finished ON async_messages (finished_ms);
