-- Takes the lock if it is free; otherwise reports how long the holder's lease has left.
-- KEYS[1]: the lock key (lock:<name>)
-- ARGV[1]: our owner id
-- ARGV[2]: the expiry in milliseconds, or "0" for a lock that never expires
-- Returns {1, 0} when granted; {0, pttl} when held, pttl being the holder's remaining
-- milliseconds or -1 for a holder without expiry.
-- Returns {-1, 0} when the key holds another type than string: no lock can be
-- taken there, and waiting would never end.
local granted
if ARGV[2] == '0' then
    granted = redis.call('SET', KEYS[1], ARGV[1], 'NX')
else
    granted = redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2])
end
if granted then
    return {1, 0}
end
local kind = redis.call('TYPE', KEYS[1])['ok']
if kind ~= 'string' then
    return {-1, 0}
end
return {0, redis.call('PTTL', KEYS[1])}
