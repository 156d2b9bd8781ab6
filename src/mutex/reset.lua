-- Deletes locks and wakes one waiter of each (python-redis-lock's RESET_SCRIPT, for any
-- number of locks in one call); with an owner id, only the locks that owner holds.
-- KEYS[4i-3]: a lock key (lock:<name>)
-- KEYS[4i-2]: its signal list (lock-signal:<name>)
-- KEYS[4i-1]: its grant marker (lock-grant:<name>), deleted with it
-- KEYS[4i]: its release's tombstone (lock-released:<name>), which then says "reset|<token>"
--           (the token of the grant reset, or nothing when unknown), so that `watch` and
--           `last_release` can tell a reset from a release
-- ARGV[1]: how long a signal stays, in milliseconds
-- ARGV[2]: how long the tombstone stays, in milliseconds
-- ARGV[3]: if given, the owner id whose locks alone are deleted
-- ARGV[4]: if given (with ARGV[3]), the fencing token of the one grant to delete, or ''
--          for a grant without one (python-redis-lock's): a lock whose marker names
--          another grant of that owner, or that has a token now, or none now, is left
--          alone, so that a copy of this call that comes late (sent again after a timeout
--          while the server was paused) never deletes a grant made since
-- ARGV[5]: if given (with one lock), the note of this very call (lock-done:<name>:<its
--          id>), written with its result for ARGV[2] milliseconds: a copy of the call that
--          comes after it returns that result and changes nothing, whatever was granted
--          since (even to the same owner id, with no marker to tell the grants apart)
-- Returns a list with, for each lock, 1 when it was deleted, 0 when there was none (or
-- another owner holds it), and -1 when its key holds another type than string: not a lock
-- of this protocol, left alone.
-- The fencing token of the grant that holds `lock`, if its marker names its owner.
local function token_of(lock, marker)
    local owner = redis.call('GET', lock)
    if owner and redis.call('TYPE', marker)['ok'] == 'string' then
        local token, by = string.match(redis.call('GET', marker), '^[^|]*|(%d+)|(.*)$')
        if by == owner then
            return token
        end
    end
    return nil
end
if ARGV[5] then
    local done = redis.call('GET', ARGV[5])
    if done then
        return {tonumber(done)}
    end
end
local results = {}
for i = 1, #KEYS, 4 do
    local kind = redis.call('TYPE', KEYS[i])['ok']
    if kind ~= 'string' and kind ~= 'none' then
        results[#results + 1] = -1
    elseif ARGV[3] and redis.call('GET', KEYS[i]) ~= ARGV[3] then
        results[#results + 1] = 0
    else
        local token = token_of(KEYS[i], KEYS[i + 2])
        if ARGV[4] and (token or '') ~= ARGV[4] then
            results[#results + 1] = 0
        else
            redis.call('DEL', KEYS[i + 1])
            redis.call('LPUSH', KEYS[i + 1], 1)
            redis.call('PEXPIRE', KEYS[i + 1], ARGV[1])
            redis.call('DEL', KEYS[i + 2])
            local deleted = redis.call('DEL', KEYS[i])
            if deleted == 1 then
                redis.call('SET', KEYS[i + 3], 'reset|' .. (token or ''), 'PX', ARGV[2])
            end
            results[#results + 1] = deleted
        end
    end
end
if ARGV[5] then
    redis.call('SET', ARGV[5], results[1], 'PX', ARGV[2])
end
return results
