-- Takes over one read or write lease of a RedisRwLock named by a lock handle, if it is
-- still held and live: its entry is renamed to a new lease id (with the same expiry) in
-- every set that holds it, so that the handle cannot be resumed twice and every request of
-- the lease's earlier holder (which carries the old id) finds it gone from now on.
-- KEYS[1]: the set holding the entry (rwlock:r:<path> or rwlock:w:<path>)
-- KEYS[2..n-1]: the matching sets of each ancestor (rwlock:rb:<a> or rwlock:wb:<a>)
-- KEYS[n]: the fencing counter (lock-fencing-counter): a resumed write lease gets a new
--          token
-- ARGV[1]: the lease id named by the handle
-- ARGV[2]: the new lease id
-- ARGV[3]: 'w' for a write lease, 'r' for a read lease
-- Returns {1, token, ms} when taken over, token being the new fencing token of a write
-- lease (0 for a read lease) and ms the lease's remaining milliseconds (-1 without
-- expiry); {0, 0, 0} when the lease is gone or has expired; {-1, 0, 0} when a set holds
-- another type than a sorted set.
local sets = #KEYS - 1
for i = 1, sets do
    local kind = redis.call('TYPE', KEYS[i])['ok']
    if kind ~= 'zset' and kind ~= 'none' then
        return {-1, 0, 0}
    end
end
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score or (score ~= 'inf' and tonumber(score) <= now) then
    return {0, 0, 0}
end
-- The token first (see fence.lua).
local token = 0
if ARGV[3] == 'w' then
    token = fence(KEYS[#KEYS])
end
for i = 1, sets do
    local own = redis.call('ZSCORE', KEYS[i], ARGV[1])
    if own then
        redis.call('ZREM', KEYS[i], ARGV[1])
        redis.call('ZADD', KEYS[i], own, ARGV[2])
    end
end
local left = -1
if score ~= 'inf' then
    left = tonumber(score) - now
end
return {1, token, left}
