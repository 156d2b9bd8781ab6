-- Takes a read or write lock on a path of a RedisRwLock when nothing that conflicts holds it
-- or (for a reader) waits for it; otherwise registers us as a waiter, if asked, and says
-- how long to wait at most. See docs/rwlock.md.
-- KEYS: 12 per level of the path, root first and the path itself last (level L is
--   KEYS[12L-11] .. KEYS[12L]), then the fencing counter (lock-fencing-counter), then the
--   path's notes of leases released or undone (rwlock:released:<path>). Per level
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
-- Returns {3, 0} when our lease id was undone (this is a copy of the request that came
-- late; nothing is changed); {1, token} when granted (or when our lease holds the path already: this very
-- request sent again, granted once, with a new token), token being the fencing token (see
-- fence.lua) for a writer and 0 for a reader; {0, ms} when blocked, ms being the time until the earliest
-- expiry among the entries that block us, or -1 when none of them expires; {-1, i} when
-- KEYS[i] holds another type than a sorted set (nothing is changed then: every key is read,
-- or checked, before anything is written).
local path = (#KEYS - 2) / 12
local released = KEYS[#KEYS]
local function index(level, kind)
    return (level - 1) * 12 + kind
end
local function key(level, kind)
    return KEYS[index(level, kind)]
end

-- The first key found to hold another type, by its index.
local wrong = nil

-- `command` on KEYS[i] and `args`: its reply, or nil when the key holds another type.
local function on(i, command, ...)
    local reply = redis.pcall(command, KEYS[i], ...)
    if type(reply) == 'table' and reply.err then
        wrong = wrong or i
        return nil
    end
    return reply
end

local write = ARGV[1] == 'w'
local lease = ARGV[2]
local blocked, earliest = false, nil

-- Whether a live entry of KEYS[i] blocks us; notes the earliest end among them.
local function check(i)
    local first = on(i, 'ZRANGE', '(' .. now, '+inf', 'BYSCORE', 'LIMIT', 0, 1, 'WITHSCORES')
    if not first or first[1] == nil then
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

local held_at, held_below, waiting_at, waiting_below = 2, 4, 6, 8
if write then
    held_at, held_below, waiting_at, waiting_below = 1, 3, 5, 7
end

-- A copy of a request that was undone, come late: refused.
if noted(released, lease) then
    return {3, 0}
end
local mine = on(index(path, held_at), 'ZSCORE', lease)
local again = mine and (mine == 'inf' or tonumber(mine) > now)

if again then
    -- Nothing blocks it: it holds the path already.
elseif write then
    -- Anyone holding the path, an ancestor or a descendant.
    for _, kind in ipairs({1, 2, 3, 4}) do
        check(index(path, kind))
    end
    for level = 1, path - 1 do
        check(index(level, 1))
        check(index(level, 2))
    end
else
    -- Writers holding or waiting for the path, an ancestor or a descendant.
    for _, kind in ipairs({1, 3, 5, 7}) do
        check(index(path, kind))
    end
    for level = 1, path - 1 do
        check(index(level, 1))
        check(index(level, 5))
    end
end
-- What is written and was not read: the ancestors' sets of holders and waiters below.
-- (Our own waiting entry at the path is the first write, which fails alone.)
for level = 1, path - 1 do
    on(index(level, held_below), 'ZCARD')
    on(index(level, waiting_below), 'ZCARD')
end
if wrong then
    return {-1, wrong}
end

local function add(k, score)
    redis.call('ZREMRANGEBYSCORE', k, '-inf', now)
    redis.call('ZADD', k, score, lease)
    touch(k)
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

local token = 0
if write then
    token = fence(KEYS[#KEYS - 1])
end
redis.call('ZREM', key(path, waiting_at), lease)
for level = 1, path - 1 do
    redis.call('ZREM', key(level, waiting_below), lease)
end
local score = '+inf'
if ARGV[3] ~= '0' then
    score = now + tonumber(ARGV[3])
end
if write then
    -- Nothing live holds the path: our lease ends last.
    redis.call('ZADD', key(path, held_at), score, lease)
    if score == '+inf' then
        redis.call('PERSIST', key(path, held_at))
    else
        redis.call('PEXPIREAT', key(path, held_at), score)
    end
else
    add(key(path, held_at), score)
end
for level = 1, path - 1 do
    add(key(level, held_below), score)
end
return {1, token}
