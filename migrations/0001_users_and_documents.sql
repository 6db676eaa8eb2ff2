-- Users and their documents: the data model services already use, with stricter types.
-- depends:

CREATE TABLE users (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    email TEXT NOT NULL
        CONSTRAINT users_email_check CHECK (char_length(email) BETWEEN 3 AND 320),
    -- SHA-256 digest of the API key; the key itself is shown once and never stored.
    -- NULL means the user has no working key.
    api_key_hash BYTEA
        CONSTRAINT users_api_key_hash_check CHECK (octet_length(api_key_hash) = 32),
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT users_api_key_hash_key UNIQUE (api_key_hash)
);

-- Emails are unique whatever their case; lookups use lower(email) too.
CREATE UNIQUE INDEX users_email_lower_key ON users (lower(email));

CREATE TABLE documents (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id BIGINT NOT NULL
        CONSTRAINT documents_user_id_fkey REFERENCES users (id) ON DELETE CASCADE,
    filename VARCHAR(255) NOT NULL
        CONSTRAINT documents_filename_check CHECK (filename <> ''),
    s3_key VARCHAR(512) NOT NULL
        CONSTRAINT documents_s3_key_check CHECK (s3_key <> ''),
    status TEXT NOT NULL DEFAULT 'PENDING'
        CONSTRAINT documents_status_check
        CHECK (status IN ('PENDING', 'PROCESSING', 'COMPLETED', 'FAILED')),
    result_text TEXT,
    error_message TEXT,
    page_count INTEGER
        CONSTRAINT documents_page_count_check CHECK (page_count >= 0),
    extraction_time_seconds DOUBLE PRECISION
        CONSTRAINT documents_extraction_time_seconds_check CHECK (extraction_time_seconds >= 0),
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    started_at TIMESTAMPTZ,
    completed_at TIMESTAMPTZ
);

CREATE INDEX documents_user_id_status_idx ON documents (user_id, status);
CREATE INDEX documents_created_at_idx ON documents (created_at);
CREATE INDEX documents_status_idx ON documents (status);
