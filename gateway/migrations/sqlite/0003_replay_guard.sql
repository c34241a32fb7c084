-- Message ids seen within the replay window, shared by every gateway replica on this database
-- (gateway.replay_guard = "shared"): a replay sent to another replica is refused too.
CREATE TABLE replay_guard (
    sender TEXT NOT NULL,
    message_id TEXT NOT NULL,
    expires_ms BIGINT NOT NULL,
    PRIMARY KEY (sender, message_id)
);
CREATE INDEX replay_guard_expiry ON replay_guard (expires_ms);
