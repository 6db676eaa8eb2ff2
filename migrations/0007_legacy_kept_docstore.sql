-- When the operator kept docstore's version of a task in conflict (`python -m docstore.migrate
-- --keep-docstore TASK_ID`): the ledger's source digests are then those of the legacy task the
-- operator decided against, so runs skip the task and --verify counts it as kept until the
-- task changes in Redis again (a conflict again). Set back to NULL whenever the migration
-- writes the task.
-- depends: 0006_legacy_raw_digest

ALTER TABLE legacy_migrations ADD COLUMN kept_docstore_at TIMESTAMPTZ;
