-- A grant's fencing token: the counter `counter`'s next value, never below the server's
-- clock in microseconds, so that a counter lost with a restart, or behind on a new primary
-- after a failover, starts again above every token handed out before (as long as the
-- servers' clocks agree to within the outage). When the counter is behind the clock it is
-- set a second ahead of it, so that the next grants only increment it. A script is not
-- rolled back when a command fails, so a script takes its token before it writes anything
-- else (the INCR fails on a counter that is not an integer, or would overflow). Needs
-- clock.lua.
local function fence(counter)
    local token = redis.call('INCR', counter)
    if token < now_us then
        token = now_us + 1000000
        redis.call('SET', counter, string.format('%.0f', token))
    end
    return token
end
