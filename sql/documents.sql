-- Documents: creation, reads, keyset listing, the processing lifecycle and full-text search.
-- Queries return the columns of docstore.models.DocumentSummary, plus result_text where the
-- model is DocumentResponse. Lifecycle changes are single conditional UPDATEs: the WHERE clause
-- is the transition rule, so a refused transition changes nothing.

-- name: insert_document
-- Create one PENDING document.
INSERT INTO documents (
    user_id, filename, s3_key, max_attempts, legacy_task_id, idempotency_key, content_sha256,
    turn
)
VALUES (
    %(user_id)s::bigint,
    %(filename)s::text,
    %(s3_key)s::text,
    %(max_attempts)s::integer,
    %(legacy_task_id)s::text,
    %(idempotency_key)s::text,
    decode(%(content_sha256)s::text, 'hex'),
    -- The later of the current round and just after the user's previous document.
    document_next_turn(%(user_id)s::bigint)
)
RETURNING
    id, user_id, filename, s3_key, status, error_message, page_count, extraction_time_seconds,
    attempts, max_attempts, worker_id, lease_expires_at, next_attempt_at, legacy_task_id, created_at, updated_at,
    started_at, completed_at, result_text;

-- name: insert_documents
-- Create a batch of PENDING documents from parallel arrays, in array order, in one statement;
-- each user's documents take consecutive turns (see insert_document).
WITH batch AS (
    SELECT *
    FROM unnest(
        %(user_ids)b::bigint[],
        %(filenames)b::text[],
        %(s3_keys)b::text[],
        %(max_attempts)b::integer[],
        %(legacy_task_ids)b::text[],
        %(idempotency_keys)b::text[],
        %(content_sha256s)b::text[]
    ) WITH ORDINALITY AS batch (
        user_id, filename, s3_key, max_attempts, legacy_task_id, idempotency_key,
        content_sha256, position
    )
),
first_turns AS (
    SELECT users.user_id, document_next_turn(users.user_id) AS turn
    FROM (SELECT DISTINCT user_id FROM batch) AS users
)
INSERT INTO documents (
    user_id, filename, s3_key, max_attempts, legacy_task_id, idempotency_key, content_sha256,
    turn
)
SELECT
    batch.user_id, batch.filename, batch.s3_key, batch.max_attempts, batch.legacy_task_id,
    batch.idempotency_key, decode(batch.content_sha256, 'hex'),
    first_turns.turn + row_number() OVER (PARTITION BY batch.user_id ORDER BY batch.position) - 1
FROM batch
JOIN first_turns ON first_turns.user_id = batch.user_id
ORDER BY batch.position
RETURNING
    id, user_id, filename, s3_key, status, error_message, page_count, extraction_time_seconds,
    attempts, max_attempts, worker_id, lease_expires_at, next_attempt_at, legacy_task_id, created_at, updated_at,
    started_at, completed_at, result_text;

-- name: blob_is_recorded
-- Whether a document points at this blob (documents_s3_key_idx).
SELECT EXISTS (
    SELECT 1
    FROM documents
    WHERE s3_key = %(s3_key)s::text
);

-- name: get_document
-- One document by id, with its text.
SELECT
    id, user_id, filename, s3_key, status, error_message, page_count, extraction_time_seconds,
    attempts, max_attempts, worker_id, lease_expires_at, next_attempt_at, legacy_task_id, created_at, updated_at,
    started_at, completed_at, result_text
FROM documents
WHERE id = %(document_id)s::bigint;

-- name: insert_document_once
-- Create one PENDING document unless the user already has one under this idempotency key
-- (then nothing is written and no row returned; a racing insert is waited for).
INSERT INTO documents (
    user_id, filename, s3_key, max_attempts, legacy_task_id, idempotency_key, content_sha256,
    turn
)
VALUES (
    %(user_id)s::bigint,
    %(filename)s::text,
    %(s3_key)s::text,
    %(max_attempts)s::integer,
    %(legacy_task_id)s::text,
    %(idempotency_key)s::text,
    decode(%(content_sha256)s::text, 'hex'),
    -- The later of the current round and just after the user's previous document.
    document_next_turn(%(user_id)s::bigint)
)
ON CONFLICT (user_id, idempotency_key) DO NOTHING
RETURNING
    id, user_id, filename, s3_key, status, error_message, page_count, extraction_time_seconds,
    attempts, max_attempts, worker_id, lease_expires_at, next_attempt_at, legacy_task_id, created_at, updated_at,
    started_at, completed_at, result_text;

