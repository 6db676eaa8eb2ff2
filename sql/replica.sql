-- Reading from a streaming replica (docstore.postgres.replica).

-- name: replica_lag_seconds
-- How far the replica's replay is behind, in seconds: 0 when it replayed all the WAL it
-- received, else the age of the last transaction it replayed (an overestimate when the primary
-- was idle before its last write, which errs towards reading from the primary). NULL when the
-- server is not in recovery (a primary given as replica: no lag).
SELECT
    CASE
        WHEN NOT pg_is_in_recovery() THEN NULL
        WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0
        -- Behind with nothing replayed since start-up: how far is unknown, count it as too far.
        ELSE COALESCE(
            EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp()),
            'Infinity'::double precision
        )
    END::double precision AS lag_seconds;
