-- A grant's fencing token: the counter `counter`'s next value. The counter lives a
-- millisecond from when it last started; when it is gone (it expired, was lost with a
-- restart, or is a lagging copy that expired on a new primary) or holds what no clock ever
-- read (below 10^15 µs, 2001: set back by hand), it starts again at the server's clock in
-- microseconds. One grant in 1,024 also checks that the counter has its expiry (a counter
-- left by an earlier version, or set by hand, has none) and gives it one. So tokens only
-- grow, and none is above the clock when handed out: a counter lives 1,000 µs, and Redis
-- cannot hand out 1,000 grants in that time. The clock is `clock()` (clock.lua, joined
-- before this): a script that read it already reads it no more. After a
-- failover, the new primary's tokens are above every token of the old one (as long as the
-- servers' clocks agree to within the outage). Under load most grants read no clock.
-- A script is not rolled back when a command fails: when the INCR fails (a counter that is
-- not an integer, or would overflow), the key `written` (if given: the lock the script
-- just took) is deleted, and the script fails.
local function fence(counter, written)
    local token = redis.pcall('INCR', counter)
    if type(token) == 'table' then
        if written then
            redis.call('DEL', written)
        end
        error(token)
    end
    if token < 1e15 or (token % 1024 == 0 and redis.call('PTTL', counter) == -1) then
        local _, now_us = clock()
        token = math.max(token, now_us)
        redis.call('SET', counter, string.format('%d', token), 'PX', 1)
    end
    return token
end
