-- Removes our entry from a RedisRwLock path (a held lock, or a registration as a waiter)
-- and wakes every waiter it may have held back. See docs/rwlock.md.
-- KEYS: 12 per level of the path, root first and the path itself last, as for
--   rwlock_acquire.lua (without the fencing counter). The wake lists of level <p>:
--    9 rwlock:wake-w:<p>    writers waiting for <p> block on it
--   10 rwlock:wake-r:<p>    readers waiting for <p> block on it
--   11 rwlock:wake-wb:<p>   writers waiting for a path below <p> block on it
--   12 rwlock:wake-rb:<p>   readers waiting for a path below <p> block on it
--   Waking a list replaces it by one element per live waiter of its set (5, 6, 7, 8).
--   Then, for the release of a held lock, one more key: the releases of a moment ago
--   (rwlock:released:<path>), a sorted set, lease id -> until when its release is
--   remembered (ms since 1970), so that a release sent again (its first reply lost with its
--   connection) is told it happened
-- ARGV[1]: the entry: 'r' or 'w' for a held read or write lock, 'qr' or 'qw' for a
--          registration as a waiting reader or writer
-- ARGV[2]: our lease id; or '*' for a reset: the entries of that kind on the path named in
--          ARGV[6] and after (those the reset read before: a copy of it that comes late
--          leaves an entry made since)
-- ARGV[3]: how long a wake-up waits for its waiter, in milliseconds
-- ARGV[4]: with the releases' key, how long a release is remembered, in milliseconds
--          (without it, nothing is remembered)
-- ARGV[5]: 'undo' for the undo of a lock request whose reply was lost: the lease id is
--          noted whatever it finds, so that a copy of the request that comes late is
--          refused
-- Returns the number of live entries removed (1 for one lease that was ours, or whose
-- release happened moments ago: the same release sent again), whose waiters are then
-- woken; 0 when the entry was gone or had expired (an expired entry is removed; nobody is
-- woken).
local path = math.floor(#KEYS / 12)
local released = nil
if #KEYS % 12 == 1 and ARGV[4] then
    released = KEYS[#KEYS]
    -- Read before anything is written: a script is not rolled back.
    forget_old(released)
    -- An undo: the lease id is noted, so that a copy of its request that comes late is
    -- refused.
    if ARGV[5] == 'undo' then
        note(released, ARGV[2], tonumber(ARGV[4]))
    end
end
local function key(level, kind)
    return KEYS[(level - 1) * 12 + kind]
end

local kinds = {w = {1, 3}, r = {2, 4}, qw = {5, 7}, qr = {6, 8}}
local at, below = kinds[ARGV[1]][1], kinds[ARGV[1]][2]
local leases = {ARGV[2]}
if ARGV[2] == '*' then
    leases = {}
    for i = 6, #ARGV do
        leases[#leases + 1] = ARGV[i]
    end
end
-- Each set keeps its expiry: its latest entry's end, or later (the entry removed).
local live = 0
for _, lease in ipairs(leases) do
    local score = redis.call('ZSCORE', key(path, at), lease)
    redis.call('ZREM', key(path, at), lease)
    for level = 1, path - 1 do
        redis.call('ZREM', key(level, below), lease)
    end
    if score and (score == 'inf' or tonumber(score) > now) then
        live = live + 1
    end
end
if live == 0 then
    if released and noted(released, ARGV[2]) then
        return 1
    end
    return 0
end
if released then
    note(released, ARGV[2], tonumber(ARGV[4]))
end

-- Nobody waits on this path or above it: nobody to wake.
local queues = {}
for level = 1, path do
    for kind = 5, 8 do
        queues[#queues + 1] = key(level, kind)
    end
end
if redis.call('EXISTS', unpack(queues)) == 0 then
    return live
end

local role = ARGV[1]
if role == 'w' or role == 'r' then
    wake(key(path, 9), key(path, 5), ARGV[3])
    wake(key(path, 11), key(path, 7), ARGV[3])
    for level = 1, path - 1 do
        wake(key(level, 9), key(level, 5), ARGV[3])
    end
end
if role == 'w' or role == 'qw' then
    wake(key(path, 10), key(path, 6), ARGV[3])
    wake(key(path, 12), key(path, 8), ARGV[3])
    for level = 1, path - 1 do
        wake(key(level, 10), key(level, 6), ARGV[3])
    end
end
return live
