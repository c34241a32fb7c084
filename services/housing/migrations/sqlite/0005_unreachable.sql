-- A person whose offer SMS could not be delivered is skipped by rounds until this time.
ALTER TABLE registrants ADD COLUMN unreachable_until_ms BIGINT NOT NULL DEFAULT 0;
