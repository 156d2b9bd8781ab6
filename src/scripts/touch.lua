-- Sets a sorted set of ends (holders' leases, waiters' entries, notes of releases) to
-- expire with its latest entry, so that nothing outlives its entries.
local function touch(key)
    local last = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
    if last[2] == 'inf' then
        redis.call('PERSIST', key)
    elseif last[2] then
        redis.call('PEXPIREAT', key, last[2])
    end
end
