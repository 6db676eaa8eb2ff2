-- Moving the legacy Redis tasks into PostgreSQL (docstore.migrate).
-- One batch = one transaction: plan (which tasks are new, changed in Redis since the migration
-- wrote them, or unchanged), create the missing users, COPY the new documents, update the
-- changed ones that still hold what the migration wrote, and record in legacy_migrations what
-- was written. Unchanged tasks cost no write; a re-run converges to the result of one run.

-- name: migrate_plan
-- The tasks of a batch that need more than a look, and why: new; migrated before the ledger
-- existed (unrecorded); changed in Redis since the migration wrote them, with whether their
-- document still holds what it wrote (changed) or not (touched, deleted). Tasks unchanged since
-- the run that wrote them are not returned. Each LATERAL ... LIMIT 1 is one index probe per task:
-- as a plain join the planner may scan the whole ledger per batch, quadratic over a run.
WITH stale AS (
    SELECT
        b.legacy_task_id,
        l.written_md5,
        l.legacy_task_id IS NOT NULL AS recorded
    FROM unnest(%(task_ids)b::text[], %(source_md5s)b::bytea[]) AS b (legacy_task_id, source_md5)
    LEFT JOIN LATERAL (
        SELECT l.legacy_task_id, l.source_md5, l.written_md5
        FROM legacy_migrations AS l
        WHERE l.legacy_task_id = b.legacy_task_id
        LIMIT 1
    ) AS l ON true
    WHERE l.source_md5 IS DISTINCT FROM b.source_md5
)
SELECT
    s.legacy_task_id,
    CASE
        WHEN NOT s.recorded AND d.id IS NULL THEN 'new'
        WHEN NOT s.recorded THEN 'unrecorded'
        WHEN d.id IS NULL THEN 'deleted'
        WHEN d.fingerprint <> s.written_md5 THEN 'touched'
        ELSE 'changed'
    END AS state
FROM stale AS s
LEFT JOIN LATERAL (
    SELECT d.id, legacy_document_fingerprint(d) AS fingerprint
    FROM documents AS d
    WHERE d.legacy_task_id = s.legacy_task_id
    LIMIT 1
) AS d ON true;

-- name: migrate_ledger_is_empty
-- True before the first run has written anything: no task can be unchanged since a run yet.
SELECT NOT EXISTS (SELECT FROM legacy_migrations) AS empty;

-- name: migrate_unchanged_raw
-- The tasks of a batch whose bytes in Redis are those the run that wrote them read (equal raw
-- digests): unchanged, so the reader does not even parse them. One index probe per task.
SELECT b.legacy_task_id
FROM unnest(%(task_ids)b::text[], %(raw_md5s)b::bytea[]) AS b (legacy_task_id, raw_md5)
JOIN LATERAL (
    SELECT l.source_raw_md5
    FROM legacy_migrations AS l
    WHERE l.legacy_task_id = b.legacy_task_id
    LIMIT 1
) AS l ON l.source_raw_md5 = b.raw_md5;

-- name: migrate_record_raw
-- The raw digests of tasks whose meaning is unchanged but whose bytes are not those recorded
-- (a JSON task re-serialized, a ledger row from before migration 0006); equal rows are not
-- written.
UPDATE legacy_migrations AS l
SET source_raw_md5 = b.raw_md5
FROM unnest(%(task_ids)b::text[], %(raw_md5s)b::bytea[]) AS b (legacy_task_id, raw_md5)
-- ANY: the ledger rows by index (joined only to b, the planner hashes the whole ledger).
WHERE l.legacy_task_id = ANY(%(task_ids)b::text[])
    AND l.legacy_task_id = b.legacy_task_id
    AND l.source_raw_md5 IS DISTINCT FROM b.raw_md5;

-- name: migrate_insert_users
-- Create the owners of a batch that do not exist yet (emails match case-insensitively).
-- Sorted, so that writers running side by side wait for each other but never deadlock.
INSERT INTO users (email)
SELECT DISTINCT e.email
FROM unnest(%(emails)b::text[]) AS e (email)
ORDER BY e.email
ON CONFLICT ((lower(email))) DO NOTHING;

