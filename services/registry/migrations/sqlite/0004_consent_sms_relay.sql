-- The consent OTP SMS are handed to notify (template consent.otp): its parameters, when notify took
-- the message (the OTP is then blanked here), or when and why it refused it for good.
ALTER TABLE sms_outbox ADD COLUMN parameters TEXT NOT NULL DEFAULT '{}';
ALTER TABLE sms_outbox ADD COLUMN sent_time_ms BIGINT;
ALTER TABLE sms_outbox ADD COLUMN refused_time_ms BIGINT;
ALTER TABLE sms_outbox ADD COLUMN refusal TEXT NOT NULL DEFAULT '';
