-- Record a document's progress; the percentage never goes backwards.
-- KEYS[1]  progress hash
-- ARGV[1]  percent (0-100)
-- ARGV[2]  stage
-- ARGV[3]  time to live in milliseconds (refreshed by every update)
-- Returns {percent, stage, updated_at_ms} as stored after the call (a stale update that would
-- lower the percentage changes nothing and gets the current state back).
if redis.replicate_commands then
    redis.replicate_commands() -- Redis < 5: allow TIME before a write
end
local current = redis.call('HMGET', KEYS[1], 'percent', 'stage', 'updated_at_ms')
local percent = tonumber(ARGV[1])
if current[1] and tonumber(current[1]) > percent then
    return current
end
local time = redis.call('TIME')
local updated_at_ms = string.format('%.0f',
    tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000))
redis.call('HSET', KEYS[1], 'percent', ARGV[1], 'stage', ARGV[2], 'updated_at_ms', updated_at_ms)
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return {ARGV[1], ARGV[2], updated_at_ms}
