-- name: touch_stale_pending_documents
-- Ids of documents PENDING, unchanged for a while and older than the queue's oldest message.
-- They are marked as just re-enqueued: touching updated_at makes later passes leave them alone
-- for as long again, and SKIP LOCKED keeps passes side by side from taking the same ones.
WITH stale AS (
    SELECT id
    FROM documents
    WHERE status = 'PENDING'
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
