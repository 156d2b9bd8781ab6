-- Proclaims a leader's value, withdraws it, or clears whatever is proclaimed; then wakes
-- every live observer of the election.
-- KEYS[1]: the leader's lock (election:<name>): its owner id, while it leads
-- KEYS[2]: its grant marker (election-grant:<name>): "<attempt>|<term>|<owner id>"
-- KEYS[3]: the proclaimed value (election-value:<name>), a hash of term, owner, value and
--          seq, living as long as the leader's lease (its extends extend it too)
-- KEYS[4]: the observers (election-observers:<name>): observer id -> until when it lives
--          (ms since 1970)
-- ARGV[1]: 'proclaim' (by the leader of term ARGV[3]), 'withdraw' (the proclamation of that
--          term, by its leader resigning) or 'clear' (the proclamation of that term, by a
--          reset: whoever's it is, or, if ARGV[2] is not empty, only that owner's)
-- ARGV[2]: the leader's owner id
-- ARGV[3]: its term (its grant's fencing token)
-- ARGV[4]: the value to proclaim
-- ARGV[7]: the proclaim's number within its term, rising: a copy of an earlier proclaim
--          that comes late (held in a proxy, or sent again after a timeout while a later
--          one went through) finds a higher number there and changes nothing
-- ARGV[5]: the prefix of an observer's list (election-observe:<name>:), followed by its id
-- ARGV[6]: how long a wake-up stays for its observer, in milliseconds
-- Each observer's wake-up carries the state after the change, so that it needs no read:
-- "<term>|<pttl>|<bytes of the owner id>|<owner id><value>" of the leader, or "-" for
-- nobody leading.
-- Returns 1 when done; 0 when the leader of that term leads no more (nothing is
-- proclaimed then); -1 when a key holds another type (nothing is changed).
local function typed(key, want)
    local kind = redis.call('TYPE', key)['ok']
    return kind == want or kind == 'none'
end
if not (typed(KEYS[1], 'string') and typed(KEYS[2], 'string') and typed(KEYS[3], 'hash')
        and typed(KEYS[4], 'zset')) then
    return -1
end
local function wake_observers(state)
    redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now)
    for _, id in ipairs(redis.call('ZRANGE', KEYS[4], 0, -1)) do
        local list = ARGV[5] .. id
        redis.call('DEL', list)
        redis.call('LPUSH', list, state)
        redis.call('PEXPIRE', list, ARGV[6])
    end
end
local op = ARGV[1]
if op == 'proclaim' then
    local marker = redis.call('GET', KEYS[2])
    if redis.call('GET', KEYS[1]) ~= ARGV[2] or not marker
        or string.match(marker, '^[^|]*|(%d+)|') ~= ARGV[3] then
        return 0
    end
    local proclaimed = redis.call('HMGET', KEYS[3], 'term', 'seq')
    if proclaimed[1] == ARGV[3] and tonumber(proclaimed[2] or '0') > tonumber(ARGV[7]) then
        return 1
    end
    redis.call('HSET', KEYS[3], 'term', ARGV[3], 'owner', ARGV[2], 'value', ARGV[4],
        'seq', ARGV[7])
    local pttl = redis.call('PTTL', KEYS[1])
    if pttl > 0 then
        redis.call('PEXPIRE', KEYS[3], pttl)
    else
        redis.call('PERSIST', KEYS[3])
    end
    wake_observers(ARGV[3] .. '|' .. pttl .. '|' .. #ARGV[2] .. '|' .. ARGV[2] .. ARGV[4])
    return 1
elseif op == 'withdraw' then
    local proclaimed = redis.call('HMGET', KEYS[3], 'term', 'owner')
    if proclaimed[1] ~= ARGV[3] or proclaimed[2] ~= ARGV[2] then
        return 1
    end
    redis.call('DEL', KEYS[3])
else
    local proclaimed = redis.call('HMGET', KEYS[3], 'term', 'owner')
    if proclaimed[1] ~= ARGV[3] or (ARGV[2] ~= '' and proclaimed[2] ~= ARGV[2]) then
        return 1
    end
    redis.call('DEL', KEYS[3])
end
wake_observers('-')
return 1
