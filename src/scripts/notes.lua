-- Notes of requests that happened (releases): a sorted set, member -> until when it is
-- remembered (ms since 1970). Needs clock.lua.
-- Drops the notes whose time is up. Called before a script writes anything else: on a
-- key of another type it fails the script while nothing has changed.
local function forget_old(notes)
    redis.call('ZREMRANGEBYSCORE', notes, '-inf', now)
end

-- Remembers `member` for `ms` milliseconds; the set lives as long as its latest note.
local function note(notes, member, ms)
    redis.call('ZADD', notes, now + ms, member)
    if redis.call('PTTL', notes) < ms then
        redis.call('PEXPIRE', notes, ms)
    end
end

-- Whether `member` is remembered.
local function noted(notes, member)
    local until_ms = redis.call('ZSCORE', notes, member)
    return until_ms ~= false and tonumber(until_ms) > now
end