-- name: get_document_by_idempotency_key
-- The user's document submitted under this idempotency key, and the hex digest of its bytes.
SELECT
    id, user_id, filename, s3_key, status, error_message, page_count, extraction_time_seconds,
    attempts, max_attempts, worker_id, lease_expires_at, next_attempt_at, legacy_task_id, created_at, updated_at,
    started_at, completed_at, result_text, encode(content_sha256, 'hex') AS content_sha256
FROM documents
WHERE user_id = %(user_id)s::bigint
    AND idempotency_key = %(idempotency_key)s::text;

-- name: get_document_by_task_id
-- One document by the task id it had in the legacy Redis store.
SELECT
    id, user_id, filename, s3_key, status, error_message, page_count, extraction_time_seconds,
    attempts, max_attempts, worker_id, lease_expires_at, next_attempt_at, legacy_task_id, created_at, updated_at,
    started_at, completed_at, result_text
FROM documents
WHERE legacy_task_id = %(legacy_task_id)s::text;

-- name: get_document_with_user
-- One document and its owner (as a JSON object) in one query.
SELECT
    d.id, d.user_id, d.filename, d.s3_key, d.status, d.error_message, d.page_count,
    d.extraction_time_seconds, d.attempts, d.max_attempts, d.worker_id, d.lease_expires_at, d.next_attempt_at,
    d.legacy_task_id, d.created_at, d.updated_at, d.started_at, d.completed_at, d.result_text,
    json_build_object(
        'id', u.id,
        'email', u.email,
        'has_api_key', u.api_key_hash IS NOT NULL,
        'api_key_last_used_at', u.api_key_last_used_at,
        'created_at', u.created_at,
        'updated_at', u.updated_at
    ) AS user
FROM documents AS d
JOIN users AS u ON u.id = d.user_id
WHERE d.id = %(document_id)s::bigint;

-- name: update_document
-- Change the client-editable fields of a document when given.
UPDATE documents
SET
    filename = coalesce(%(filename)s::text, filename),
    updated_at = now()
WHERE id = %(document_id)s::bigint
RETURNING
    id, user_id, filename, s3_key, status, error_message, page_count, extraction_time_seconds,
    attempts, max_attempts, worker_id, lease_expires_at, next_attempt_at, legacy_task_id, created_at, updated_at,
    started_at, completed_at, result_text;

-- name: delete_document
-- Delete one document and put its blob on the list of blobs to delete, in one statement (the
-- blob is deleted after the row is gone, never before). Returns the id when it existed.
WITH gone AS (
    DELETE FROM documents
    WHERE id = %(document_id)s::bigint
    RETURNING id, s3_key
),
listed AS (
    INSERT INTO blob_deletions (s3_key)
    SELECT s3_key FROM gone
    ON CONFLICT (s3_key) DO UPDATE SET next_attempt_at = now()
)
SELECT id FROM gone;

-- name: delete_user_documents
-- Delete a batch of a user's documents and list their blobs for deletion; returns their ids.
WITH batch AS (
    SELECT id
    FROM documents
    WHERE user_id = %(user_id)s::bigint
    ORDER BY id
    LIMIT %(limit)s::integer
    FOR UPDATE
),
gone AS (
    DELETE FROM documents AS d
    USING batch
    WHERE d.id = batch.id
    RETURNING d.id, d.s3_key
),
listed AS (
    INSERT INTO blob_deletions (s3_key)
    SELECT DISTINCT s3_key FROM gone
    ON CONFLICT (s3_key) DO UPDATE SET next_attempt_at = now()
)
SELECT id FROM gone;

