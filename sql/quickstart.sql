-- Named queries of `python -m docstore.quickstart`.

-- name: quickstart_foreign_documents
-- Documents the quickstart did not write: neither its user's nor migrated from the legacy
-- tasks it seeds (task ids `qs-<run>-<n>`). On the caller's database it processes every due
-- document, so it runs only where there are none.
SELECT count(*)::bigint
FROM documents AS d
WHERE d.user_id IS DISTINCT FROM (
        SELECT u.id FROM users AS u WHERE lower(u.email) = lower(%(email)s::text)
    )
    AND (d.legacy_task_id IS NULL OR d.legacy_task_id NOT LIKE 'qs-%%');

-- name: quickstart_foreign_documents_before_legacy
-- The same on a schema older than 0003 (no legacy_task_id yet: nothing was migrated).
SELECT count(*)::bigint
FROM documents AS d
WHERE d.user_id IS DISTINCT FROM (
    SELECT u.id FROM users AS u WHERE lower(u.email) = lower(%(email)s::text)
);
