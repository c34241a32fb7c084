CREATE TABLE vacancies (
    vacancy_id TEXT PRIMARY KEY,
    position TEXT NOT NULL,
    rank BIGINT NOT NULL,
    branch TEXT NOT NULL,
    unit TEXT NOT NULL,
    region_kato TEXT NOT NULL,
    places BIGINT NOT NULL,
    requirements TEXT NOT NULL,
    state BIGINT NOT NULL,
    create_time_ms BIGINT NOT NULL,
    close_time_ms BIGINT NOT NULL
);
CREATE INDEX vacancies_by_time ON vacancies (create_time_ms, vacancy_id);

-- active_key is '<vacancy_id>/<candidate_iin>' while the application is active and NULL once it
-- is completed or rejected: the UNIQUE constraint allows one active application per candidate per
-- vacancy on both dialects (NULLs never collide).
CREATE TABLE applications (
    application_id TEXT PRIMARY KEY,
    vacancy_id TEXT NOT NULL REFERENCES vacancies (vacancy_id),
    candidate_iin TEXT NOT NULL,
    active_key TEXT UNIQUE,
    state BIGINT NOT NULL,
    candidate_status BIGINT NOT NULL,
    version BIGINT NOT NULL,
    consent_id TEXT NOT NULL,
    phone_number TEXT NOT NULL,
    language TEXT NOT NULL,
    signature_kind TEXT NOT NULL,
    signature_reference TEXT NOT NULL,
    rejection_reason TEXT NOT NULL,
    assignee_user_id TEXT NOT NULL,
    registered_region_kato TEXT NOT NULL,
    dossier_json TEXT NOT NULL,
    dossier_incomplete BIGINT NOT NULL,
    dossier_missing TEXT NOT NULL,
    medical_data_json TEXT NOT NULL,
    ddo_region_kato TEXT NOT NULL,
    appointment_address TEXT NOT NULL,
    appointment_time_ms BIGINT NOT NULL,
    medical_outcome BIGINT NOT NULL,
    medical_conclusion BLOB,
    medical_signer_serial TEXT NOT NULL,
    agreement_document BLOB,
    candidate_signer_serial TEXT NOT NULL,
    head_signer_serial TEXT NOT NULL,
    order_unit TEXT NOT NULL,
    order_time_ms BIGINT NOT NULL,
    order_place TEXT NOT NULL,
    deadline_role TEXT NOT NULL,
    deadline_ms BIGINT NOT NULL,
    executor_deadline_ms BIGINT NOT NULL,
    chair_deadline_ms BIGINT NOT NULL,
    create_time_ms BIGINT NOT NULL,
    update_time_ms BIGINT NOT NULL
);
CREATE INDEX applications_by_candidate ON applications (candidate_iin, create_time_ms);
CREATE INDEX applications_by_state ON applications (state, deadline_ms);
CREATE INDEX applications_by_assignee ON applications (assignee_user_id, state);

-- One row per transition, written in the transaction of the transition; due_* is the deadline of
-- the step entered, kept per step for audits.
CREATE TABLE application_events (
    event_id TEXT PRIMARY KEY,
    application_id TEXT NOT NULL REFERENCES applications (application_id),
    sequence BIGINT NOT NULL,
    actor TEXT NOT NULL,
    event_time_ms BIGINT NOT NULL,
    from_state BIGINT NOT NULL,
    to_state BIGINT NOT NULL,
    note TEXT NOT NULL,
    due_role TEXT NOT NULL,
    due_time_ms BIGINT NOT NULL,
    UNIQUE (application_id, sequence)
);

-- Transactional outbox: one SMS per candidate-visible status change, written with the
-- transition; a sender delivers it to notify through the gateway and stamps sent_time_ms.
CREATE TABLE notification_outbox (
    outbox_id TEXT PRIMARY KEY,
    application_id TEXT NOT NULL REFERENCES applications (application_id),
    template_id TEXT NOT NULL,
    recipient_iin TEXT NOT NULL,
    phone_number TEXT NOT NULL,
    language TEXT NOT NULL,
    parameters_json TEXT NOT NULL,
    create_time_ms BIGINT NOT NULL,
    attempts BIGINT NOT NULL,
    next_attempt_time_ms BIGINT NOT NULL,
    sent_time_ms BIGINT NOT NULL,
    last_error TEXT NOT NULL
);
CREATE INDEX notification_outbox_pending ON notification_outbox (sent_time_ms, next_attempt_time_ms);
