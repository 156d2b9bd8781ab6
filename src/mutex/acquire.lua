-- Takes the lock if it is free; otherwise reports how long the holder's lease has left.
-- KEYS[1]: the lock key (lock:<name>)
-- KEYS[2]: the signal list (lock-signal:<name>)
-- KEYS[3]: the fencing counter (lock-fencing-counter, or one per hash tag on a cluster);
--          never lowered
-- KEYS[4]: the grant marker (lock-grant:<name>): "<attempt>|<token>|<owner id>" of the
--          latest grant, living as long as it (operators read the token there)
-- ARGV[1]: our owner id
-- ARGV[2]: the expiry in milliseconds, or "0" for a lock that never expires
-- ARGV[3]: "1" when this client released the lock moments ago: then it takes a free lock
--          only together with its own release's signal. If that signal is gone, a waiter
--          was woken by it and is on its way; the lock is left to that waiter.
-- ARGV[4]: this attempt's id, unique to it: an undo after a lost reply removes the grant
--          only if the marker still names this attempt
-- ARGV[5]: how long the marker lives, in milliseconds: as long as the lock, and at least
--          long enough for an undo to follow. A lock without expiry gets a long one (a
--          week): the marker never outlives a lock that a client knowing nothing of it
--          (python-redis-lock, an operator's DEL) removed by more than that
-- ARGV[6]: the prefix of the notes of requests that are done (lock-done:<name>:), each
--          the prefix and a request's id, written by its release or its undo: a grant
--          whose marker names a request that is done is held by nobody (a copy of the
--          request that came late made it), and is taken back
-- Returns {1, token} when granted (or when the lock holds this attempt's grant already: the
-- same request sent again), token being the fencing token (see fence.lua);
-- {0, pttl} when held, pttl being the holder's remaining milliseconds or -1 for a holder
-- without expiry; {2, 0} when left to a woken waiter; {-1, 0} when the key holds another
-- type than string: no lock can be taken there.
-- The lock is held (or holds another type): the reply, or nil when the grant that holds it
-- is one nobody holds, taken back now.
local function held()
    if redis.call('TYPE', KEYS[1])['ok'] ~= 'string' then
        return {-1, 0}
    end
    local marker = redis.call('GET', KEYS[4])
    if marker then
        local id, token, holder = string.match(marker, '^([^|]*)|(%d+)|(.*)$')
        local owner = redis.call('GET', KEYS[1])
        -- This very attempt's grant, sent again: granted, once.
        if id == ARGV[4] and owner == ARGV[1] then
            return {1, tonumber(token)}
        end
        -- A grant made by a copy of a request that came after its undo (held in a proxy or
        -- a socket buffer), or after its own release: nobody holds it.
        if id and owner == holder and redis.call('EXISTS', ARGV[6] .. id) == 1 then
            redis.call('DEL', KEYS[1], KEYS[4])
            return nil
        end
    end
    return {0, redis.call('PTTL', KEYS[1])}
end
local function take()
    if ARGV[2] == '0' then
        return redis.call('SET', KEYS[1], ARGV[1], 'NX')
    end
    return redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2])
end
if not take() then
    local reply = held()
    if reply or not take() then
        return reply
    end
end
-- Polite: the lock is taken back (a script is not rolled back) when its signal is gone,
-- or the signal list cannot be read.
if ARGV[3] == '1' then
    local signal = redis.pcall('LPOP', KEYS[2])
    if type(signal) ~= 'string' then
        redis.call('DEL', KEYS[1])
        if type(signal) == 'table' then
            error(signal)
        end
        return {2, 0}
    end
end
local token = fence(KEYS[3], KEYS[1])
local marker = ARGV[4] .. '|' .. string.format('%d', token) .. '|' .. ARGV[1]
redis.call('SET', KEYS[4], marker, 'PX', ARGV[5])
return {1, token}
