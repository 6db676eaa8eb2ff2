-- Refuses while documents or legacy_migrations hold rows, unless the session confirmed it (see
-- the README, Schema): it forgets the operator's decisions on conflicts, which --verify would
-- then list again. One statement, so that a tool skipping failed statements (yoyo --force)
-- cannot drop without the check; the lock comes first so that no row is committed between the
-- check and the drop.
DO $$
BEGIN
    LOCK TABLE legacy_migrations, documents IN ACCESS EXCLUSIVE MODE;
    IF current_setting('docstore.confirm_destroy', true) IS DISTINCT FROM 'yes'
        AND (EXISTS (SELECT FROM legacy_migrations) OR EXISTS (SELECT FROM documents))
    THEN
        RAISE EXCEPTION USING
            ERRCODE = '55R01',
            MESSAGE = 'rolling back 0007_legacy_kept_docstore would drop a column of '
                'legacy_migrations while documents hold rows',
            HINT = 'to confirm, set docstore.confirm_destroy to ''yes'' for the session, '
                'e.g. PGOPTIONS=''-c docstore.confirm_destroy=yes''';
    END IF;
    ALTER TABLE legacy_migrations DROP COLUMN kept_docstore_at;
END
$$;
