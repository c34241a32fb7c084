-- The housing-need register: queue order is (reported_at_ms, iin).
CREATE TABLE registrants (
    iin TEXT PRIMARY KEY,
    full_name TEXT NOT NULL,
    phone TEXT NOT NULL,
    reported_at_ms BIGINT NOT NULL,
    locality_kato TEXT NOT NULL,
    family_size BIGINT NOT NULL,
    status TEXT NOT NULL,
    removal_reason TEXT,
    norm_matching_only BIGINT NOT NULL DEFAULT 0,
    has_open_offer BIGINT NOT NULL DEFAULT 0,
    created_at_ms BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL
);
CREATE INDEX registrants_queue ON registrants (status, locality_kato, reported_at_ms, iin);

-- The service-housing stock.
CREATE TABLE dwellings (
    id TEXT PRIMARY KEY,
    address TEXT NOT NULL,
    locality_kato TEXT NOT NULL,
    rooms BIGINT NOT NULL,
    total_area_m2 DOUBLE PRECISION NOT NULL,
    status TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL
);
CREATE INDEX dwellings_status ON dwellings (status, locality_kato, created_at_ms, id);

-- Offers; a refused or expired offer is the refusal record.
CREATE TABLE offers (
    id TEXT PRIMARY KEY,
    dwelling_id TEXT NOT NULL REFERENCES dwellings (id),
    iin TEXT NOT NULL REFERENCES registrants (iin),
    phone TEXT NOT NULL,
    offered_at_ms BIGINT NOT NULL,
    deadline_ms BIGINT NOT NULL,
    status TEXT NOT NULL,
    reply_code BIGINT NOT NULL DEFAULT 0,
    closed_at_ms BIGINT
);
-- The database itself guarantees one open offer per dwelling and per person.
CREATE UNIQUE INDEX offers_one_open_per_dwelling ON offers (dwelling_id) WHERE status = 'OPEN';
CREATE UNIQUE INDEX offers_one_open_per_person ON offers (iin) WHERE status = 'OPEN';
CREATE INDEX offers_status_deadline ON offers (status, deadline_ms);
CREATE INDEX offers_pair ON offers (dwelling_id, iin);

-- Transactional outbox: SMS offers and personal-cabinet notices, written in the same transaction
-- as the decision they announce, sent by a relay.
CREATE TABLE outbox (
    id TEXT PRIMARY KEY,
    created_at_ms BIGINT NOT NULL,
    channel TEXT NOT NULL,
    iin TEXT NOT NULL,
    phone TEXT NOT NULL,
    body TEXT NOT NULL,
    sent_at_ms BIGINT
);
CREATE INDEX outbox_unsent ON outbox (sent_at_ms, created_at_ms);

-- Proactive review runs (seed 002) and the removals they made.
CREATE TABLE review_runs (
    id TEXT PRIMARY KEY,
    started_at_ms BIGINT NOT NULL,
    finished_at_ms BIGINT,
    persons_checked BIGINT NOT NULL DEFAULT 0,
    persons_removed BIGINT NOT NULL DEFAULT 0
);
CREATE TABLE removals (
    iin TEXT NOT NULL REFERENCES registrants (iin),
    review_id TEXT NOT NULL REFERENCES review_runs (id),
    reason TEXT NOT NULL,
    removed_at_ms BIGINT NOT NULL,
    PRIMARY KEY (iin, review_id)
);
CREATE INDEX removals_reason ON removals (reason, removed_at_ms);

-- One row that every allocation round locks first, so two rounds never plan at the same time.
CREATE TABLE allocation_lock (
    id BIGINT PRIMARY KEY,
    round_id TEXT NOT NULL,
    locked_at_ms BIGINT NOT NULL
);
INSERT INTO allocation_lock (id, round_id, locked_at_ms) VALUES (1, '', 0);
