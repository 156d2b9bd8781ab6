-- Redlock release on one instance: deletes the resource's key if it still holds our token
-- (the compare-and-delete of the redis.io Redlock page and of redlock-py), and its marker.
-- KEYS[1]: the resource name (the key is the name itself, as in redlock-py)
-- KEYS[2]: its marker (redlock:<resource>)
-- ARGV[1]: our token
-- Returns 1 when the key was ours and is deleted, 0 when it is missing or holds another
-- token (nothing is changed then).
if redis.call('GET', KEYS[1]) == ARGV[1] then
    if redis.call('GET', KEYS[2]) == ARGV[1] then
        redis.call('DEL', KEYS[2])
    end
    return redis.call('DEL', KEYS[1])
end
return 0
