-- What the legacy migration wrote, per task: catch-up re-runs update a document only while it
-- still holds what the migration wrote, and report the others as conflicts.
-- depends: 0003_legacy_task_id

-- One row per migrated legacy task. It outlives its document: a document docstore deleted after
-- the migration wrote it is told apart from a task never migrated (a re-run must not bring it
-- back).
CREATE TABLE legacy_migrations (
    legacy_task_id TEXT PRIMARY KEY
        CONSTRAINT legacy_migrations_legacy_task_id_check
        CHECK (char_length(legacy_task_id) BETWEEN 1 AND 512),
    -- MD5 of the legacy task as the migration read it (computed by docstore.migrate).
    source_md5 BYTEA NOT NULL
        CONSTRAINT legacy_migrations_source_md5_check CHECK (octet_length(source_md5) = 16),
    -- legacy_document_fingerprint of the document as the migration left it.
    written_md5 BYTEA NOT NULL
        CONSTRAINT legacy_migrations_written_md5_check CHECK (octet_length(written_md5) = 16),
    migrated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- MD5 of what a document holds: the columns the migration writes and those docstore changes
-- (updated_at changes with every docstore write). Timestamps as epoch seconds and the double as
-- its bytes, so that the digest does not depend on the session's TimeZone or extra_float_digits.
CREATE FUNCTION legacy_document_fingerprint(d documents) RETURNS BYTEA
LANGUAGE sql STABLE STRICT PARALLEL SAFE
AS $$
    SELECT decode(md5(ROW(
        d.user_id, d.filename, d.s3_key, d.status, d.result_text, d.error_message, d.page_count,
        float8send(d.extraction_time_seconds), extract(EPOCH FROM d.created_at),
        extract(EPOCH FROM d.started_at), extract(EPOCH FROM d.completed_at),
        extract(EPOCH FROM d.updated_at), d.worker_id, extract(EPOCH FROM d.lease_expires_at),
        d.attempts, d.max_attempts
    )::text), 'hex')
$$;
