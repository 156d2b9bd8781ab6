-- Deletes locks and wakes one waiter of each (python-redis-lock's RESET_SCRIPT, for any
-- number of locks in one call); with an owner id, only the locks that owner holds.
-- KEYS[4i-3]: a lock key (lock:<name>)
-- KEYS[4i-2]: its signal list (lock-signal:<name>)
-- KEYS[4i-1]: its grant marker (lock-grant:<name>), deleted with it
-- KEYS[4i]: its release's tombstone (lock-released:<name>), which then says "reset|<token>"
--           (the token of the grant reset, or nothing when unknown), so that `watch` and
--           `last_release` can tell a reset from a release
-- ARGV[1]: how long a signal stays, in milliseconds
-- ARGV[2]: how long the tombstone stays, in milliseconds
-- ARGV[3]: if given, the owner id whose locks alone are deleted
-- Returns a list with, for each lock, 1 when it was deleted, 0 when there was none (or
-- another owner holds it), and -1 when its key holds another type than string: not a lock
-- of this protocol, left alone.
local results = {}
for i = 1, #KEYS, 4 do
    local kind = redis.call('TYPE', KEYS[i])['ok']
    if kind ~= 'string' and kind ~= 'none' then
        results[#results + 1] = -1
    elseif ARGV[3] and redis.call('GET', KEYS[i]) ~= ARGV[3] then
        results[#results + 1] = 0
    else
        redis.call('DEL', KEYS[i + 1])
        redis.call('LPUSH', KEYS[i + 1], 1)
        redis.call('PEXPIRE', KEYS[i + 1], ARGV[1])
        -- The grant's token, if the marker is this grant's (it names the same owner).
        local token = ''
        local owner = redis.call('GET', KEYS[i])
        if owner and redis.call('TYPE', KEYS[i + 2])['ok'] == 'string' then
            local t, by = string.match(redis.call('GET', KEYS[i + 2]), '^[^|]*|(%d+)|(.*)$')
            if by == owner then
                token = t
            end
        end
        redis.call('DEL', KEYS[i + 2])
        local deleted = redis.call('DEL', KEYS[i])
        if deleted == 1 then
            redis.call('SET', KEYS[i + 3], 'reset|' .. token, 'PX', ARGV[2])
        end
        results[#results + 1] = deleted
    end
end
return results
