-- Reads what the operator tools show of some mutexes, changing nothing.
-- KEYS are triples: a lock key (lock:<name>), its grant marker (lock-grant:<name>) and its
--   fair waiters (lock-waiters:<name>).
-- Returns, per lock, {owner, pttl, marker, waiters, type}: the owner id (false when gone or
-- another type), the remaining milliseconds (-1 without expiry), the marker
-- ("<attempt>|<token>|<owner>", or false), how many fair waiters are live (-1 when the lock
-- has no fair queue), and the lock key's type ('string', 'none', or another: no lock can be
-- taken there).
local out = {}
for i = 1, #KEYS, 3 do
    local owner = false
    local kind = redis.call('TYPE', KEYS[i])['ok']
    if kind == 'string' then
        owner = redis.call('GET', KEYS[i])
    end
    local waiters = -1
    if redis.call('TYPE', KEYS[i + 2])['ok'] == 'hash' then
        waiters = 0
        local entries = redis.call('HVALS', KEYS[i + 2])
        for _, entry in ipairs(entries) do
            local a = string.find(entry, '|', 1, true)
            if a and tonumber(string.sub(entry, 1, a - 1)) > now then
                waiters = waiters + 1
            end
        end
    end
    local marker = false
    if redis.call('TYPE', KEYS[i + 1])['ok'] == 'string' then
        marker = redis.call('GET', KEYS[i + 1])
    end
    out[#out + 1] = {owner, redis.call('PTTL', KEYS[i]), marker, waiters, kind}
end
return out
