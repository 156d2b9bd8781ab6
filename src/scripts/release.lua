-- Releases the lock if we own it and wakes one waiter (python-redis-lock's UNLOCK_SCRIPT).
-- KEYS[1]: the lock key (lock:<name>)
-- KEYS[2]: the signal list (lock-signal:<name>)
-- KEYS[3]: if given, the grant marker (lock-grant:<name>), deleted with the lock (this
--          crate's addition; python-redis-lock passes two keys)
-- ARGV[1]: our owner id
-- ARGV[2]: how long the signal stays, in milliseconds
-- ARGV[3]: if given (with KEYS[3]), the fencing token of the grant to release: when the
--          marker names another grant, the lock is a later grant to the same owner id
--          (this release came late, or twice) and is left alone (this crate's addition)
-- Returns 1 when released, 0 when we are not the owner (nothing is changed then).
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
    return 0
end
if ARGV[3] then
    local marker = redis.call('GET', KEYS[3])
    if marker and string.match(marker, '^[^|]*|(%d+)|') ~= ARGV[3] then
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
return 1
