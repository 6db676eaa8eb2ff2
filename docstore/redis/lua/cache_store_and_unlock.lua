-- Store a loaded value and release the single-flight lock, but only while the lock is still
-- ours: if it expired or the key was invalidated meanwhile, the value may be stale, so it is
-- dropped.
-- KEYS[1]  value key
-- KEYS[2]  lock key (same slot)
-- ARGV[1]  lock token
-- ARGV[2]  value (JSON)
-- ARGV[3]  time to live in milliseconds
-- Returns 1 when the value was stored, 0 when it was dropped.
if redis.call('GET', KEYS[2]) ~= ARGV[1] then
    return 0
end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
redis.call('DEL', KEYS[2])
return 1
