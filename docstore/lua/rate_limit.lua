-- GCRA (generic cell rate algorithm): one decision for one client of one rate limit.
-- State is a single number per key, the theoretical arrival time (TAT) in microseconds of
-- Redis server time, so clients' clocks never matter and memory is constant per key.
-- KEYS[1]  rate-limit key
-- ARGV[1]  emission interval in microseconds (period / limit, a whole number)
-- ARGV[2]  limit (burst size, in units)
-- ARGV[3]  cost in units (0 < cost <= limit)
-- ARGV[4]  1 to consume when allowed, 0 to only look (peek)
-- Returns {allowed (1/0), remaining, reset_after_us, retry_after_us}.
if redis.replicate_commands then
    redis.replicate_commands() -- Redis < 5: allow TIME before a write
end
local interval = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local consume = ARGV[4] == '1'

local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local tau = interval * limit

local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then
    tat = now
end

local new_tat = tat + cost * interval
local allowed = new_tat - tau <= now
if allowed and consume then
    tat = new_tat
    -- Whole numbers below 2^53 print exactly with %.0f (tostring would round to 14 digits).
    redis.call('SET', KEYS[1], string.format('%.0f', tat), 'PX', math.ceil((tat - now) / 1000))
end

local remaining = math.floor((now + tau - tat) / interval)
local retry_after = 0
if not allowed then
    retry_after = new_tat - tau - now
end
return {allowed and 1 or 0, remaining, tat - now, retry_after}
