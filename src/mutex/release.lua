-- Releases the lock if we own it and wakes one waiter (python-redis-lock's UNLOCK_SCRIPT).
-- KEYS[1]: the lock key (lock:<name>)
-- KEYS[2]: the signal list (lock-signal:<name>)
-- KEYS[3]: if given, the grant marker (lock-grant:<name>), deleted with the lock (this
--          crate's addition; python-redis-lock passes two keys)
-- KEYS[4]: if given, the release's tombstone (lock-released:<name>): the token of the grant
--          released last, for ARGV[4] milliseconds (this crate's addition)
-- ARGV[1]: our owner id
-- ARGV[2]: how long the signal stays, in milliseconds
-- ARGV[3]: if given (with KEYS[3]), the fencing token of the grant to release: when the
--          marker names another grant, the lock is a later grant to the same owner id
--          (this release came late, or twice) and is left alone (this crate's addition)
-- ARGV[4]: with KEYS[4], how long the tombstone stays, in milliseconds
-- Returns 1 when released, or when this grant's release already happened (a release sent
-- twice, its first reply lost with its connection: the tombstone names its token); 0 when
-- we are not the owner (nothing is changed then).
local function released_before()
    return KEYS[4] and redis.call('GET', KEYS[4]) == ARGV[3]
end
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
    if released_before() then
        return 1
    end
    return 0
end
if ARGV[3] then
    local marker = redis.call('GET', KEYS[3])
    if marker and string.match(marker, '^[^|]*|(%d+)|') ~= ARGV[3] then
        if released_before() then
            return 1
        end
        return 0
    end
end
redis.call('DEL', KEYS[2])
redis.call('LPUSH', KEYS[2], 1)
redis.call('PEXPIRE', KEYS[2], ARGV[2])
redis.call('DEL', KEYS[1])
if KEYS[3] then
    redis.call('DEL', KEYS[3])
end
if KEYS[4] then
    redis.call('SET', KEYS[4], ARGV[3], 'PX', ARGV[4])
end
return 1
