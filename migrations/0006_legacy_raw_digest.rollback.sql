-- Refuses while documents or legacy_migrations hold rows, unless the session confirmed it (see
-- the README, Schema). What it drops can be recomputed (re-runs parse every task again, slower),
-- but a rollback that drops a column of stored rows asks first, as every rollback here does.
-- One statement, so that a tool skipping failed statements (yoyo --force) cannot drop without
-- the check; the lock comes first so that no row is committed between the check and the drop.
DO $$
BEGIN
    LOCK TABLE legacy_migrations, documents IN ACCESS EXCLUSIVE MODE;
    IF current_setting('docstore.confirm_destroy', true) IS DISTINCT FROM 'yes'
        AND (EXISTS (SELECT FROM legacy_migrations) OR EXISTS (SELECT FROM documents))
    THEN
        RAISE EXCEPTION USING
            ERRCODE = '55R01',
            MESSAGE = 'rolling back 0006_legacy_raw_digest would drop a column of '
                'legacy_migrations while documents hold rows',
            HINT = 'to confirm, set docstore.confirm_destroy to ''yes'' for the session, '
                'e.g. PGOPTIONS=''-c docstore.confirm_destroy=yes''';
    END IF;
    ALTER TABLE legacy_migrations DROP COLUMN source_raw_md5;
END
$$;
