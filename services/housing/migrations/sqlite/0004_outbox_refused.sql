-- A message notify refuses for good (its content, not an outage) is parked here instead of holding
-- back every message behind it: when, and why (code and message).
ALTER TABLE outbox ADD COLUMN refused_at_ms BIGINT;
ALTER TABLE outbox ADD COLUMN refusal TEXT NOT NULL DEFAULT '';
