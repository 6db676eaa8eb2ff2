-- The task id of documents moved from the legacy Redis store, so re-runs never duplicate.
-- depends: 0002_document_lifecycle_and_search

ALTER TABLE documents
    ADD COLUMN legacy_task_id TEXT
        CONSTRAINT documents_legacy_task_id_check CHECK (char_length(legacy_task_id) BETWEEN 1 AND 512),
    ADD CONSTRAINT documents_legacy_task_id_key UNIQUE (legacy_task_id);
