-- An election's proclaimed value and its observers, for the scripts that change them.
-- Needs clock.lua.

-- Whether `key` holds a `want`, or nothing.
local function typed(key, want)
    local kind = redis.call('TYPE', key)['ok']
    return kind == want or kind == 'none'
end

-- Pushes `state` to the list of every live observer in `observers` (`prefix` and its id),
-- for `ttl_ms`: "<term>|<pttl>|<bytes of the owner id>|<owner id><value>" of the leader, or
-- "-" for nobody leading. Each list holds the latest state only.
local function wake_observers(observers, prefix, ttl_ms, state)
    redis.call('ZREMRANGEBYSCORE', observers, '-inf', now)
    for _, id in ipairs(redis.call('ZRANGE', observers, 0, -1)) do
        local list = prefix .. id
        redis.call('DEL', list)
        redis.call('LPUSH', list, state)
        redis.call('PEXPIRE', list, ttl_ms)
    end
end

-- Proclaims `value` for the term `term` (a string) of `owner`, the holder of `lock` (the
-- caller checked it), as its proclaim number `seq` in that term: a copy of an earlier
-- proclaim of the term that comes late finds a higher number and changes nothing. The
-- value lives as long as the lock's lease; observers get the new state.
local function proclaim(lock, value_key, observers, owner, term, value, seq, prefix, ttl_ms)
    local proclaimed = redis.call('HMGET', value_key, 'term', 'seq')
    if proclaimed[1] == term and tonumber(proclaimed[2] or '0') > tonumber(seq) then
        return
    end
    redis.call('HSET', value_key, 'term', term, 'owner', owner, 'value', value, 'seq', seq)
    local pttl = redis.call('PTTL', lock)
    if pttl > 0 then
        redis.call('PEXPIRE', value_key, pttl)
    else
        redis.call('PERSIST', value_key)
    end
    wake_observers(observers, prefix, ttl_ms,
        term .. '|' .. pttl .. '|' .. #owner .. '|' .. owner .. value)
end