-- name: migrate_user_ids
-- The ids of a batch's owners, by lower-case email, with the turn their next document takes
-- (fair turns: see document_next_turn in migration 0005).
SELECT lower(email) AS email, id, document_next_turn(id) AS next_turn
FROM users
WHERE lower(email) = ANY(%(emails)b::text[]);

-- name: migrate_copy_documents
-- COPY target for the new documents of a batch (sorted by legacy task id: writers side by side
-- wait on a duplicate in one order, never deadlock). A task the legacy service had in flight is
-- one attempt whose lease has already run out, so requeue_stuck hands it to a new worker.
-- Waiting and in-flight documents take their owner's next turns, oldest first, as submitted
-- ones do: a migrated backlog is handed out in fair turns, not all in turn 0.
COPY documents (
    user_id, filename, s3_key, status, result_text, error_message, page_count,
    extraction_time_seconds, created_at, started_at, completed_at, legacy_task_id,
    worker_id, lease_expires_at, attempts, turn
) FROM STDIN;

-- name: migrate_record_written
-- Record what the migration wrote for these tasks: the digests of each task as read (parsed and
-- raw) and the fingerprint of its document as it now stands (new rows and adopted pre-ledger
-- rows). One index probe per task (see migrate_plan): as a plain join, the planner, misled by
-- the statistics of a table loading fast, hashed all of documents for every batch.
INSERT INTO legacy_migrations (legacy_task_id, source_md5, source_raw_md5, written_md5)
SELECT b.legacy_task_id, b.source_md5, b.source_raw_md5, d.fingerprint
FROM unnest(
    %(task_ids)b::text[], %(source_md5s)b::bytea[], %(raw_md5s)b::bytea[]
) AS b (legacy_task_id, source_md5, source_raw_md5)
JOIN LATERAL (
    SELECT legacy_document_fingerprint(d) AS fingerprint
    FROM documents AS d
    WHERE d.legacy_task_id = b.legacy_task_id
    LIMIT 1
) AS d ON true
ORDER BY b.legacy_task_id
ON CONFLICT (legacy_task_id) DO UPDATE
SET source_md5 = excluded.source_md5,
    source_raw_md5 = excluded.source_raw_md5,
    written_md5 = excluded.written_md5,
    migrated_at = excluded.migrated_at,
    kept_docstore_at = NULL;

-- name: migrate_create_staging
-- A temporary table for the changed tasks of one batch, dropped when the transaction ends.
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
    completed_at TIMESTAMPTZ,
    source_md5 BYTEA NOT NULL,
    source_raw_md5 BYTEA
) ON COMMIT DROP;

-- name: migrate_copy_staging
-- COPY target for the changed tasks of a batch (columns in the order the writer sends them).
COPY migrate_staging (
    legacy_task_id, user_email, filename, s3_key, status, result_text, error_message,
    page_count, extraction_time_seconds, created_at, started_at, completed_at, source_md5,
    source_raw_md5
) FROM STDIN;

-- name: migrate_analyze_staging
-- Row counts for the planner: without them it takes the staging table for a few hundred rows
-- and, misled too by the statistics of a table loading fast, hashes all of documents and of
-- legacy_migrations for every batch instead of probing their indexes for the few changed tasks.
ANALYZE migrate_staging;

-- name: migrate_lock_changed
-- Lock the documents of the changed tasks, in one order, before checking and updating them:
-- docstore cannot change one between the check and the update.
SELECT d.legacy_task_id
FROM documents AS d
JOIN migrate_staging AS s ON s.legacy_task_id = d.legacy_task_id
ORDER BY d.legacy_task_id
FOR UPDATE OF d;

