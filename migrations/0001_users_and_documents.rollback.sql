-- Refuses while users or documents hold rows, unless the session confirmed it (see the README,
-- Schema): a rollback run by any tool, yoyo's CLI included, must not silently destroy documents.
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
            MESSAGE = 'rolling back 0001_users_and_documents would drop the tables users and '
                'documents, which hold rows',
            HINT = 'to confirm, set docstore.confirm_destroy to ''yes'' for the session, '
                'e.g. PGOPTIONS=''-c docstore.confirm_destroy=yes''';
    END IF;
    DROP TABLE documents;
    DROP TABLE users;
END
$$;
