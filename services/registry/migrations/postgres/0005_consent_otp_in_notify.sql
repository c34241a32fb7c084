-- Consent codes are kept by notify's OtpService: the consent row keeps notify's OTP id (empty for a
-- consent requested before, which can no longer be confirmed). The registry's own code hash, its
-- attempt counter and its SMS outbox (whose unsent rows held codes in clear) are dropped.
ALTER TABLE consents ADD COLUMN otp_id TEXT NOT NULL DEFAULT '';
ALTER TABLE consents DROP COLUMN otp_sha256;
ALTER TABLE consents DROP COLUMN failed_attempts;
DROP TABLE sms_outbox;
