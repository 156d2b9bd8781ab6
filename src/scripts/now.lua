-- Now, in milliseconds and microseconds since 1970, for a script that reads the clock on
-- every call.
local now, now_us = clock()
