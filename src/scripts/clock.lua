-- The server's clock, read once: now in microseconds and in milliseconds since 1970.
local clock = redis.call('TIME')
local now_us = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local now = math.floor(now_us / 1000)
