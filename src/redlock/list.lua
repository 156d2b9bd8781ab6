-- Reads what the operator tools show of Redlock keys on one instance, changing nothing.
-- KEYS: pairs of a marker (redlock:<resource>) and its resource's key
-- Returns, per pair, {token, pttl}: the token the resource's key holds if it is the
-- marker's (false otherwise: the marker is stale), and its remaining milliseconds.
local out = {}
for i = 1, #KEYS, 2 do
    local token = redis.call('GET', KEYS[i])
    if token and redis.call('GET', KEYS[i + 1]) ~= token then
        token = false
    end
    out[#out + 1] = {token, redis.call('PTTL', KEYS[i + 1])}
end
return out
