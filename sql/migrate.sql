-- Moving the legacy Redis tasks into PostgreSQL (docstore.migrate).
-- One batch = one transaction: create the staging table, COPY into it, create the missing users,
-- insert the documents that are not there yet. A re-run skips what a previous run committed.

-- name: migrate_create_staging
-- A temporary table for one batch of legacy tasks, dropped when the transaction ends.
CREATE TEMPORARY TABLE migrate_staging (
    legacy_task_id TEXT NOT NULL,
    user_email TEXT NOT NULL,
    filename TEXT NOT NULL,
    s3_key TEXT NOT NULL,
    status TEXT NOT NULL,
    result_text TEXT,
    error_message TEXT,
    page_count INTEGER,
    extraction_time_seconds DOUBLE PRECISION,
    created_at TIMESTAMPTZ,
    started_at TIMESTAMPTZ,
    completed_at TIMESTAMPTZ
) ON COMMIT DROP;

-- name: migrate_copy_staging
-- COPY target for a batch of legacy tasks (columns in the order the writer sends them).
COPY migrate_staging (
    legacy_task_id, user_email, filename, s3_key, status, result_text, error_message,
    page_count, extraction_time_seconds, created_at, started_at, completed_at
) FROM STDIN;

-- name: migrate_insert_users
-- Create the owners of the staged tasks that do not exist yet (emails match case-insensitively).
-- Sorted, so that writers running side by side wait for each other but never deadlock.
INSERT INTO users (email)
SELECT DISTINCT ON (lower(s.user_email)) s.user_email
FROM migrate_staging AS s
ORDER BY lower(s.user_email), s.user_email
ON CONFLICT ((lower(email))) DO NOTHING;

-- name: migrate_insert_documents
-- Insert the staged tasks as documents, skipping task ids that are already migrated.
INSERT INTO documents (
    user_id, filename, s3_key, status, result_text, error_message, page_count,
    extraction_time_seconds, created_at, started_at, completed_at, legacy_task_id,
    worker_id, lease_expires_at, attempts
)
SELECT
    u.id, s.filename, s.s3_key, s.status, s.result_text, s.error_message, s.page_count,
    s.extraction_time_seconds, coalesce(s.created_at, now()), s.started_at, s.completed_at,
    s.legacy_task_id,
    -- A task the legacy service had in flight counts as one attempt whose lease has already
    -- run out (derived from the task, so a re-run writes the same row): requeue_stuck hands
    -- it to a new worker instead of leaving it PROCESSING forever.
    CASE WHEN s.status = 'PROCESSING' THEN 'legacy-service' END,
    CASE WHEN s.status = 'PROCESSING' THEN coalesce(s.started_at, s.created_at, now()) END,
    CASE WHEN s.status = 'PROCESSING' THEN 1 ELSE 0 END
FROM migrate_staging AS s
JOIN users AS u ON lower(u.email) = lower(s.user_email)
-- Writers running side by side take row locks in one order: no deadlock.
ORDER BY s.legacy_task_id
ON CONFLICT (legacy_task_id) DO NOTHING;

-- name: migrate_count_present
-- How many of these legacy task ids are already migrated (dry runs).
SELECT count(*)
FROM documents
WHERE legacy_task_id = ANY(%(task_ids)s::text[]);

-- name: migrate_fetch_migrated
-- The migrated documents of these legacy task ids, with a digest of the text (verify).
SELECT
    d.legacy_task_id,
    lower(u.email) AS user_email,
    d.filename,
    d.s3_key,
    d.status,
    md5(d.result_text) AS result_md5,
    d.error_message,
    d.page_count,
    d.extraction_time_seconds,
    d.created_at,
    d.started_at,
    d.completed_at
FROM documents AS d
JOIN users AS u ON u.id = d.user_id
WHERE d.legacy_task_id = ANY(%(task_ids)s::text[]);

-- name: migrate_missing_schema
-- The tables (or, where the table exists, the columns) the migration needs that are missing.
SELECT
    CASE
        WHEN to_regclass(needed.table_name) IS NULL THEN needed.table_name
        ELSE needed.table_name || '.' || needed.column_name
    END AS missing
FROM (VALUES (1, 'users', 'email'), (2, 'documents', 'legacy_task_id'))
    AS needed (position, table_name, column_name)
WHERE NOT EXISTS (
    SELECT 1
    FROM pg_attribute AS a
    WHERE a.attrelid = to_regclass(needed.table_name)
        AND a.attname = needed.column_name
        AND NOT a.attisdropped
)
ORDER BY needed.position;
