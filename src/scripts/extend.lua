-- Sets the remaining lease of each lock we own; never re-creates a lock that is gone and
-- never touches a lock owned by someone else.
-- KEYS[i]: a lock key (lock:<name>)
-- ARGV[2i-1]: our owner id for KEYS[i]
-- ARGV[2i]: the new remaining lease of KEYS[i] in milliseconds
-- Returns a list with, for each key, 1 when extended and 0 when we are not its owner.
-- A key that holds another type than string is not ours: its GET error must not abort the
-- call, which renews other locks too.
local extended = {}
for i, key in ipairs(KEYS) do
    if redis.pcall('GET', key) == ARGV[2 * i - 1] then
        redis.call('PEXPIRE', key, ARGV[2 * i])
        extended[i] = 1
    else
        extended[i] = 0
    end
end
return extended
