-- Reads what the operator tools show of some read-write lock holder sets, changing nothing.
-- KEYS are holder sets (rwlock:w:<path>, rwlock:r:<path>).
-- Returns, per key, {type, entries}: the key's type ('zset', or another: no lease can be
-- taken there), and a flat list of its live entries, {lease id, milliseconds left or -1,
-- ...}.
local out = {}
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
return out
