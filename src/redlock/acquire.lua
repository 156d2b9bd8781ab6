-- Redlock acquire on one instance: `SET NX PX` of the resource's key (redlock-py's), and, if
-- it was set, the marker beside it that the operator tools find.
-- KEYS[1]: the resource name (the key is the name itself, as in redlock-py)
-- KEYS[2]: its marker (redlock:<resource>; on a cluster in the key's slot)
-- ARGV[1]: our token
-- ARGV[2]: the lease in milliseconds
-- Returns 1 when the key was set (it holds our token), 0 when it was held.
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
    redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
    return 1
end
return 0
