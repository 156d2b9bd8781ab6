-- Sets the remaining lease of each lock we own; never re-creates a lock that is gone and
-- never touches a lock owned by someone else.
-- KEYS[2i-1]: a lock key (lock:<name>); on a cluster, all in one slot
-- KEYS[2i]: its grant marker (lock-grant:<name>), which lives as long as the lock
-- ARGV[2i-1]: our owner id for lock i
-- ARGV[2i]: the new remaining lease of lock i in milliseconds
-- Returns a list with, for each key, 1 when extended, 0 when the lock is gone, and -1 when
-- it is held by another owner (or the key holds another type than string).
-- A key of another type is not ours: its GET error must not abort the call, which renews
-- other locks too.
local extended = {}
for i = 1, #KEYS / 2 do
    local key = KEYS[2 * i - 1]
    local owner = redis.pcall('GET', key)
    if owner == ARGV[2 * i - 1] then
        redis.call('PEXPIRE', key, ARGV[2 * i])
        if redis.call('PTTL', KEYS[2 * i]) > 0 then
            redis.call('PEXPIRE', KEYS[2 * i], ARGV[2 * i])
        end
        extended[i] = 1
    elseif owner == false then
        extended[i] = 0
    else
        extended[i] = -1
    end
end
return extended
