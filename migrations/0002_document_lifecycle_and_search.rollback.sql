-- Refuses while users or documents hold rows, unless the session confirmed it (see the README,
-- Schema): the dropped columns hold leases, attempts, key usage and update times.
-- One statement, so that a tool skipping failed statements (yoyo --force) cannot drop without
-- the check; the lock comes first so that no row is committed between the check and the drop.
DO $$
BEGIN
    LOCK TABLE documents, users IN ACCESS EXCLUSIVE MODE;
    IF current_setting('docstore.confirm_destroy', true) IS DISTINCT FROM 'yes'
        AND (EXISTS (SELECT FROM documents) OR EXISTS (SELECT FROM users))
    THEN
        RAISE EXCEPTION USING
            ERRCODE = '55R01',
            MESSAGE = 'rolling back 0002_document_lifecycle_and_search would drop columns of '
                'users and documents, which hold rows',
            HINT = 'to confirm, set docstore.confirm_destroy to ''yes'' for the session, '
                'e.g. PGOPTIONS=''-c docstore.confirm_destroy=yes''';
    END IF;
    DROP INDEX documents_search_vector_idx;
    DROP INDEX documents_processing_lease_idx;
    DROP INDEX documents_pending_created_at_idx;
    DROP INDEX documents_user_id_created_at_id_idx;
    ALTER TABLE documents
        DROP COLUMN search_vector,
        DROP COLUMN max_attempts,
        DROP COLUMN attempts,
        DROP COLUMN lease_expires_at,
        DROP COLUMN worker_id,
        DROP COLUMN updated_at;
    ALTER TABLE users
        DROP COLUMN updated_at,
        DROP COLUMN api_key_last_used_at;
END
$$;
