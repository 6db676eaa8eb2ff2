-- Start a document's progress again from 0 (a new attempt), unless it shows a stage that must
-- outlive the reset (a cancel's mark): then nothing changes.
-- KEYS[1]  progress hash
-- ARGV[1]  stage to start at
-- ARGV[2]  time to live in milliseconds
-- ARGV[3]  stage kept as it is
-- Returns {percent, stage, updated_at_ms} as stored after the call.
if redis.replicate_commands then
    redis.replicate_commands() -- Redis < 5: allow TIME before a write
end
local current = redis.call('HMGET', KEYS[1], 'percent', 'stage', 'updated_at_ms')
if current[2] == ARGV[3] then
    return current
end
local time = redis.call('TIME')
local updated_at_ms = string.format('%.0f',
    tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000))
redis.call('HSET', KEYS[1], 'percent', '0.0', 'stage', ARGV[1], 'updated_at_ms', updated_at_ms)
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return {'0.0', ARGV[1], updated_at_ms}
