-- Releases the lock if we own it and wakes one waiter (python-redis-lock's UNLOCK_SCRIPT,
-- with this crate's marker and note).
-- KEYS[1]: the lock key (lock:<name>)
-- KEYS[2]: the signal list (lock-signal:<name>)
-- KEYS[3]: the grant marker (lock-grant:<name>), deleted with the lock
-- KEYS[4]: the release's tombstone (lock-released:<name>): the token of the grant released
--          last, for ARGV[4] milliseconds (what `last_release` reads)
-- KEYS[5]: the note that the request of the grant to release is done
--          (lock-done:<name>:<its id>), for ARGV[4] milliseconds: a release sent again is
--          told it happened, whatever was granted and released since, and a grant a late
--          copy of that request made is known to be held by nobody
-- ARGV[1]: our owner id
-- ARGV[2]: how long the signal stays, in milliseconds
-- ARGV[3]: the fencing token of the grant to release: when the marker names another grant,
--          the lock is a later grant to the same owner id (this release came late, or
--          twice) and is left alone
-- ARGV[4]: how long the tombstone stays, in milliseconds
-- Returns 1 when released, or when this grant's release already happened (a release sent
-- twice, its first reply lost with its connection: its note says so); 0 when we are not
-- the owner (nothing is changed then).
local held = redis.call('MGET', KEYS[1], KEYS[3])
if held[1] ~= ARGV[1]
    or (held[2] and string.match(held[2], '^[^|]*|(%d+)|') ~= ARGV[3]) then
    return redis.call('GET', KEYS[5]) == 'released' and 1 or 0
end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
redis.call('LPUSH', KEYS[2], 1)
redis.call('PEXPIRE', KEYS[2], ARGV[2])
redis.call('SET', KEYS[4], ARGV[3], 'PX', ARGV[4])
redis.call('SET', KEYS[5], 'released', 'PX', ARGV[4])
return 1