-- name: take_due_blob_deletions
-- Up to `limit` blobs due for deletion, pushed back by `retry_in` seconds so that callers side
-- by side never take the same ones (SKIP LOCKED) and a caller that dies leaves them for later.
-- A blob another document still names is dropped from the list, not deleted.
WITH still_named AS (
    DELETE FROM blob_deletions AS b
    WHERE b.next_attempt_at <= now()
        AND EXISTS (SELECT FROM documents AS d WHERE d.s3_key = b.s3_key)
),
due AS (
    SELECT s3_key
    FROM blob_deletions AS b
    WHERE b.next_attempt_at <= now()
        AND NOT EXISTS (SELECT FROM documents AS d WHERE d.s3_key = b.s3_key)
    ORDER BY b.next_attempt_at
    LIMIT %(limit)s::integer
    FOR UPDATE SKIP LOCKED
)
UPDATE blob_deletions AS b
SET
    attempts = b.attempts + 1,
    next_attempt_at = now() + make_interval(
        secs => least(3600, %(retry_in)s::double precision * power(2, least(b.attempts, 12)))
    )
FROM due
WHERE b.s3_key = due.s3_key
RETURNING b.s3_key;

-- name: finish_blob_deletion
-- The blob is gone from the blob store: drop it from the list.
DELETE FROM blob_deletions
WHERE s3_key = %(s3_key)s::text;

-- name: note_blob_deletion_error
-- Why deleting the blob failed this time (it is retried at next_attempt_at).
UPDATE blob_deletions
SET last_error = %(error)s::text
WHERE s3_key = %(s3_key)s::text;

-- name: count_blob_deletions
-- Blobs waiting to be deleted, and how many of them failed at least once.
SELECT count(*)::integer AS waiting, count(*) FILTER (WHERE last_error IS NOT NULL)::integer AS failing
FROM blob_deletions;

-- name: list_user_documents
-- One page of a user's documents, newest first, strictly before a (created_at, id) position.
SELECT
    id, user_id, filename, s3_key, status, error_message, page_count, extraction_time_seconds,
    attempts, max_attempts, worker_id, lease_expires_at, next_attempt_at, legacy_task_id, created_at, updated_at,
    started_at, completed_at
FROM documents
WHERE user_id = %(user_id)s::bigint
    AND status = ANY(%(statuses)b::text[])
    AND (created_at, id) < (%(before_created_at)s::timestamptz, %(before_id)s::bigint)
ORDER BY created_at DESC, id DESC
LIMIT %(limit)s::integer;

-- name: count_user_documents_by_status
-- How many documents a user has in each status (statuses with none are absent).
SELECT status, count(*)::integer AS count
FROM documents
WHERE user_id = %(user_id)s::bigint
GROUP BY status;

