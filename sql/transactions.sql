-- Transactions docstore did not open (see docstore.repositories.changes): a write that joins
-- one notes its id, and later asks whether it committed, to drop cached copies only then.

-- name: current_transaction_id
-- The id of the caller's open transaction (assigned by its write already).
SELECT pg_current_xact_id()::text AS xid;

-- name: transaction_outcomes
-- 'committed', 'aborted' or 'in progress' for each id (NULL once too old to tell).
SELECT
    x.xid,
    pg_xact_status(x.xid::xid8) AS status
FROM unnest(%(xids)b::text[]) AS x (xid);
