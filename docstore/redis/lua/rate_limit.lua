-- GCRA (generic cell rate algorithm): one decision for one client of one rate limit.
-- State is a single number per key, the theoretical arrival time (TAT) in microseconds of
-- Redis server time, so clients' clocks never matter and memory is constant per key.
-- (Redis >= 5 replicates a script's effects, so TIME may precede a write; docstore needs
-- 6.2 for its queue anyway.)
-- KEYS[1]  rate-limit key
-- ARGV[1]  tolerance in microseconds: limit * interval, where the emission interval is
--          period / limit in whole microseconds
-- ARGV[2]  cost in microseconds: units * interval (at most the tolerance)
-- ARGV[3]  1 to consume when allowed, 0 to only look (peek)
-- Returns one integer, to keep the reply small: TAT - now after the decision (how long until
-- the client has its whole limit back) when allowed, or -(TAT - now) - 1 when denied. The
-- caller derives remaining units and the retry delay from it.
local tau = tonumber(ARGV[1])
local now = redis.call('TIME')
now = now[1] * 1000000 + now[2]
local tat = tonumber(redis.call('GET', KEYS[1]))
if not tat or tat < now then
    tat = now
end
local new_tat = tat + tonumber(ARGV[2])
if new_tat - tau > now then
    return -(tat - now) - 1
end
if ARGV[3] == '1' then
    -- Whole numbers below 2^53 print exactly with %.0f (tostring would round to 14 digits).
    local ttl_ms = math.ceil((new_tat - now) / 1000)
    redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', ttl_ms)
    return new_tat - now
end
return tat - now
