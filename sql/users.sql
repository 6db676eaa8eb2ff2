-- Users and their API keys. Only the SHA-256 digest of a key is stored (api_key_hash).
-- Every query returning a user returns the columns of docstore.models.UserResponse.

-- name: insert_user
-- Create a user holding the digest of its first API key.
INSERT INTO users (email, api_key_hash)
VALUES (%(email)s::text, %(api_key_hash)s::bytea)
RETURNING
    id, email, api_key_hash IS NOT NULL AS has_api_key, api_key_last_used_at, created_at,
    updated_at;

-- name: get_user
-- One user by id.
SELECT
    id, email, api_key_hash IS NOT NULL AS has_api_key, api_key_last_used_at, created_at,
    updated_at
FROM users
WHERE id = %(user_id)s::bigint;

-- name: get_user_by_email
-- One user by email, whatever its case (served by users_email_lower_key).
SELECT
    id, email, api_key_hash IS NOT NULL AS has_api_key, api_key_last_used_at, created_at,
    updated_at
FROM users
WHERE lower(email) = lower(%(email)s::text);

-- name: authenticate_user
-- The user holding the key with this digest, recording the key's use unless that was done in
-- the last minute (so most calls write nothing). The condition is on the row being updated, so
-- concurrent calls at the minute boundary write once. It names the key too: a call that read
-- the row before a revoke or rotation committed, and waited for it, answers as of its snapshot
-- (before the change) but does not stamp the new key, or no key, as used.
WITH found AS (
    SELECT id, email, api_key_last_used_at, created_at, updated_at
    FROM users
    WHERE api_key_hash = %(api_key_hash)s::bytea
),
used AS (
    UPDATE users
    SET api_key_last_used_at = now()
    FROM found
    WHERE users.id = found.id
        AND users.api_key_hash = %(api_key_hash)s::bytea
        AND (
            users.api_key_last_used_at IS NULL
            OR users.api_key_last_used_at < now() - interval '60 seconds'
        )
    RETURNING users.id, users.api_key_last_used_at
)
SELECT
    found.id, found.email, TRUE AS has_api_key,
    coalesce(used.api_key_last_used_at, found.api_key_last_used_at) AS api_key_last_used_at,
    found.created_at, found.updated_at
FROM found
LEFT JOIN used ON used.id = found.id;

-- name: set_user_api_key_hash
-- Replace (or with NULL, revoke) a user's API key; the old key stops working at once.
UPDATE users
SET
    api_key_hash = %(api_key_hash)s::bytea,
    api_key_last_used_at = NULL,
    updated_at = now()
WHERE id = %(user_id)s::bigint
RETURNING
    id, email, api_key_hash IS NOT NULL AS has_api_key, api_key_last_used_at, created_at,
    updated_at;

-- name: update_user
-- Change a user's email when one is given.
UPDATE users
SET
    email = coalesce(%(email)s::text, email),
    updated_at = now()
WHERE id = %(user_id)s::bigint
RETURNING
    id, email, api_key_hash IS NOT NULL AS has_api_key, api_key_last_used_at, created_at,
    updated_at;

-- name: lock_user
-- Lock a user until the transaction ends: a document inserted for it meanwhile waits (its
-- foreign key takes KEY SHARE on the row), then fails once the user is gone. Returns its id.
SELECT id
FROM users
WHERE id = %(user_id)s::bigint
FOR UPDATE;

-- name: delete_user
-- Delete a user; its documents go with it (ON DELETE CASCADE).
DELETE FROM users
WHERE id = %(user_id)s::bigint;

-- name: list_users
-- One page of users in id order, after the given id.
SELECT
    id, email, api_key_hash IS NOT NULL AS has_api_key, api_key_last_used_at, created_at,
    updated_at
FROM users
WHERE id > %(after_id)s::bigint
ORDER BY id
LIMIT %(limit)s::integer;

-- name: get_user_with_documents
-- A user and its newest documents (without their text) as a JSON array, in one round trip.
SELECT
    u.id, u.email, u.api_key_hash IS NOT NULL AS has_api_key, u.api_key_last_used_at,
    u.created_at, u.updated_at,
    coalesce(
        (
            SELECT json_agg(d ORDER BY d.created_at DESC, d.id DESC)
            FROM (
                SELECT
                    id, user_id, filename, s3_key, status, error_message, page_count,
                    extraction_time_seconds, attempts, max_attempts, worker_id, lease_expires_at, next_attempt_at,
                    legacy_task_id, created_at, updated_at, started_at, completed_at
                FROM documents
                WHERE user_id = u.id
                ORDER BY created_at DESC, id DESC
                LIMIT %(documents_limit)s::integer
            ) AS d
        ),
        '[]'::json
    ) AS documents
FROM users AS u
WHERE u.id = %(user_id)s::bigint;
