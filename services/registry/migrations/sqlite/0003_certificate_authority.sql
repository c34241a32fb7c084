-- The test national certification authority: its own key (test CA only) and every certificate
-- it issued, with revocation.

CREATE TABLE ca_keys (
    ca_id TEXT PRIMARY KEY,
    certificate_pem TEXT NOT NULL,
    key_pem TEXT NOT NULL,
    create_time_ms BIGINT NOT NULL
);

CREATE TABLE certificates (
    serial_hex TEXT PRIMARY KEY,
    iin TEXT NOT NULL,
    holder_kind BIGINT NOT NULL,
    full_name TEXT NOT NULL,
    organization TEXT NOT NULL,
    not_before_ms BIGINT NOT NULL,
    not_after_ms BIGINT NOT NULL,
    certificate_pem TEXT NOT NULL,
    issue_time_ms BIGINT NOT NULL,
    revoke_time_ms BIGINT NOT NULL,
    revocation_reason TEXT NOT NULL
);
CREATE INDEX certificates_iin ON certificates (iin);
