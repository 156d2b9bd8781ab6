-- Removes Redlock keys from one instance for the operator tools, whoever holds them: each
-- marker found, and the resource's key if it still holds the marker's token.
-- KEYS: pairs of a marker (redlock:<resource>) and its resource's key
-- ARGV: none
-- Returns how many held keys were deleted.
local removed = 0
for i = 1, #KEYS, 2 do
    local token = redis.call('GET', KEYS[i])
    if token and redis.call('GET', KEYS[i + 1]) == token then
        redis.call('DEL', KEYS[i + 1])
        removed = removed + 1
    end
    redis.call('DEL', KEYS[i])
end
return removed
