-- PDF copies of documents the registries cannot give yet, filed with the application.
CREATE TABLE application_attachments (
    attachment_id TEXT PRIMARY KEY,
    application_id TEXT NOT NULL REFERENCES applications (application_id),
    position BIGINT NOT NULL,
    file_name TEXT NOT NULL,
    content_type TEXT NOT NULL,
    description TEXT NOT NULL,
    size_bytes BIGINT NOT NULL,
    sha256 TEXT NOT NULL,
    content BYTEA NOT NULL,
    create_time_ms BIGINT NOT NULL
);
CREATE INDEX application_attachments_by_application ON application_attachments (application_id, position);
