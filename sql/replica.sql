-- Reading from a streaming replica (docstore.postgres.replica).

-- name: replica_lag_seconds
-- How far the replica's replay is behind, in seconds: 0 when it streams from the primary and
-- replayed all the WAL it received, else the age of the last transaction it replayed (an
-- overestimate when the primary was idle before its last write, which errs towards reading
-- from the primary). A replica that receives nothing (its primary unreachable, a broken
-- primary_conninfo) has replayed all it received too, so "caught up" needs a WAL receiver that
-- is streaming: without pg_read_all_stats a role sees only the receiver's pid, and a receiver
-- that is there counts as streaming. NULL when the server is not in recovery (a primary given
-- as replica: no lag).
SELECT
    CASE
        WHEN NOT pg_is_in_recovery() THEN NULL
        WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn()
            AND EXISTS (
                SELECT
                FROM pg_stat_wal_receiver AS r
                WHERE coalesce(r.status = 'streaming', r.pid IS NOT NULL)
            )
            THEN 0
        -- Behind with nothing replayed since start-up: how far is unknown, count it as too far.
        ELSE coalesce(
            extract(EPOCH FROM now() - pg_last_xact_replay_timestamp()),
            'Infinity'::double precision
        )
    END::double precision AS lag_seconds;
