-- Worker leases, retries, key usage, keyset pagination and full-text search.
-- depends: 0001_users_and_documents

ALTER TABLE users
    ADD COLUMN api_key_last_used_at TIMESTAMPTZ,
    ADD COLUMN updated_at TIMESTAMPTZ NOT NULL DEFAULT now();

ALTER TABLE documents
    ADD COLUMN updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    ADD COLUMN worker_id TEXT,
    ADD COLUMN lease_expires_at TIMESTAMPTZ,
    ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0
        CONSTRAINT documents_attempts_check CHECK (attempts >= 0),
    ADD COLUMN max_attempts INTEGER NOT NULL DEFAULT 3
        CONSTRAINT documents_max_attempts_check CHECK (max_attempts >= 1),
    -- Only a bounded prefix is indexed: to_tsvector fails on very long texts
    -- ("string is too long for tsvector", 1 MB limit), and 200,000 characters of even
    -- hostile text (all distinct short words) stays well under it.
    ADD COLUMN search_vector TSVECTOR GENERATED ALWAYS AS (
        to_tsvector('english'::regconfig, left(coalesce(result_text, ''), 200000))
    ) STORED;

-- Keyset pagination of a user's documents, newest first.
CREATE INDEX documents_user_id_created_at_id_idx ON documents (user_id, created_at DESC, id DESC);
-- claim_next takes the oldest pending document.
CREATE INDEX documents_pending_created_at_idx ON documents (created_at, id)
    WHERE status = 'PENDING';
-- requeue_expired finds leases that ran out.
CREATE INDEX documents_processing_lease_idx ON documents (lease_expires_at)
    WHERE status = 'PROCESSING';
CREATE INDEX documents_search_vector_idx ON documents USING GIN (search_vector);
