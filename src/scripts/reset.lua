-- Deletes locks whoever holds them and wakes one waiter of each (python-redis-lock's
-- RESET_SCRIPT, for any number of locks in one call).
-- KEYS[2i-1]: a lock key (lock:<name>)
-- KEYS[2i]: its signal list (lock-signal:<name>)
-- ARGV[1]: how long a signal stays, in milliseconds
-- Returns a list with, for each lock, 1 when it was deleted, 0 when there was none, and -1
-- when its key holds another type than string: not a lock of this protocol, left alone.
local results = {}
for i = 1, #KEYS, 2 do
    local kind = redis.call('TYPE', KEYS[i])['ok']
    if kind ~= 'string' and kind ~= 'none' then
        results[#results + 1] = -1
    else
        redis.call('DEL', KEYS[i + 1])
        redis.call('LPUSH', KEYS[i + 1], 1)
        redis.call('PEXPIRE', KEYS[i + 1], ARGV[1])
        results[#results + 1] = redis.call('DEL', KEYS[i])
    end
end
return results
