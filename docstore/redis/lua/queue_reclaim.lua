-- Take over the messages a dead consumer left pending, counting deliveries; a message
-- delivered too often moves to the dead-letter stream instead of being handed out again.
-- KEYS[1]  task stream
-- KEYS[2]  dead-letter stream (same slot)
-- ARGV[1]  consumer group
-- ARGV[2]  consumer taking the messages over
-- ARGV[3]  minimum idle time in milliseconds
-- ARGV[4]  most messages to claim
-- ARGV[5]  most deliveries a message may have
-- ARGV[6]  approximate length cap of the dead-letter stream
-- Returns a list of {id, fields, deliveries} handed to the consumer, and the number of
-- messages dead-lettered: {{...}, dead}.
-- Who holds each message before it is taken over: a dead letter names the consumer that held
-- it last, not the one that found it dead.
local holders = {}
for _, pending in ipairs(redis.call('XPENDING', KEYS[1], ARGV[1], 'IDLE', ARGV[3], '-', '+',
    ARGV[4])) do
    holders[pending[1]] = pending[2]
end
local claimed = redis.call('XAUTOCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[3], '0-0',
    'COUNT', ARGV[4])
local max_deliveries = tonumber(ARGV[5])
local handed = {}
local dead = 0
local deleted = false
for _, entry in ipairs(claimed[2]) do
    if not entry then
        -- Redis 6.2 answers nil (false here) for a pending entry deleted from the stream,
        -- without its id: found and acknowledged below.
        deleted = true
    elseif not entry[2] then
        -- {id, nil}: an entry deleted from the stream, nothing left to deliver.
        redis.call('XACK', KEYS[1], ARGV[1], entry[1])
    else
        local id, fields = entry[1], entry[2]
        local pending = redis.call('XPENDING', KEYS[1], ARGV[1], id, id, 1)
        local deliveries = pending[1] and pending[1][4] or 1
        if deliveries > max_deliveries then
            local record = {'source_id', id, 'deliveries', tostring(deliveries - 1),
                'last_consumer', holders[id] or ARGV[2]}
            for i = 1, #fields do
                record[#record + 1] = fields[i]
            end
            redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[6], '*', unpack(record))
            redis.call('XACK', KEYS[1], ARGV[1], id)
            redis.call('XDEL', KEYS[1], id)
            dead = dead + 1
        else
            handed[#handed + 1] = {id, fields, deliveries}
        end
    end
end
if deleted then
    -- The deleted entries were just claimed for ARGV[2]: acknowledge those of its pending
    -- entries that are no longer in the stream.
    for _, pending in ipairs(redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', ARGV[4], ARGV[2])) do
        if #redis.call('XRANGE', KEYS[1], pending[1], pending[1]) == 0 then
            redis.call('XACK', KEYS[1], ARGV[1], pending[1])
        end
    end
end
return {handed, dead}
