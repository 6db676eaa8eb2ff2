-- A shared service: idempotent submissions, cancelled documents, and blob deletions that are
-- retried until done.
-- depends: 0003_legacy_task_id

-- Blobs of deleted documents, deleted from the blob store after the rows are gone (never before:
-- no row may point at nothing). A delete that fails stays here and is retried with a backoff.
CREATE TABLE blob_deletions (
    s3_key VARCHAR(512) PRIMARY KEY
        CONSTRAINT blob_deletions_s3_key_check CHECK (s3_key <> ''),
    requested_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    attempts INTEGER NOT NULL DEFAULT 0
        CONSTRAINT blob_deletions_attempts_check CHECK (attempts >= 0),
    next_attempt_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_error TEXT
);

CREATE INDEX blob_deletions_next_attempt_at_idx ON blob_deletions (next_attempt_at);
-- A blob still named by another document (a migrated key, a copied row) is never deleted.
CREATE INDEX documents_s3_key_idx ON documents (s3_key);

-- Cancelled: a PENDING document is never processed, a PROCESSING one stops at its worker's next
-- progress report or heartbeat, and a late result is refused (its UPDATE wants PROCESSING).
ALTER TABLE documents
    DROP CONSTRAINT documents_status_check,
    ADD CONSTRAINT documents_status_check
        CHECK (status IN ('PENDING', 'PROCESSING', 'COMPLETED', 'FAILED', 'CANCELLED'));

-- Idempotent submissions: the same key from the same user is the same document; the digest of
-- the bytes tells a retry (same content) from a reuse of the key for other content.
ALTER TABLE documents
    ADD COLUMN idempotency_key TEXT
        CONSTRAINT documents_idempotency_key_check
        CHECK (char_length(idempotency_key) BETWEEN 1 AND 255),
    ADD COLUMN content_sha256 BYTEA
        CONSTRAINT documents_content_sha256_check CHECK (octet_length(content_sha256) = 32),
    ADD CONSTRAINT documents_idempotency_key_key UNIQUE (user_id, idempotency_key);
