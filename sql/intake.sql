-- name: list_stale_pending_documents
-- Ids of documents PENDING, unchanged for a while (their queue message may be lost).
SELECT id
FROM documents
WHERE status = 'PENDING'
    AND updated_at < now() - make_interval(secs => %(pending_for)s::double precision)
ORDER BY created_at, id
LIMIT %(limit)s::integer;
