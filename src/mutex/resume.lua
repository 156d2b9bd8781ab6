-- Takes over one grant of a mutex named by a lock handle, if the lock still holds exactly
-- that grant: the lock is left as it is (its owner id and expiry), and the grant gets a new
-- fencing token and a marker naming this attempt, so that the handle cannot be resumed
-- twice and every request of the grant's earlier holder (which carries the old token)
-- leaves it alone from now on.
-- KEYS[1]: the lock key (lock:<name>)
-- KEYS[2]: the grant marker (lock-grant:<name>): "<attempt>|<token>|<owner id>"
-- KEYS[3]: the fencing counter (lock-fencing-counter, or one per slot on a cluster)
-- ARGV[1]: the grant's owner id (the handle's)
-- ARGV[2]: the grant's fencing token (the handle's)
-- ARGV[3]: this attempt's id: an undo after a lost reply removes the grant only if the
--          marker still names this attempt
-- ARGV[4]: how long the marker lives at least, in milliseconds
-- ARGV[5]: how long the marker of a lock without expiry lives, in milliseconds (a week)
-- Returns {1, token, pttl} when taken over, token being the new fencing token and pttl
-- the lock's remaining milliseconds (-1 without expiry); {0, 0, 0} when the lock does not
-- hold that grant any more (it expired, was released or reset, or was granted again, even
-- to the same owner id); {-1, 0, 0} when the key holds another type than string.
local kind = redis.call('TYPE', KEYS[1])['ok']
if kind ~= 'string' and kind ~= 'none' then
    return {-1, 0, 0}
end
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
    return {0, 0, 0}
end
local marker = redis.call('GET', KEYS[2])
if marker and string.match(marker, '^[^|]*|(%d+)|') ~= ARGV[2] then
    return {0, 0, 0}
end
-- No marker: a lock with an expiry lost it with the grant (a python client's grant, or
-- ours past its lease: not the handle's); a lock without expiry outlived its marker (a
-- week), and the owner id alone says whose it is.
if not marker and redis.call('PTTL', KEYS[1]) ~= -1 then
    return {0, 0, 0}
end
-- The new token first (see fence.lua).
local token = string.format('%d', fence(KEYS[3]))
local pttl = redis.call('PTTL', KEYS[1])
local life = tonumber(ARGV[5])
if pttl >= 0 then
    life = math.max(pttl, tonumber(ARGV[4]))
end
redis.call('SET', KEYS[2], ARGV[3] .. '|' .. token .. '|' .. ARGV[1], 'PX', life)
return {1, tonumber(token), pttl}
