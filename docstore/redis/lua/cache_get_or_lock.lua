-- Read a cached value; on a miss, try to become the one caller that loads it (single flight).
-- KEYS[1]  value key
-- KEYS[2]  lock key (same slot)
-- ARGV[1]  lock token (random, unique to the caller)
-- ARGV[2]  lock timeout in milliseconds (a crashed holder frees the key after this)
-- Returns {value, 0} on a hit, {false, 1} when the caller now holds the lock, {false, 0} when
-- another caller holds it.
local value = redis.call('GET', KEYS[1])
if value then
    return {value, 0}
end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then
    return {false, 1}
end
return {false, 0}
