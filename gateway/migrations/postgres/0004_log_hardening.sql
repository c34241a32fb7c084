-- Message-log hardening (issue 14 item 2); docs/message-log.md.

-- A subject is found through its subject_access rows (one per person an entry names, of every
-- entry, not only personal-data ones): an index over the entries' whole subject list refused
-- lists longer than about 206 IINs on PostgreSQL (a btree row holds at most 2,704 bytes) and
-- failed every entry of the batch with it.
DROP INDEX message_log_entries_by_subject_time;
-- 1: the access was to personal data (ListSubjectAccess shows only those); 0: the entry named
-- the person on a route without personal data (found by ListEntries filtered by subject).
ALTER TABLE subject_access ADD COLUMN personal_data BIGINT NOT NULL DEFAULT 1;
