-- The server's clock, read once, when first asked: now in milliseconds and in microseconds
-- since 1970. A script that may need no clock (fair.lua, for a free lock with nobody
-- queued) calls `clock()` where it needs one; the others start with `now.lua`.
local clock_read = nil
local function clock()
    if not clock_read then
        local t = redis.call('TIME')
        local us = tonumber(t[1]) * 1000000 + tonumber(t[2])
        clock_read = {math.floor(us / 1000), us}
    end
    return clock_read[1], clock_read[2]
end
