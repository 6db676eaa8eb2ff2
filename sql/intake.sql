-- name: touch_stale_pending_documents
-- Ids of documents PENDING and unchanged for a while (message lost?), marked as just re-enqueued.
-- Touching updated_at makes later passes leave them alone for as long again, and SKIP LOCKED
-- keeps passes running side by side from re-enqueueing the same documents.
WITH stale AS (
    SELECT id
    FROM documents
    WHERE status = 'PENDING'
        AND updated_at < now() - make_interval(secs => %(pending_for)s::double precision)
    ORDER BY created_at, id
    LIMIT %(limit)s::integer
    FOR UPDATE SKIP LOCKED
)
UPDATE documents AS d
SET updated_at = now()
FROM stale
WHERE d.id = stale.id
RETURNING d.id;
