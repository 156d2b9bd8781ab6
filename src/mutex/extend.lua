-- Sets the remaining lease of each lock we own, or only checks that it is ours; never
-- re-creates a lock that is gone and never touches a lock owned by someone else, or a later
-- grant to the same owner id.
-- KEYS, lock by lock: the lock key (lock:<name>), its grant marker (lock-grant:<name>),
--   which lives as long as the lock, and the keys that live as long as it (an election's
--   proclaimed value), if any; on a cluster, all in one slot
-- ARGV, lock by lock: our owner id; the new remaining lease in milliseconds, or '0' to only
--   check it; the fencing token of our grant (when the marker names another grant, the lock
--   is a later grant to the same owner id: this call came late, and it is not ours to
--   extend); how many keys the lock has in KEYS (2, or more with kept keys)
-- Returns a list with, for each lock, 1 when extended, 0 when the lock is gone, and -1 when
-- it is held by another owner or grant (or the key holds another type than string).
-- A key of another type is not ours: its GET error must not abort the call, which renews
-- other locks too.
local extended = {}
local k = 1
for a = 1, #ARGV, 4 do
    local key, marker_key = KEYS[k], KEYS[k + 1]
    local owner = redis.pcall('GET', key)
    if owner == ARGV[a] then
        local marker = redis.pcall('GET', marker_key)
        if type(marker) == 'string' and string.match(marker, '^[^|]*|(%d+)|') ~= ARGV[a + 2] then
            owner = nil
        end
    end
    if owner == ARGV[a] then
        if ARGV[a + 1] ~= '0' then
            redis.call('PEXPIRE', key, ARGV[a + 1])
            for j = k + 1, k + tonumber(ARGV[a + 3]) - 1 do
                if redis.call('PTTL', KEYS[j]) > 0 then
                    redis.call('PEXPIRE', KEYS[j], ARGV[a + 1])
                end
            end
        end
        extended[#extended + 1] = 1
    elseif owner == false then
        extended[#extended + 1] = 0
    else
        extended[#extended + 1] = -1
    end
    k = k + tonumber(ARGV[a + 3])
end
return extended
