-- A shared service: fair turns across users, retries after a backoff with a readable history of
-- attempts, idempotent submissions, cancelled documents, and blob deletions retried until done.
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

-- Retry backoff: a failed attempt (or a lease that ran out) leaves the document PENDING with the
-- time its next attempt is due; it is not handed out before.
ALTER TABLE documents
    ADD COLUMN next_attempt_at TIMESTAMPTZ;

-- Documents waiting for their next attempt, by due time (due ones are handed out).
CREATE INDEX documents_retry_due_idx ON documents (next_attempt_at)
    WHERE status = 'PENDING' AND next_attempt_at IS NOT NULL;

-- Every finished attempt: who worked on it, from when to when, how it ended and why.
CREATE TABLE document_attempts (
    document_id BIGINT NOT NULL
        CONSTRAINT document_attempts_document_id_fkey REFERENCES documents (id) ON DELETE CASCADE,
    attempt INTEGER NOT NULL
        CONSTRAINT document_attempts_attempt_check CHECK (attempt >= 1),
    worker_id TEXT NOT NULL,
    started_at TIMESTAMPTZ NOT NULL,
    ended_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    outcome TEXT NOT NULL
        CONSTRAINT document_attempts_outcome_check
        CHECK (outcome IN ('completed', 'retrying', 'failed', 'expired', 'cancelled')),
    error_message TEXT,
    CONSTRAINT document_attempts_pkey PRIMARY KEY (document_id, attempt)
);

-- Fair turns: a document's turn is the round in which its user is served. A user's documents
-- take consecutive turns from the current round (the lowest turn waiting) or from just after the
-- user's previous one, whichever is later, so that each round serves every waiting user once,
-- each user's own documents oldest first. Documents waiting now get their turns per user.
ALTER TABLE documents
    ADD COLUMN turn BIGINT NOT NULL DEFAULT 0;

UPDATE documents AS d
SET turn = numbered.turn
FROM (
    SELECT id, row_number() OVER (PARTITION BY user_id ORDER BY created_at, id) - 1 AS turn
    FROM documents
    WHERE status = 'PENDING'
) AS numbered
WHERE d.id = numbered.id;

-- claim_next takes the lowest turn among documents ready now (one index probe however long the
-- backlog: documents waiting for a retry are in documents_retry_due_idx instead).
CREATE INDEX documents_ready_turn_idx ON documents (turn, id)
    WHERE status = 'PENDING' AND next_attempt_at IS NULL;

-- The turn of a user's next document: the later of the current round (the lowest turn ready, or
-- the newest document's when none is) and just after the user's previous document. One
-- definition for every insert (single, idempotent, batched).
CREATE FUNCTION document_next_turn(owner BIGINT) RETURNS BIGINT
LANGUAGE sql STABLE AS $$
    SELECT greatest(
        coalesce(
            (
                SELECT turn
                FROM documents
                WHERE status = 'PENDING' AND next_attempt_at IS NULL
                ORDER BY turn
                LIMIT 1
            ),
            (SELECT turn FROM documents ORDER BY id DESC LIMIT 1),
            0
        ),
        coalesce(
            (
                SELECT turn + 1
                FROM documents
                WHERE user_id = owner
                ORDER BY created_at DESC, id DESC
                LIMIT 1
            ),
            0
        )
    )
$$;
