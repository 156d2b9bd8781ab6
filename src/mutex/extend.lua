-- Sets the remaining lease of each lock we own, or only checks that it is ours; never
-- re-creates a lock that is gone and never touches a lock owned by someone else, or a later
-- grant to the same owner id.
-- KEYS[2i-1]: a lock key (lock:<name>); on a cluster, all in one slot
-- KEYS[2i]: its grant marker (lock-grant:<name>), which lives as long as the lock
-- ARGV[3i-2]: our owner id for lock i
-- ARGV[3i-1]: the new remaining lease of lock i in milliseconds, or '0' to only check it
-- ARGV[3i]: the fencing token of our grant of lock i: when the marker names another grant,
--           the lock is a later grant to the same owner id (this call came late) and is
--           not ours to extend
-- Returns a list with, for each key, 1 when extended, 0 when the lock is gone, and -1 when
-- it is held by another owner or grant (or the key holds another type than string).
-- A key of another type is not ours: its GET error must not abort the call, which renews
-- other locks too.
local extended = {}
for i = 1, #KEYS / 2 do
    local key, marker_key = KEYS[2 * i - 1], KEYS[2 * i]
    local owner = redis.pcall('GET', key)
    if owner == ARGV[3 * i - 2] then
        local marker = redis.pcall('GET', marker_key)
        if type(marker) == 'string' and string.match(marker, '^[^|]*|(%d+)|') ~= ARGV[3 * i] then
            owner = nil
        end
    end
    if owner == ARGV[3 * i - 2] then
        if ARGV[3 * i - 1] ~= '0' then
            redis.call('PEXPIRE', key, ARGV[3 * i - 1])
            if redis.call('PTTL', marker_key) > 0 then
                redis.call('PEXPIRE', marker_key, ARGV[3 * i - 1])
            end
        end
        extended[i] = 1
    elseif owner == false then
        extended[i] = 0
    else
        extended[i] = -1
    end
end
return extended
