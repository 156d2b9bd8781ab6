-- Sets the remaining lease of sorted-set leases (read and write leases of a RedisRwLock, a
-- RedisSemaphore's permits), any number in one call, or only checks them; never re-creates
-- an entry that is gone or has expired.
-- Per lease, in order: ARGV: n (how many sets hold its entry), its member (a lease id, a
-- semaphore's member), its new remaining lease in milliseconds ('0': only check it), and
-- how long a key it keeps alive lives past the lease ('0': none); KEYS: its n sets, the
-- first being the one that says whether it is live (the path's own set, the semaphore's
-- holders), the others holding the same entry (a path's ancestors' sets), then the key it
-- keeps alive, if any (a semaphore's capacity set by set_permits, which lives as long as
-- anyone holds a permit: its expiry, if it has one, is moved to the lease's end and that
-- much more, never earlier).
-- Returns a list with, for each lease, 1 when its entry is live (and, unless checking, now
-- expires in the given milliseconds), 0 when it is gone or has expired, -1 when its first
-- key holds another type; nothing is changed for the last two.
local extended, key = {}, 1
for arg = 1, #ARGV, 4 do
    local n, member, ms, keep = tonumber(ARGV[arg]), ARGV[arg + 1], ARGV[arg + 2], ARGV[arg + 3]
    local score = redis.pcall('ZSCORE', KEYS[key], member)
    if type(score) == 'table' and score.err then
        extended[#extended + 1] = -1
    elseif not score or (score ~= 'inf' and tonumber(score) <= now) then
        extended[#extended + 1] = 0
    else
        if ms ~= '0' then
            local ends = string.format('%.0f', now + tonumber(ms))
            for i = key, key + n - 1 do
                redis.call('ZADD', KEYS[i], ends, member)
                touch(KEYS[i])
            end
            if keep ~= '0' then
                local life = tonumber(ms) + tonumber(keep)
                local left = redis.call('PTTL', KEYS[key + n])
                if left >= 0 and left < life then
                    redis.call('PEXPIRE', KEYS[key + n], life)
                end
            end
        end
        extended[#extended + 1] = 1
    end
    key = key + n
    if keep ~= '0' then
        key = key + 1
    end
end
return extended
