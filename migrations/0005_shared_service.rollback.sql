-- Refuses while documents or pending blob deletions hold rows, unless the session confirmed it
-- (see the README, Schema): the dropped tables are the list of blobs still to delete and the
-- history of attempts.
-- One statement, so that a tool skipping failed statements (yoyo --force) cannot drop without
-- the check; the lock comes first so that no row is committed between the check and the drop.
DO $$
BEGIN
    LOCK TABLE documents, blob_deletions IN ACCESS EXCLUSIVE MODE;
    IF current_setting('docstore.confirm_destroy', true) IS DISTINCT FROM 'yes'
        AND (EXISTS (SELECT FROM documents) OR EXISTS (SELECT FROM blob_deletions))
    THEN
        RAISE EXCEPTION USING
            ERRCODE = '55R01',
            MESSAGE = 'rolling back 0005_shared_service would drop the blob deletions still to '
                'do and columns of documents, which hold rows',
            HINT = 'to confirm, set docstore.confirm_destroy to ''yes'' for the session, '
                'e.g. PGOPTIONS=''-c docstore.confirm_destroy=yes''';
    END IF;
    -- Confirmed: cancelled documents become failed ones (the older schema has no CANCELLED).
    UPDATE documents
    SET status = 'FAILED', error_message = coalesce(error_message, 'cancelled')
    WHERE status = 'CANCELLED';
    ALTER TABLE documents
        DROP CONSTRAINT documents_status_check,
        ADD CONSTRAINT documents_status_check
            CHECK (status IN ('PENDING', 'PROCESSING', 'COMPLETED', 'FAILED'));
    DROP FUNCTION document_next_turn(BIGINT);
    DROP TABLE document_attempts;
    DROP INDEX documents_ready_turn_idx;
    DROP INDEX documents_retry_due_idx;
    ALTER TABLE documents
        DROP COLUMN turn,
        DROP COLUMN next_attempt_at,
        DROP CONSTRAINT documents_idempotency_key_key,
        DROP COLUMN content_sha256,
        DROP COLUMN idempotency_key;
    DROP INDEX documents_s3_key_idx;
    DROP TABLE blob_deletions;
END
$$;
