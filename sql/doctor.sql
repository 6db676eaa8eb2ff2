-- The audits of `docstore doctor`: every read is one page (keyset on an ordered key), so a
-- run over millions of documents holds one page at a time. Finished means any status other
-- than PENDING and PROCESSING (COMPLETED, FAILED and whatever final status comes later).

-- name: doctor_expired_leases
-- One page of PROCESSING documents whose lease ran out, by id, after a given id.
SELECT id, worker_id, lease_expires_at
FROM documents
WHERE status = 'PROCESSING'
    AND lease_expires_at <= now()
    AND id > %(after_id)s::bigint
ORDER BY id
LIMIT %(limit)s::integer;

-- name: doctor_quiet_pending
-- One page of PENDING documents unchanged for `grace` seconds and not waiting for a scheduled
-- retry (that schedule reaches a worker by itself), by id, after a given id.
SELECT id, updated_at
FROM documents
WHERE status = 'PENDING'
    AND updated_at < now() - make_interval(secs => %(grace)s::double precision)
    AND (next_attempt_at IS NULL OR next_attempt_at <= now())
    AND id > %(after_id)s::bigint
ORDER BY id
LIMIT %(limit)s::integer;

-- name: doctor_document_states
-- Status and last change of the given documents (ids that have no row are absent), and
-- whether that change is older than `grace` seconds.
SELECT
    id,
    status,
    updated_at,
    updated_at < now() - make_interval(secs => %(grace)s::double precision) AS quiet
FROM documents
WHERE id = ANY(%(ids)b::bigint[]);

-- name: doctor_blob_keys
-- One page of the documents' blob keys in byte order (S3 lists keys in that order), after a
-- (key, id) position, and whether the row is older than `grace` seconds. COLLATE "C" compares
-- bytes, as S3 does.
SELECT
    id,
    s3_key,
    status,
    created_at < now() - make_interval(secs => %(grace)s::double precision) AS quiet
FROM documents
WHERE (s3_key COLLATE "C", id) > (%(after_key)s::text COLLATE "C", %(after_id)s::bigint)
ORDER BY s3_key COLLATE "C", id
LIMIT %(limit)s::integer;

-- name: doctor_keys_accounted_for
-- Which of these blob keys are not orphans after all: waiting on the list of blobs to delete
-- (their rows are gone already), or named by a row now (committed since the audit read its
-- page of rows: a submit, a migration batch).
SELECT s3_key
FROM blob_deletions
WHERE s3_key = ANY(%(keys)b::text[])
UNION
SELECT s3_key
FROM documents
WHERE s3_key = ANY(%(keys)b::text[]);