-- name: migrate_update_documents
-- Bring the documents of changed tasks up to date, as the first run would have written them,
-- but only those that still hold what the migration wrote; record the new versions. Returns
-- the task ids updated and their document ids (the others changed in docstore: conflicts).
WITH updated AS (
    UPDATE documents AS d
    SET user_id = u.id,
        filename = s.filename,
        s3_key = s.s3_key,
        status = s.status,
        result_text = s.result_text,
        error_message = s.error_message,
        page_count = s.page_count,
        extraction_time_seconds = s.extraction_time_seconds,
        -- Without a legacy created_at the first run used its own clock: kept.
        created_at = coalesce(s.created_at, d.created_at),
        started_at = s.started_at,
        completed_at = s.completed_at,
        worker_id = CASE WHEN s.status = 'PROCESSING' THEN 'legacy-service' END,
        lease_expires_at = CASE
            WHEN s.status = 'PROCESSING' THEN coalesce(s.started_at, s.created_at, d.created_at)
        END,
        attempts = CASE WHEN s.status = 'PROCESSING' THEN 1 ELSE 0 END,
        updated_at = now()
    FROM migrate_staging AS s
    JOIN users AS u ON lower(u.email) = lower(s.user_email)
    JOIN legacy_migrations AS l ON l.legacy_task_id = s.legacy_task_id
    WHERE d.legacy_task_id = s.legacy_task_id
        AND legacy_document_fingerprint(d) = l.written_md5
    RETURNING
        d.id, d.legacy_task_id, legacy_document_fingerprint(d) AS written_md5, s.source_md5,
        s.source_raw_md5
)
UPDATE legacy_migrations AS l
SET source_md5 = u.source_md5,
    source_raw_md5 = u.source_raw_md5,
    written_md5 = u.written_md5,
    migrated_at = now(),
    kept_docstore_at = NULL
FROM updated AS u
WHERE l.legacy_task_id = u.legacy_task_id
RETURNING l.legacy_task_id, u.id AS document_id;

-- name: migrate_fetch_migrated
-- The documents (and ledger rows) of these legacy task ids, with a digest of the text, whether
-- the migration recorded what it wrote, and whether docstore changed the document since.
SELECT
    b.legacy_task_id,
    d.id IS NOT NULL AS present,
    l.legacy_task_id IS NOT NULL AS recorded,
    l.legacy_task_id IS NOT NULL
        AND d.fingerprint IS DISTINCT FROM l.written_md5 AS changed_in_docstore,
    l.source_md5 AS ledger_source_md5,
    l.kept_docstore_at,
    lower(u.email) AS user_email,
    d.filename,
    d.s3_key,
    d.status,
    d.result_md5,
    d.error_message,
    d.page_count,
    d.extraction_time_seconds,
    d.created_at,
    d.started_at,
    d.completed_at
FROM unnest(%(task_ids)b::text[]) AS b (legacy_task_id)
-- One index probe per task, whatever the planner thinks of the table sizes (see migrate_plan).
LEFT JOIN LATERAL (
    SELECT
        d.id, d.user_id, d.filename, d.s3_key, d.status, md5(d.result_text) AS result_md5,
        d.error_message, d.page_count, d.extraction_time_seconds, d.created_at, d.started_at,
        d.completed_at, legacy_document_fingerprint(d) AS fingerprint
    FROM documents AS d
    WHERE d.legacy_task_id = b.legacy_task_id
    LIMIT 1
) AS d ON true
LEFT JOIN users AS u ON u.id = d.user_id
LEFT JOIN LATERAL (
    SELECT l.legacy_task_id, l.written_md5, l.source_md5, l.kept_docstore_at
    FROM legacy_migrations AS l
    WHERE l.legacy_task_id = b.legacy_task_id
    LIMIT 1
) AS l ON true
WHERE d.id IS NOT NULL OR l.legacy_task_id IS NOT NULL;

