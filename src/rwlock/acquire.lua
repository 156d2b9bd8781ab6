-- Takes a read or write lock on a path of a RedisRwLock when nothing that conflicts holds it
-- or (for a reader) waits for it; otherwise registers us as a waiter, if asked, and says
-- how long to wait at most. See docs/rwlock.md.
-- KEYS: 12 per level of the path, root first and the path itself last (level L is
--   KEYS[12L-11] .. KEYS[12L]), then the fencing counter (lock-fencing-counter). Per level
--   <p>, the sorted sets map a lease id to its expiry in ms since 1970 (inf: never):
--    1 rwlock:w:<p>     writers holding <p> (at most one live)
--    2 rwlock:r:<p>     readers holding <p>
--    3 rwlock:wb:<p>    writers holding a path below <p>
--    4 rwlock:rb:<p>    readers holding a path below <p>
--    5 rwlock:qw:<p>    writers waiting for <p> (expiry: the end of their registration)
--    6 rwlock:qr:<p>    readers waiting for <p>
--    7 rwlock:qwb:<p>   writers waiting for a path below <p>
--    8 rwlock:qrb:<p>   readers waiting for a path below <p>
--    9..12              the wake lists, not used here (see rwlock_release.lua)
-- ARGV[1]: 'r' for a read lock, 'w' for a write lock
-- ARGV[2]: our lease id, unique to this request
-- ARGV[3]: the lease in milliseconds, or '0' for one that never expires
-- ARGV[4]: when blocked, how long to stay registered as a waiter, in milliseconds; '0' not
--          to register
-- Returns {1, token} when granted (or when our lease holds the path already: this very
-- request sent again, granted once, with a new token), token being the fencing token (see
-- fence.lua) for a writer and 0 for a reader; {0, ms} when blocked, ms being the time until the earliest
-- expiry among the entries that block us, or -1 when none of them expires; {-1, i} when
-- KEYS[i] holds another type than a sorted set (nothing is changed then).
local path = (#KEYS - 1) / 12
local function key(level, kind)
    return KEYS[(level - 1) * 12 + kind]
end

for i = 1, path * 12 do
    if (i - 1) % 12 < 8 then
        local kind = redis.call('TYPE', KEYS[i])['ok']
        if kind ~= 'zset' and kind ~= 'none' then
            return {-1, i}
        end
    end
end

local write = ARGV[1] == 'w'
local lease = ARGV[2]
local blocked, earliest = false, nil

-- Drops the expired entries of a set; any live one blocks us.
local function check(k)
    redis.call('ZREMRANGEBYSCORE', k, '-inf', now)
    local first = redis.call('ZRANGE', k, 0, 0, 'WITHSCORES')
    if first[1] == nil then
        return
    end
    blocked = true
    if first[2] ~= 'inf' then
        local at = tonumber(first[2])
        if earliest == nil or at < earliest then
            earliest = at
        end
    end
end

-- This very request, sent again (its connection closed before the reply, and the undo sent
-- after it reached the server first): granted once, its lease counted from now.
local mine = redis.call('ZSCORE', key(path, write and 1 or 2), lease)
local again = mine and (mine == 'inf' or tonumber(mine) > now)

if again then
    -- Nothing blocks it: it holds the path already.
elseif write then
    -- Anyone holding the path, an ancestor or a descendant.
    for _, kind in ipairs({1, 2, 3, 4}) do
        check(key(path, kind))
    end
    for level = 1, path - 1 do
        check(key(level, 1))
        check(key(level, 2))
    end
else
    -- Writers holding or waiting for the path, an ancestor or a descendant.
    for _, kind in ipairs({1, 3, 5, 7}) do
        check(key(path, kind))
    end
    for level = 1, path - 1 do
        check(key(level, 1))
        check(key(level, 5))
    end
end

local function add(k, score)
    redis.call('ZADD', k, score, lease)
    touch(k)
end

local held_at, held_below, waiting_at, waiting_below = 2, 4, 6, 8
if write then
    held_at, held_below, waiting_at, waiting_below = 1, 3, 5, 7
end

if blocked then
    if ARGV[4] ~= '0' then
        local score = now + tonumber(ARGV[4])
        add(key(path, waiting_at), score)
        for level = 1, path - 1 do
            add(key(level, waiting_below), score)
        end
    end
    if earliest == nil then
        return {0, -1}
    end
    return {0, earliest - now}
end

-- The fencing token first (see fence.lua).
local token = 0
if write then
    token = fence(KEYS[#KEYS])
end
redis.call('ZREM', key(path, waiting_at), lease)
for level = 1, path - 1 do
    redis.call('ZREM', key(level, waiting_below), lease)
end
local score = '+inf'
if ARGV[3] ~= '0' then
    score = now + tonumber(ARGV[3])
end
add(key(path, held_at), score)
for level = 1, path - 1 do
    add(key(level, held_below), score)
end
return {1, token}
