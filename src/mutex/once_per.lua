-- Marks a window of a period done, only while the lock is still held by the grant with the
-- given fencing token (`RedisMutex::once_per`, `redis-mutex run --once-per`).
-- KEYS[1]: the lock key (lock:<name>)
-- KEYS[2]: its grant marker (lock-grant:<name>): `<attempt>|<token>|<owner id>`
-- KEYS[3]: the window's done marker (lock-once:<name>:<period ms>:<window>)
-- ARGV[1]: our owner id
-- ARGV[2]: the fencing token of our grant
-- ARGV[3]: when the window ends, in milliseconds since 1970 (server clock)
-- ARGV[4]: how long the marker outlives its window, in milliseconds
-- Returns `<token>|<now ms>|<owner id>`, the marker as written (or as found, when the
-- window was marked already); 0 when the lock is not held by this grant (nothing written).
local held = redis.call('MGET', KEYS[1], KEYS[2])
if held[1] ~= ARGV[1]
    or (held[2] and string.match(held[2], '^[^|]*|(%d+)|') ~= ARGV[2]) then
    return 0
end
local found = redis.call('GET', KEYS[3])
if found then
    return found
end
local marker = ARGV[2] .. '|' .. now .. '|' .. ARGV[1]
local ttl = tonumber(ARGV[3]) - now + tonumber(ARGV[4])
if ttl > 0 then
    redis.call('SET', KEYS[3], marker, 'PX', ttl)
end
return marker
