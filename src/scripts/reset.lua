-- Deletes locks and wakes one waiter of each (python-redis-lock's RESET_SCRIPT, for any
-- number of locks in one call); with an owner id, only the locks that owner holds.
-- KEYS[3i-2]: a lock key (lock:<name>)
-- KEYS[3i-1]: its signal list (lock-signal:<name>)
-- KEYS[3i]: its grant marker (lock-grant:<name>), deleted with it
-- ARGV[1]: how long a signal stays, in milliseconds
-- ARGV[2]: if given, the owner id whose locks alone are deleted
-- Returns a list with, for each lock, 1 when it was deleted, 0 when there was none (or
-- another owner holds it), and -1 when its key holds another type than string: not a lock
-- of this protocol, left alone.
local results = {}
for i = 1, #KEYS, 3 do
    local kind = redis.call('TYPE', KEYS[i])['ok']
    if kind ~= 'string' and kind ~= 'none' then
        results[#results + 1] = -1
    elseif ARGV[2] and redis.call('GET', KEYS[i]) ~= ARGV[2] then
        results[#results + 1] = 0
    else
        redis.call('DEL', KEYS[i + 1])
        redis.call('LPUSH', KEYS[i + 1], 1)
        redis.call('PEXPIRE', KEYS[i + 1], ARGV[1])
        redis.call('DEL', KEYS[i + 2])
        results[#results + 1] = redis.call('DEL', KEYS[i])
    end
end
return results
