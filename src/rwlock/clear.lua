-- Removes read-write lock leases from whole levels of any trees, whoever holds them (for
-- reset_all) or those of one owner (for reset_owned_by), and wakes the levels' waiters.
-- KEYS: 12 per level, in the order of rwlock_acquire.lua (the sets 1..8, then the wake
--   lists 9..12), for any number of levels; unlike the other scripts, one level's keys
--   only, not its ancestors': a lease on a path sits in its ancestors' sets too, and the
--   caller passes every level where one may be.
-- ARGV[1]: how long a wake-up waits for its waiter, in milliseconds
-- ARGV[2]: if given, the owner id whose leases (`<owner>#<hex>`) alone are removed
-- Returns the number of live leases removed from the levels' own holder sets (1 and 2):
-- each lease counted once, on its own path.
local prefix = ARGV[2] and (ARGV[2] .. '#')
-- Removes the matching entries of a sorted set; returns how many live ones it removed.
local function clear(k)
    if redis.call('TYPE', k)['ok'] ~= 'zset' then
        return 0
    end
    local live = 0
    local entries = redis.call('ZRANGE', k, 0, -1, 'WITHSCORES')
    for i = 1, #entries, 2 do
        local lease, score = entries[i], entries[i + 1]
        if not prefix or string.sub(lease, 1, #prefix) == prefix then
            redis.call('ZREM', k, lease)
            if score == 'inf' or tonumber(score) > now then
                live = live + 1
            end
        end
    end
    touch(k)
    return live
end
local removed = 0
for base = 0, #KEYS - 12, 12 do
    local level = 0
    for kind = 1, 8 do
        local live = clear(KEYS[base + kind])
        level = level + live
        if kind <= 2 then
            removed = removed + live
        end
    end
    if level > 0 then
        wake(KEYS[base + 9], KEYS[base + 5], ARGV[1])
        wake(KEYS[base + 10], KEYS[base + 6], ARGV[1])
        wake(KEYS[base + 11], KEYS[base + 7], ARGV[1])
        wake(KEYS[base + 12], KEYS[base + 8], ARGV[1])
    end
end
return removed
