-- Reads what the operator tools show of some locks, changing nothing.
-- ARGV[1]: 'mutex' or 'rwlock'
-- For 'mutex', KEYS are triples: a lock key (lock:<name>), its grant marker
--   (lock-grant:<name>) and its fair waiters (lock-waiters:<name>). Returns, per lock,
--   {owner, pttl, marker, waiters, type}: the owner id (false when gone or another type),
--   the remaining milliseconds (-1 without expiry), the marker ("<attempt>|<token>|<owner>",
--   or false), how many fair waiters are live (-1 when the lock has no fair queue), and
--   the lock key's type ('string', 'none', or another: no lock can be taken there).
-- For 'rwlock', KEYS are holder sets (rwlock:w:<path>, rwlock:r:<path>). Returns, per key,
--   {type, entries}: the key's type ('zset', or another: no lease can be taken there), and
--   a flat list of its live entries, {lease id, milliseconds left or -1, ...}.
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local out = {}
if ARGV[1] == 'mutex' then
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
else
    for _, k in ipairs(KEYS) do
        local live = {}
        local kind = redis.call('TYPE', k)['ok']
        if kind == 'zset' then
            local entries = redis.call('ZRANGE', k, 0, -1, 'WITHSCORES')
            for i = 1, #entries, 2 do
                local score = entries[i + 1]
                if score == 'inf' then
                    live[#live + 1] = entries[i]
                    live[#live + 1] = -1
                elseif tonumber(score) > now then
                    live[#live + 1] = entries[i]
                    live[#live + 1] = tonumber(score) - now
                end
            end
        end
        out[#out + 1] = {kind, live}
    end
end
return out
