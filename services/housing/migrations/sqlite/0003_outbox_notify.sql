-- What notify needs to send an outbox message: the template and its parameters (a JSON object of
-- strings), the correlation id of the reply window (the offer id) and when that window closes.
ALTER TABLE outbox ADD COLUMN template_id TEXT NOT NULL DEFAULT '';
ALTER TABLE outbox ADD COLUMN parameters TEXT NOT NULL DEFAULT '{}';
ALTER TABLE outbox ADD COLUMN correlation_id TEXT NOT NULL DEFAULT '';
ALTER TABLE outbox ADD COLUMN expires_at_ms BIGINT NOT NULL DEFAULT 0;
