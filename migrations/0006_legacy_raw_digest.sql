-- A digest of each legacy task's raw bytes in the ledger: a catch-up re-run skips a task whose
-- bytes in Redis are what the run that wrote it read, without parsing it (parsing, not reading,
-- bounds a re-run). Rows written before this migration have none: such a task is parsed and
-- compared by source_md5 once, as before, and gets its raw digest when next written.
-- depends: 0004_legacy_migration_ledger 0005_shared_service

ALTER TABLE legacy_migrations
    ADD COLUMN source_raw_md5 BYTEA
        CONSTRAINT legacy_migrations_source_raw_md5_check CHECK (octet_length(source_raw_md5) = 16);
