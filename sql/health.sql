-- name: server_version
-- The PostgreSQL server's version string.
SELECT current_setting('server_version') AS server_version;
