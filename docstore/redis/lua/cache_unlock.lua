-- Release the single-flight lock if it is still ours (compare and delete).
-- KEYS[1]  lock key
-- ARGV[1]  lock token
-- Returns 1 when released, 0 when the lock had expired or belongs to another caller.
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0
