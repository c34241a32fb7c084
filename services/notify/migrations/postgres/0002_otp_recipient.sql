-- The IIN a code was issued for (empty when it went to a bare phone), so a verifier can demand that
-- the code confirms this person and not merely someone.
ALTER TABLE otps ADD COLUMN recipient_iin TEXT NOT NULL DEFAULT '';
