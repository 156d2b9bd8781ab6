-- Redlock extend on one instance: sets the remaining lease of the resource's key, and of
-- its marker, if the key still holds our token; never re-creates a key that is gone and
-- never touches another owner's.
-- KEYS[1]: the resource name (the key is the name itself, as in redlock-py)
-- KEYS[2]: its marker (redlock:<resource>)
-- ARGV[1]: our token
-- ARGV[2]: the new remaining lease in milliseconds
-- Returns 1 when the key was ours and now expires in ARGV[2] ms, 0 when it is missing or
-- holds another token (nothing is changed then).
if redis.call('GET', KEYS[1]) == ARGV[1] then
    if redis.call('GET', KEYS[2]) == ARGV[1] then
        redis.call('PEXPIRE', KEYS[2], ARGV[2])
    end
    return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
