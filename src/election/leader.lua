-- Reads who leads an election: the holder of its lock whose value is proclaimed for the
-- current term. With an observer's id, also keeps the observer registered and takes its
-- pending wake-ups (this read sees everything they announced).
-- KEYS[1]: the leader's lock (election:<name>)
-- KEYS[2]: its grant marker (election-grant:<name>): "<attempt>|<term>|<owner id>"
-- KEYS[3]: the proclaimed value (election-value:<name>): term, owner, value
-- KEYS[4]: the observers (election-observers:<name>), with an observer's id
-- KEYS[5]: that observer's list (election-observe:<name>:<id>)
-- ARGV[1]: the observer's id, if any
-- ARGV[2]: how long its registration lives from now, in milliseconds
-- Returns {owner id, term, value, pttl} of the leader (pttl -1 for a lease without
-- expiry); {} when nobody leads (the lock is free, or its holder has not proclaimed for
-- its term); -1 when a key holds another type.
local function typed(key, want)
    local kind = redis.call('TYPE', key)['ok']
    return kind == want or kind == 'none'
end
if not (typed(KEYS[1], 'string') and typed(KEYS[2], 'string') and typed(KEYS[3], 'hash')
        and (not ARGV[1] or typed(KEYS[4], 'zset'))) then
    return -1
end
if ARGV[1] then
    redis.call('ZADD', KEYS[4], now + tonumber(ARGV[2]), ARGV[1])
    touch(KEYS[4])
    redis.call('DEL', KEYS[5])
end
local owner = redis.call('GET', KEYS[1])
if not owner then
    return {}
end
local marker = redis.call('GET', KEYS[2])
local term = marker and string.match(marker, '^[^|]*|(%d+)|')
local proclaimed = redis.call('HMGET', KEYS[3], 'term', 'owner', 'value')
if not term or proclaimed[1] ~= term or proclaimed[2] ~= owner then
    return {}
end
return {owner, term, proclaimed[3] or '', redis.call('PTTL', KEYS[1])}
