-- Personal-data consents confirmed by OTP, and the SMS outbox the OTPs wait in until notify
-- delivers them. OTPs are stored only as SHA-256 hashes.

CREATE TABLE consents (
    consent_id TEXT PRIMARY KEY,
    subject_iin TEXT NOT NULL,
    participant TEXT NOT NULL,
    purpose TEXT NOT NULL,
    scopes TEXT NOT NULL,
    state BIGINT NOT NULL,
    create_time_ms BIGINT NOT NULL,
    expire_time_ms BIGINT NOT NULL,
    confirm_time_ms BIGINT NOT NULL,
    revoke_time_ms BIGINT NOT NULL,
    otp_sha256 TEXT NOT NULL,
    otp_expire_time_ms BIGINT NOT NULL,
    failed_attempts BIGINT NOT NULL
);
CREATE INDEX consents_subject ON consents (subject_iin, create_time_ms);

CREATE TABLE sms_outbox (
    message_id TEXT PRIMARY KEY,
    phone_number TEXT NOT NULL,
    subject_iin TEXT NOT NULL,
    consent_id TEXT NOT NULL,
    body TEXT NOT NULL,
    create_time_ms BIGINT NOT NULL
);
CREATE INDEX sms_outbox_consent ON sms_outbox (consent_id);
