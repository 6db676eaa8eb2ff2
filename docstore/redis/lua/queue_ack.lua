-- Acknowledge processed messages and delete them, so the stream holds only unfinished work.
-- KEYS[1]  task stream
-- ARGV[1]  consumer group
-- ARGV[2..] message ids
-- Returns how many messages were still pending (and are now acknowledged).
local acked = redis.call('XACK', KEYS[1], ARGV[1], unpack(ARGV, 2))
redis.call('XDEL', KEYS[1], unpack(ARGV, 2))
return acked
