-- Delete the consumers of a group that hold no message and have been idle for a while: workers
-- that are gone (each worker id ever used stays in the group otherwise, forever). Checked and
-- deleted in one script, so a consumer that takes a message meanwhile is never deleted with it
-- (deleting a consumer makes its pending messages unclaimable).
-- KEYS[1]  task stream
-- ARGV[1]  consumer group
-- ARGV[2]  idle milliseconds a consumer must have
-- Returns how many consumers were deleted.
local deleted = 0
for _, consumer in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])) do
    local fields = {}
    for i = 1, #consumer, 2 do
        fields[consumer[i]] = consumer[i + 1]
    end
    if tonumber(fields['pending']) == 0 and tonumber(fields['idle']) >= tonumber(ARGV[2]) then
        redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], fields['name'])
        deleted = deleted + 1
    end
end
return deleted
