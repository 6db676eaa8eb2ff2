-- Refuses while documents hold rows, unless the session confirmed it (see the README, Schema):
-- without legacy_task_id a re-run of the legacy migration would duplicate every document.
-- One statement, so that a tool skipping failed statements (yoyo --force) cannot drop without
-- the check; the lock comes first so that no row is committed between the check and the drop.
DO $$
BEGIN
    LOCK TABLE documents IN ACCESS EXCLUSIVE MODE;
    IF current_setting('docstore.confirm_destroy', true) IS DISTINCT FROM 'yes'
        AND EXISTS (SELECT FROM documents)
    THEN
        RAISE EXCEPTION USING
            ERRCODE = '55R01',
            MESSAGE = 'rolling back 0003_legacy_task_id would drop documents.legacy_task_id '
                'while documents hold rows',
            HINT = 'to confirm, set docstore.confirm_destroy to ''yes'' for the session, '
                'e.g. PGOPTIONS=''-c docstore.confirm_destroy=yes''';
    END IF;
    ALTER TABLE documents DROP COLUMN legacy_task_id;
END
$$;
