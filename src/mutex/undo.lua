-- Undoes one grant whose reply was lost: releases the lock (and wakes one waiter) only if
-- the grant marker names this attempt, so that an undo arriving late never removes a grant
-- made since, even one to the same owner id; and notes the attempt as done, so that a copy
-- of it that comes later (held in a proxy or a socket buffer) makes a grant that the next
-- attempt of anyone takes back (see acquire.lua).
-- KEYS[1]: the lock key (lock:<name>)
-- KEYS[2]: the signal list (lock-signal:<name>)
-- KEYS[3]: the grant marker (lock-grant:<name>): "<attempt>|<token>|<owner id>"
-- KEYS[4]: the attempt's note (lock-done:<name>:<attempt>)
-- ARGV[1]: our owner id
-- ARGV[2]: how long the signal stays, in milliseconds
-- ARGV[3]: the id of the attempt to undo
-- ARGV[4]: how long the note stays, in milliseconds (as long as a copy may come)
-- Returns 1 when the attempt's grant was released, 0 when there was none.
redis.call('SET', KEYS[4], 'undone', 'PX', ARGV[4])
local marker = redis.call('GET', KEYS[3])
if not marker or string.sub(marker, 1, #ARGV[3] + 1) ~= ARGV[3] .. '|' then
    return 0
end
redis.call('DEL', KEYS[3])
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
    return 0
end
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('LPUSH', KEYS[2], 1)
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return 1