-- name: migrate_keep_docstore
-- The operator keeps docstore's version of a task in conflict: the ledger takes the digests of
-- the legacy task as it now stands, so runs skip it and --verify counts it as kept until it
-- changes in Redis again. Only while docstore's document (or its absence) still differs from
-- what the migration wrote: a task that is no conflict is not touched. A document migrated
-- before the ledger existed gets its first ledger row; what that migration wrote is unknown
-- (sixteen zero bytes: no document's fingerprint), so any later change of the task is a
-- conflict again, never an update over docstore's version.
WITH kept AS (
    UPDATE legacy_migrations AS l
    SET source_md5 = %(source_md5)s,
        source_raw_md5 = %(raw_md5)s,
        kept_docstore_at = now()
    WHERE l.legacy_task_id = %(task_id)s
        AND NOT EXISTS (
            SELECT
            FROM documents AS d
            WHERE d.legacy_task_id = l.legacy_task_id
                AND legacy_document_fingerprint(d) = l.written_md5
        )
    RETURNING l.legacy_task_id
),
first_kept AS (
    INSERT INTO legacy_migrations AS l (
        legacy_task_id, source_md5, source_raw_md5, written_md5, kept_docstore_at
    )
    SELECT d.legacy_task_id, %(source_md5)s, %(raw_md5)s, decode(repeat('00', 16), 'hex'), now()
    FROM documents AS d
    WHERE d.legacy_task_id = %(task_id)s
        AND NOT EXISTS (
            SELECT FROM legacy_migrations AS m WHERE m.legacy_task_id = d.legacy_task_id
        )
    ON CONFLICT (legacy_task_id) DO NOTHING
    RETURNING l.legacy_task_id
)
SELECT legacy_task_id FROM kept
UNION ALL
SELECT legacy_task_id FROM first_kept;

-- name: migrate_keep_gone
-- The operator keeps a migrated document whose legacy task is gone from Redis (the old service
-- deleted it): the ledger marks the task as gone (sixteen 0xff bytes: no task's MD5) and kept,
-- so --verify counts the document as kept, not as 'not in Redis'. Should the task come back,
-- it differs from that mark and is judged afresh. Only for a task whose document exists.
INSERT INTO legacy_migrations AS l (
    legacy_task_id, source_md5, source_raw_md5, written_md5, kept_docstore_at
)
SELECT
    d.legacy_task_id,
    decode(repeat('ff', 16), 'hex'),
    NULL,
    legacy_document_fingerprint(d),
    now()
FROM documents AS d
WHERE d.legacy_task_id = %(task_id)s
ON CONFLICT (legacy_task_id) DO UPDATE
SET source_md5 = excluded.source_md5,
    source_raw_md5 = NULL,
    kept_docstore_at = excluded.kept_docstore_at
RETURNING l.legacy_task_id;

-- name: migrate_fetch_conflicting
-- The docstore version of documents in conflict, for the listing (the text cut short).
SELECT
    d.legacy_task_id,
    u.email AS user_email,
    d.filename,
    d.s3_key,
    d.status,
    left(d.result_text, %(excerpt)s) AS result_text,
    char_length(d.result_text) AS result_length,
    md5(d.result_text) AS result_md5,
    d.error_message,
    d.page_count,
    d.extraction_time_seconds,
    d.created_at,
    d.started_at,
    d.completed_at,
    d.updated_at,
    d.worker_id,
    d.attempts
FROM documents AS d
JOIN users AS u ON u.id = d.user_id
WHERE d.legacy_task_id = ANY(%(task_ids)b::text[]);

-- name: migrate_page_migrated_ids
-- The next page of migrated task ids, in order (verify: which are gone from Redis), with
-- whether the operator kept the document of a task gone (migrate_keep_gone).
SELECT
    d.legacy_task_id,
    EXISTS (
        SELECT
        FROM legacy_migrations AS l
        WHERE l.legacy_task_id = d.legacy_task_id
            AND l.kept_docstore_at IS NOT NULL
            AND l.source_md5 = decode(repeat('ff', 16), 'hex')
    ) AS kept_gone
FROM documents AS d
WHERE d.legacy_task_id > %(after)s::text
ORDER BY d.legacy_task_id
LIMIT %(limit)s;

-- name: migrate_take_legacy
-- The operator takes the legacy version of a task in conflict, for the next run to write. The
-- ledger adopts the document as it now stands as what the migration wrote and forgets the
-- task's digests (sixteen zero bytes: no task's MD5), so the next run finds it changed in Redis
-- and rewrites it as a catch-up run would. A document docstore deleted loses its ledger row
-- instead: the next run migrates the task afresh, but only with its blob: the deletion of the
-- task's key, still waiting and never tried, is called off (a purge that took it meanwhile
-- holds its row: this waits, then finds it tried); a key no deletion waits for is gone, unless
-- another document names it or the caller found its blob (`blob_seen`: the legacy task now
-- names another key, which docstore never deleted). Only while docstore's document (or its
-- absence) differs from what the migration wrote. A document migrated before the ledger
-- existed gets its first ledger row the same way: adopted, its task's digests unknown.
WITH conflict AS (
    SELECT l.legacy_task_id, d.fingerprint
    FROM legacy_migrations AS l
    LEFT JOIN LATERAL (
        SELECT legacy_document_fingerprint(d) AS fingerprint
        FROM documents AS d
        WHERE d.legacy_task_id = l.legacy_task_id
        LIMIT 1
    ) AS d ON true
    WHERE l.legacy_task_id = %(task_id)s
        AND d.fingerprint IS DISTINCT FROM l.written_md5
    FOR UPDATE OF l
),
blob_kept AS (
    DELETE FROM blob_deletions AS b
    USING conflict AS c
    WHERE c.fingerprint IS NULL
        AND b.s3_key = %(s3_key)s::text
        AND b.attempts = 0
    RETURNING b.s3_key
),
forgotten AS (
    DELETE FROM legacy_migrations AS l
    USING conflict AS c
    WHERE l.legacy_task_id = c.legacy_task_id
        AND c.fingerprint IS NULL
        AND (
            EXISTS (SELECT FROM blob_kept)
            OR EXISTS (SELECT FROM documents AS d WHERE d.s3_key = %(s3_key)s::text)
            -- The caller found the blob in the blob store, and no deletion of it has started.
            OR (
                %(blob_seen)s::boolean
                AND NOT EXISTS (SELECT FROM blob_deletions AS b WHERE b.s3_key = %(s3_key)s::text)
            )
        )
    RETURNING l.legacy_task_id
),
adopted AS (
    UPDATE legacy_migrations AS l
    SET written_md5 = c.fingerprint,
        source_md5 = decode(repeat('00', 16), 'hex'),
        source_raw_md5 = NULL,
        kept_docstore_at = NULL
    FROM conflict AS c
    WHERE l.legacy_task_id = c.legacy_task_id
        AND c.fingerprint IS NOT NULL
    RETURNING l.legacy_task_id
),
first_adopted AS (
    INSERT INTO legacy_migrations AS l (legacy_task_id, source_md5, written_md5)
    SELECT d.legacy_task_id, decode(repeat('00', 16), 'hex'), legacy_document_fingerprint(d)
    FROM documents AS d
    WHERE d.legacy_task_id = %(task_id)s
        AND NOT EXISTS (
            SELECT FROM legacy_migrations AS m WHERE m.legacy_task_id = d.legacy_task_id
        )
    ON CONFLICT (legacy_task_id) DO NOTHING
    RETURNING l.legacy_task_id
)
SELECT legacy_task_id FROM forgotten
UNION ALL
SELECT legacy_task_id FROM adopted
UNION ALL
SELECT legacy_task_id FROM first_adopted;

-- name: migrate_missing_schema
-- The tables (or, where the table exists, the columns) the migration needs that are missing;
-- a missing table once, however many of its columns are needed.
SELECT
    CASE
        WHEN to_regclass(needed.table_name) IS NULL THEN needed.table_name
        ELSE needed.table_name || '.' || needed.column_name
    END AS missing
FROM (
    VALUES
        (1, 'users', 'email'),
        (2, 'documents', 'legacy_task_id'),
        (3, 'legacy_migrations', 'written_md5'),
        (4, 'legacy_migrations', 'kept_docstore_at')
) AS needed (position, table_name, column_name)
WHERE NOT EXISTS (
    SELECT 1
    FROM pg_attribute AS a
    WHERE a.attrelid = to_regclass(needed.table_name)
        AND a.attname = needed.column_name
        AND NOT a.attisdropped
)
GROUP BY 1
ORDER BY min(needed.position);
