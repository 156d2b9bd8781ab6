-- Wakes the live waiters registered in the sorted set `waiting`: `list`, on which they
-- block, is replaced by one element per waiter (at most 1000), for `ms` milliseconds. Keys
-- of another type are left alone. Needs clock.lua.
local function wake(list, waiting, ms)
    if redis.call('TYPE', waiting)['ok'] ~= 'zset' then
        return
    end
    local n = math.min(redis.call('ZCOUNT', waiting, '(' .. now, '+inf'), 1000)
    local kind = redis.call('TYPE', list)['ok']
    if n == 0 or (kind ~= 'list' and kind ~= 'none') then
        return
    end
    redis.call('DEL', list)
    local ones = {}
    for i = 1, math.min(n, 100) do
        ones[i] = '1'
    end
    while n > 0 do
        local batch = math.min(n, 100)
        redis.call('RPUSH', list, unpack(ones, 1, batch))
        n = n - batch
    end
    redis.call('PEXPIRE', list, ms)
end
