ALTER TABLE documents DROP COLUMN legacy_task_id;