-- name: claim_next_document
-- Hand the next document to a worker, in fair turns across users (the lowest turn first, each
-- user's own oldest first): PROCESSING, a lease, one more attempt. Candidates are the head of
-- the documents ready now and the earliest retry that is due: two index probes, whatever the
-- backlog. (With a per-user cap, claims go through claim_candidate instead.)
WITH ready AS (
    SELECT id, turn
    FROM documents
    WHERE status = 'PENDING'
        AND next_attempt_at IS NULL
    ORDER BY turn, id
    LIMIT 1
    FOR UPDATE SKIP LOCKED
),
due AS (
    SELECT id, turn
    FROM documents
    WHERE status = 'PENDING'
        AND next_attempt_at <= now()
    ORDER BY next_attempt_at
    LIMIT 1
    FOR UPDATE SKIP LOCKED
),
next AS (
    SELECT id
    FROM (SELECT id, turn FROM ready UNION ALL SELECT id, turn FROM due) AS candidates
    ORDER BY turn, id
    LIMIT 1
)
UPDATE documents AS d
SET
    status = 'PROCESSING',
    worker_id = %(worker_id)s::text,
    started_at = now(),
    lease_expires_at = now() + make_interval(secs => %(lease_seconds)s::double precision),
    next_attempt_at = NULL,
    attempts = d.attempts + 1,
    updated_at = now()
FROM next
WHERE d.id = next.id
RETURNING
    d.id, d.user_id, d.filename, d.s3_key, d.status, d.error_message, d.page_count,
    d.extraction_time_seconds, d.attempts, d.max_attempts, d.worker_id, d.lease_expires_at,
    d.next_attempt_at, d.legacy_task_id, d.created_at, d.updated_at, d.started_at,
    d.completed_at, d.result_text;

-- name: claim_candidate
-- With a per-user cap, step 1 of a claim (in one transaction): the next document as
-- claim_next_document would pick it, locked, among users not at the cap as this snapshot sees
-- them, nor in %(exclude_users)s. The users at the cap come from the PROCESSING documents
-- alone (few: one per busy worker), so a capped user's backlog is skipped by a filter on the
-- turn index rather than a count per waiting document.
WITH capped AS (
    SELECT user_id
    FROM documents
    WHERE status = 'PROCESSING'
    GROUP BY user_id
    HAVING count(*) >= %(max_processing)s::integer
),
skipped AS (
    SELECT array_agg(user_id) || %(exclude_users)s::bigint[] AS ids
    FROM capped
),
ready AS (
    SELECT d.id, d.user_id, d.turn
    FROM documents AS d
    WHERE d.status = 'PENDING'
        AND d.next_attempt_at IS NULL
        AND d.user_id <> ALL(coalesce((SELECT ids FROM skipped), '{}'))
    ORDER BY d.turn, d.id
    LIMIT 1
    FOR UPDATE OF d SKIP LOCKED
),
due AS (
    SELECT d.id, d.user_id, d.turn
    FROM documents AS d
    WHERE d.status = 'PENDING'
        AND d.next_attempt_at <= now()
        AND d.user_id <> ALL(coalesce((SELECT ids FROM skipped), '{}'))
    ORDER BY d.next_attempt_at
    LIMIT 1
    FOR UPDATE OF d SKIP LOCKED
)
SELECT id, user_id
FROM (SELECT id, user_id, turn FROM ready UNION ALL SELECT id, user_id, turn FROM due) AS found
ORDER BY turn, id
LIMIT 1;

-- name: read_committed
-- The first statement of a capped claim's transaction: step 3 must count in a snapshot taken
-- after step 2, which only READ COMMITTED gives (a server may default to another level).
SET TRANSACTION ISOLATION LEVEL READ COMMITTED;

-- name: lock_user_claims
-- Step 2: one claim of a user at a time, until its transaction ends, so step 3 counts every
-- claim committed before it (a statement's snapshot cannot see one still running). True when
-- taken; false while another claim of the user runs: that user is skipped, never waited for
-- (a worker waiting here while holding its candidate row could deadlock with a transaction of
-- the caller's). A transaction lock: it holds behind a transaction pooler too.
-- (Two int4 keys: docstore's claims, then the user; users sharing a hash share the turns.)
SELECT pg_try_advisory_xact_lock(hashtext('docstore:claims'), hashtext(%(user_id)s::bigint::text));

-- name: claim_document
-- Hand one known document to a worker, only if it is PENDING and due, and with max_processing
-- (step 3 of a capped claim, after claim_candidate and lock_user_claims) only while its user
-- holds fewer documents PROCESSING, counted in this statement's snapshot, taken after the lock.
UPDATE documents
SET
    status = 'PROCESSING',
    worker_id = %(worker_id)s::text,
    started_at = now(),
    lease_expires_at = now() + make_interval(secs => %(lease_seconds)s::double precision),
    next_attempt_at = NULL,
    attempts = attempts + 1,
    updated_at = now()
WHERE id = %(document_id)s::bigint
    AND status = 'PENDING'
    AND (next_attempt_at IS NULL OR next_attempt_at <= now())
    AND (
        %(max_processing)s::integer IS NULL
        OR (
            SELECT count(*)
            FROM documents AS busy
            WHERE busy.user_id = documents.user_id AND busy.status = 'PROCESSING'
        ) < %(max_processing)s::integer
    )
RETURNING
    id, user_id, filename, s3_key, status, error_message, page_count, extraction_time_seconds,
    attempts, max_attempts, worker_id, lease_expires_at, next_attempt_at, legacy_task_id,
    created_at, updated_at, started_at, completed_at, result_text;

-- name: extend_document_lease
-- Extend the lease of the worker that holds a document, only while its lease runs.
UPDATE documents
SET
    lease_expires_at = now() + make_interval(secs => %(lease_seconds)s::double precision),
    updated_at = now()
WHERE id = %(document_id)s::bigint
    AND status = 'PROCESSING'
    AND worker_id = %(worker_id)s::text
    AND lease_expires_at > now()
RETURNING
    id, user_id, filename, s3_key, status, error_message, page_count, extraction_time_seconds,
    attempts, max_attempts, worker_id, lease_expires_at, next_attempt_at, legacy_task_id, created_at, updated_at,
    started_at, completed_at, result_text;

-- name: complete_document
-- Store the result of the worker that holds a document (lease still running): COMPLETED, and
-- the attempt in the history. The text is not returned: the caller has it.
WITH done AS (
    UPDATE documents
    SET
        status = 'COMPLETED',
        result_text = %(result_text)s::text,
        page_count = %(page_count)s::integer,
        extraction_time_seconds = %(extraction_time_seconds)s::double precision,
        error_message = NULL,
        lease_expires_at = NULL,
        completed_at = now(),
        updated_at = now()
    WHERE id = %(document_id)s::bigint
        AND status = 'PROCESSING'
        AND worker_id = %(worker_id)s::text
        AND lease_expires_at > now()
    RETURNING
        id, user_id, filename, s3_key, status, error_message, page_count,
        extraction_time_seconds, attempts, max_attempts, worker_id, lease_expires_at,
        next_attempt_at, legacy_task_id, created_at, updated_at, started_at, completed_at
),
history AS (
    INSERT INTO document_attempts (document_id, attempt, worker_id, started_at, outcome)
    SELECT id, attempts, worker_id, started_at, 'completed'
    FROM done
    ON CONFLICT (document_id, attempt) DO NOTHING
)
SELECT
    id, user_id, filename, s3_key, status, error_message, page_count, extraction_time_seconds,
    attempts, max_attempts, worker_id, lease_expires_at, next_attempt_at, legacy_task_id,
    created_at, updated_at, started_at, completed_at
FROM done;

-- name: fail_document
-- Record the failure of the worker that holds a document (lease still running): back to
-- PENDING, due after an exponential backoff with jitter, when retry is asked and attempts
-- remain, otherwise FAILED; the attempt goes in the history.
WITH held AS (
    SELECT id, %(retry)s::boolean AND attempts < max_attempts AS retrying
    FROM documents
    WHERE id = %(document_id)s::bigint
        AND status = 'PROCESSING'
        AND worker_id = %(worker_id)s::text
        AND lease_expires_at > now()
    FOR UPDATE
),
failed AS (
    UPDATE documents AS d
    SET
        status = CASE WHEN held.retrying THEN 'PENDING' ELSE 'FAILED' END,
        worker_id = CASE WHEN held.retrying THEN NULL ELSE d.worker_id END,
        completed_at = CASE WHEN held.retrying THEN NULL ELSE now() END,
        -- Equal jitter: half the delay is fixed, half random, so that documents failed together
        -- (an outage) come back spread out; the delay doubles per attempt, up to the cap.
        next_attempt_at = CASE WHEN held.retrying THEN now() + make_interval(secs => least(
                %(backoff_cap)s::double precision,
                %(backoff_base)s::double precision * power(2, least(d.attempts - 1, 30))
            ) * (0.5 + random() / 2)) END,
        error_message = %(error_message)s::text,
        lease_expires_at = NULL,
        updated_at = now()
    FROM held
    WHERE d.id = held.id
    RETURNING
        d.id, d.user_id, d.filename, d.s3_key, d.status, d.error_message, d.page_count,
        d.extraction_time_seconds, d.attempts, d.max_attempts, d.worker_id, d.lease_expires_at,
        d.next_attempt_at, d.legacy_task_id, d.created_at, d.updated_at, d.started_at,
        d.completed_at, d.result_text
),
history AS (
    INSERT INTO document_attempts (
        document_id, attempt, worker_id, started_at, outcome, error_message
    )
    SELECT
        id, attempts, %(worker_id)s::text, started_at,
        CASE WHEN status = 'PENDING' THEN 'retrying' ELSE 'failed' END, error_message
    FROM failed
    ON CONFLICT (document_id, attempt) DO NOTHING
)
SELECT
    id, user_id, filename, s3_key, status, error_message, page_count, extraction_time_seconds,
    attempts, max_attempts, worker_id, lease_expires_at, next_attempt_at, legacy_task_id,
    created_at, updated_at, started_at, completed_at, result_text
FROM failed;

-- name: cancel_document
-- Cancel a document not yet finished: CANCELLED (its worker, if any, loses the lease, and its
-- attempt goes in the history as cancelled).
WITH unfinished AS (
    SELECT id, status AS was, worker_id AS held_by
    FROM documents
    WHERE id = %(document_id)s::bigint
        AND status IN ('PENDING', 'PROCESSING')
    FOR UPDATE
),
cancelled AS (
    UPDATE documents AS d
    SET
        status = 'CANCELLED',
        lease_expires_at = NULL,
        next_attempt_at = NULL,
        completed_at = now(),
        updated_at = now()
    FROM unfinished
    WHERE d.id = unfinished.id
    RETURNING
        d.id, d.user_id, d.filename, d.s3_key, d.status, d.error_message, d.page_count,
        d.extraction_time_seconds, d.attempts, d.max_attempts, d.worker_id, d.lease_expires_at,
        d.next_attempt_at, d.legacy_task_id, d.created_at, d.updated_at, d.started_at,
        d.completed_at, d.result_text,
        unfinished.was, unfinished.held_by
),
history AS (
    INSERT INTO document_attempts (document_id, attempt, worker_id, started_at, outcome)
    SELECT id, attempts, held_by, coalesce(started_at, now()), 'cancelled'
    FROM cancelled
    WHERE was = 'PROCESSING' AND held_by IS NOT NULL
    ON CONFLICT (document_id, attempt) DO NOTHING
)
SELECT
    id, user_id, filename, s3_key, status, error_message, page_count, extraction_time_seconds,
    attempts, max_attempts, worker_id, lease_expires_at, next_attempt_at, legacy_task_id,
    created_at, updated_at, started_at, completed_at, result_text
FROM cancelled;

-- name: requeue_expired_documents
-- Take back documents whose lease ran out: PENDING, due after the same backoff as a failure,
-- while attempts remain, otherwise FAILED; the attempt goes in the history as expired.
-- A lease that ends exactly when it started was never held by a docstore worker (a claim always
-- gives a lease of more than 0 s): the legacy migration writes the legacy service's in-flight
-- tasks that way, and they are due at once.
WITH expired AS (
    SELECT
        id, worker_id AS held_by, attempts < max_attempts AS retrying,
        lease_expires_at IS DISTINCT FROM started_at AS was_held
    FROM documents
    WHERE status = 'PROCESSING'
        AND lease_expires_at <= now()
    ORDER BY lease_expires_at
    LIMIT %(limit)s::integer
    FOR UPDATE SKIP LOCKED
),
taken AS (
    UPDATE documents AS d
    SET
        status = CASE WHEN expired.retrying THEN 'PENDING' ELSE 'FAILED' END,
        worker_id = CASE WHEN expired.retrying THEN NULL ELSE d.worker_id END,
        completed_at = CASE WHEN expired.retrying THEN NULL ELSE now() END,
        next_attempt_at = CASE WHEN expired.retrying AND expired.was_held
            THEN now() + make_interval(secs => least(
                %(backoff_cap)s::double precision,
                %(backoff_base)s::double precision * power(2, least(d.attempts - 1, 30))
            ) * (0.5 + random() / 2)) END,
        error_message = 'lease of worker ' || d.worker_id || ' expired',
        lease_expires_at = NULL,
        updated_at = now()
    FROM expired
    WHERE d.id = expired.id
    RETURNING
        d.id, d.user_id, d.filename, d.s3_key, d.status, d.error_message, d.page_count,
        d.extraction_time_seconds, d.attempts, d.max_attempts, d.worker_id, d.lease_expires_at,
        d.next_attempt_at, d.legacy_task_id, d.created_at, d.updated_at, d.started_at,
        d.completed_at, d.result_text,
        expired.held_by
),
history AS (
    INSERT INTO document_attempts (
        document_id, attempt, worker_id, started_at, outcome, error_message
    )
    SELECT id, attempts, held_by, coalesce(started_at, now()), 'expired', error_message
    FROM taken
    WHERE held_by IS NOT NULL AND attempts >= 1
    ON CONFLICT (document_id, attempt) DO NOTHING
)
SELECT
    id, user_id, filename, s3_key, status, error_message, page_count, extraction_time_seconds,
    attempts, max_attempts, worker_id, lease_expires_at, next_attempt_at, legacy_task_id,
    created_at, updated_at, started_at, completed_at, result_text
FROM taken;

-- name: get_document_state
-- Why a lifecycle UPDATE touched no row: the document's status, holder and lease.
SELECT
    status, worker_id, lease_expires_at > now() AS lease_running,
    CASE WHEN next_attempt_at > now() THEN next_attempt_at END AS not_before
FROM documents
WHERE id = %(document_id)s::bigint;

-- name: search_documents
-- One page of a user's documents matching a web-search query, best rank first, strictly after
-- a (rank, id) position; snippets are computed for that page only.
WITH query AS (
    SELECT websearch_to_tsquery('english', %(query)s::text) AS tsquery
),
ranked AS (
    SELECT d.id, ts_rank(d.search_vector, query.tsquery) AS rank
    FROM documents AS d
    CROSS JOIN query
    WHERE d.user_id = %(user_id)s::bigint
        -- Unprocessed documents have no text: an exclusion alone ("-word") would match them.
        AND d.result_text IS NOT NULL
        AND d.search_vector @@ query.tsquery
),
page AS (
    SELECT id, rank
    FROM ranked
    WHERE (rank, id) < (%(after_rank)s::real, %(after_id)s::bigint)
    ORDER BY rank DESC, id DESC
    LIMIT %(limit)s::integer
)
SELECT
    d.id, d.user_id, d.filename, d.s3_key, d.status, d.error_message, d.page_count,
    d.extraction_time_seconds, d.attempts, d.max_attempts, d.worker_id, d.lease_expires_at, d.next_attempt_at,
    d.legacy_task_id, d.created_at, d.updated_at, d.started_at, d.completed_at,
    page.rank,
    -- Only the indexed prefix can hold the matches (see search_vector in migration 0002).
    ts_headline(
        'english',
        left(d.result_text, 200000),
        query.tsquery,
        'StartSel=<mark>, StopSel=</mark>, MaxWords=35, MinWords=15, MaxFragments=2'
    ) AS snippet
FROM page
JOIN documents AS d ON d.id = page.id
CROSS JOIN query
ORDER BY page.rank DESC, page.id DESC;

-- name: touch_stale_pending_documents
-- Ids of documents PENDING, unchanged for a while and older than the queue's oldest message.
-- They are marked as just re-enqueued: touching updated_at makes later passes leave them alone
-- for as long again, and SKIP LOCKED keeps passes side by side from taking the same ones.
WITH stale AS (
    SELECT id
    FROM documents
    WHERE status = 'PENDING'
        AND (next_attempt_at IS NULL OR next_attempt_at <= now())
        AND updated_at < now() - make_interval(secs => %(pending_for)s::double precision)
        -- Enqueued since the oldest message still queued: its message may be waiting there.
        AND (
            %(queued_before)s::timestamptz IS NULL
            OR updated_at < %(queued_before)s::timestamptz
        )
    ORDER BY created_at, id
    LIMIT %(limit)s::integer
    FOR UPDATE SKIP LOCKED
)
UPDATE documents AS d
SET updated_at = now()
FROM stale
WHERE d.id = stale.id
RETURNING d.id;

-- name: promote_due_retries
-- Documents whose retry is due, made plain PENDING (no longer waiting) so that they can be
-- enqueued; SKIP LOCKED keeps callers side by side from taking the same ones.
WITH due AS (
    SELECT id
    FROM documents
    WHERE status = 'PENDING'
        AND next_attempt_at <= now()
    ORDER BY next_attempt_at
    LIMIT %(limit)s::integer
    FOR UPDATE SKIP LOCKED
)
UPDATE documents AS d
SET next_attempt_at = NULL, updated_at = now()
FROM due
WHERE d.id = due.id
RETURNING d.id;

-- name: list_document_attempts
-- A document's finished attempts, first first.
SELECT attempt, worker_id, started_at, ended_at, outcome, error_message
FROM document_attempts
WHERE document_id = %(document_id)s::bigint
ORDER BY attempt;
