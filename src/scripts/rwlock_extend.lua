-- Sets the remaining lease of our read or write lock on a RedisRwLock path, or only checks
-- that it is still ours; never re-creates an entry that is gone or has expired.
-- KEYS[1]: the set holding our entry (rwlock:r:<path> or rwlock:w:<path>)
-- KEYS[2..]: the matching sets of each ancestor (rwlock:rb:<a> or rwlock:wb:<a>)
-- ARGV[1]: our lease id
-- ARGV[2]: the new remaining lease in milliseconds, or '0' to only check
-- Returns 1 when the entry is ours and live (and, unless checking, now expires in ARGV[2]
-- ms), 0 when it is gone or has expired (nothing is changed then).
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score or (score ~= 'inf' and tonumber(score) <= now) then
    return 0
end
if ARGV[2] == '0' then
    return 1
end
local until_ = string.format('%.0f', now + tonumber(ARGV[2]))
for _, k in ipairs(KEYS) do
    redis.call('ZADD', k, until_, ARGV[1])
    -- The set lives as long as its latest entry.
    local last = redis.call('ZRANGE', k, -1, -1, 'WITHSCORES')
    if last[2] == 'inf' then
        redis.call('PERSIST', k)
    else
        redis.call('PEXPIREAT', k, last[2])
    end
end
return 1
