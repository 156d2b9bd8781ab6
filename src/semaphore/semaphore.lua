-- A RedisSemaphore: permits as leases, waiters woken as permits free up for them.
-- See docs/semaphore.md.
-- KEYS[1]: the holders (semaphore:<name>): a sorted set,
--          "<permits>/<capacity>/<token>:<lease id>" -> the end of the lease in ms since
--          1970 (inf: never), the capacity being what the grant was made under and the
--          token its fencing token (both for the operator tools; members written before
--          tokens were kept have no "/<token>"); it expires with its last lease
-- KEYS[2]: the capacity set by set_permits (semaphore-capacity:<name>), if any
-- KEYS[3]: the queue (semaphore-queue:<name>): waiter id -> when it came, in microseconds
-- KEYS[4]: the waiters (semaphore-waiters:<name>): waiter id -> "<permits>|<end of entry>"
-- KEYS[5]: the fencing counter (lock-fencing-counter, or one per slot on a cluster)
-- KEYS[6]: the releases of a moment ago (semaphore-released:<name>): a sorted set, member ->
--          until when its release is remembered (ms since 1970), so that a release sent
--          again (its first reply lost with its connection) is told it happened
-- ARGV[1]: 'acquire', 'release', 'leave', 'set', 'reset' or 'state' (extends go through
--          lease_extend.lua)
-- ARGV[2]: the capacity the caller was built with, used while KEYS[2] does not exist
-- ARGV[3]: the prefix of the waiters' wake lists (semaphore-wake:<name>:); a waiter's list
--          is the prefix and its id. It carries the semaphore's hash tag, so on a cluster
--          the lists share its slot; they are named here, not in KEYS, as fair.lua's are
-- ARGV[4]: how long a wake-up stays in its list, in milliseconds
-- Per operation, from ARGV[5]:
--   acquire: ARGV[5] our lease id (unique to this request: when a member with it holds
--            permits already, this very request was sent again and is granted once), ARGV[6] the permits, ARGV[7] the
--            lease in ms ('0': never expires), ARGV[8] our waiter id, ARGV[9] how long our
--            queue entry lives unless refreshed, in ms ('0': not to queue, a try), ARGV[10]
--            '1' for fair mode (no permit is taken while a waiter that came first waits),
--            ARGV[11] how long a capacity set by set_permits is kept after the last lease
--            ends and the last waiter tries (ms)
--   release: ARGV[5] the member to remove (or, with ARGV[7] = '1', the lease id whose
--            member to remove: an undo, which does not know the capacity it was granted
--            under), ARGV[6] '1' for fair mode, ARGV[8] how long the release is
--            remembered, in ms (KEYS[6]; '0' or none: not at all), ARGV[9] as acquire's
--            ARGV[11]
--   leave:   ARGV[5] our waiter id, ARGV[6] '1' for fair mode
--   set:     ARGV[5] the new capacity, ARGV[6] how long it is kept (ms), ARGV[7] fair mode
--   reset:   ARGV[5] if given and not '', the owner id whose permits alone are removed;
--            ARGV[6] and after, if given, the members to remove, none other (those the
--            reset read before: a copy of it that comes late leaves a grant made since)
-- Returns, for 'acquire': {3, 0, 0} when this request was undone (a copy that came late;
-- nothing is changed); {1, token, capacity} when granted, token being the fencing
-- token (see fence.lua) and capacity the one it was granted under (its member is
-- "<permits>/<capacity>/<token>:<lease id>"); {0, ms, 0} when not, ms being the time until the
-- earliest holder's lease runs out (-1 when none will); {-2, capacity, 0} when more
-- permits are asked for than the capacity; {-1, 0, 0} when a key holds another type
-- (nothing is changed then). For 'release': 1 when the member was ours and removed (or its
-- release happened moments ago: the same release sent again), 0 when it was gone (expired
-- or reset). For 'leave': 1. For 'set': {capacity, permits in use}. For
-- 'reset': how many members were removed. For 'state': {capacity set by set_permits or -1,
-- permits in use, live waiters, member, ms left or -1, ...}.
-- A script is not rolled back when a command fails: every key is read before anything is
-- written, so that a key of another type (WRONGTYPE) or a counter that cannot be
-- incremented fails the script while nothing has changed but the sweep of expired leases.
local op = ARGV[1]

local function permits_of(member)
    return tonumber(string.match(member, '^(%d+)/')) or 0
end

-- The lease id of a member, "<permits>/<capacity>/<token>:<lease id>" (or, written before
-- tokens were kept, "<permits>/<capacity>:<lease id>").
local function lease_of(member)
    return string.match(member, '^[%d/]+:(.*)$')
end

-- The member of a grant of `permits` under `capacity`, with `token`, to the lease `lease`
-- (the token written out whole: Lua would write a number past 10^14 in exponent form).
local function member_for(permits, capacity, token, lease)
    return permits .. '/' .. capacity .. '/' .. string.format('%d', token) .. ':' .. lease
end

-- Removes the holders whose lease ran out; returns the permits the others hold, the
-- member of the lease id `lease` among them (if one is given, and holds permits), and the
-- latest end of their leases (0 when there are none, 'inf' when one never ends).
local function in_use(lease)
    redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
    local used, mine, last = 0, nil, 0
    local holders = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
    for i = 1, #holders, 2 do
        local member = holders[i]
        used = used + permits_of(member)
        if lease and lease_of(member) == lease then
            mine = member
        end
        last = holders[i + 1]
    end
    return used, mine, last
end

-- Holds the lease `member` until `ends` (ms since 1970, or 'inf'), the holders living as
-- long as their latest lease (`last` before this one, from in_use).
local function hold(member, ends, last)
    redis.call('ZADD', KEYS[1], ends, member)
    if ends == 'inf' or last == 'inf' then
        redis.call('PERSIST', KEYS[1])
    elseif ends >= tonumber(last) then
        redis.call('PEXPIREAT', KEYS[1], ends)
    end
end

-- The later of two ends of leases (ms since 1970, 'inf', or 0 for none).
local function later(a, b)
    if a == 'inf' or b == 'inf' then
        return 'inf'
    end
    return math.max(tonumber(a), tonumber(b))
end

-- Keeps a capacity set by set_permits as long as anyone holds permits (the latest lease
-- ends at `last`; 'inf': never) or waits, and `life` ms after.
local function keep_capacity(last, life)
    if last == 'inf' then
        redis.call('PERSIST', KEYS[2])
    else
        redis.call('PEXPIREAT', KEYS[2], math.max(tonumber(last), now) + tonumber(life))
    end
end

-- Whether anyone is queued. Reads the queue and, if there is one, the waiters, so that a
-- key of another type fails the script before it writes.
local function queued()
    if redis.call('ZCARD', KEYS[3]) == 0 then
        return false
    end
    redis.call('HLEN', KEYS[4])
    return true
end

local function capacity()
    return tonumber(redis.call('GET', KEYS[2]) or ARGV[2])
end


-- The live waiters, in the order they came, as {id, permits}; drops the others, and makes
-- the queue and the waiters live as long as their last entry.
local function live_waiters()
    local live, last_end = {}, 0
    for _, id in ipairs(redis.call('ZRANGE', KEYS[3], 0, -1)) do
        local entry = redis.call('HGET', KEYS[4], id)
        local permits, ends
        if entry then
            permits, ends = string.match(entry, '^(%d+)|(%d+)$')
        end
        if ends and tonumber(ends) > now then
            live[#live + 1] = {id, tonumber(permits)}
            last_end = math.max(last_end, tonumber(ends))
        else
            redis.call('ZREM', KEYS[3], id)
            redis.call('HDEL', KEYS[4], id)
        end
    end
    if #live > 0 then
        redis.call('PEXPIREAT', KEYS[3], last_end)
        redis.call('PEXPIREAT', KEYS[4], last_end)
    end
    return live
end

-- Wakes the waiters `free` permits are enough for, in the order they came; in fair mode
-- it stops at the first that does not fit, so that nobody overtakes it.
local function wake(free, fair)
    for _, waiter in ipairs(live_waiters()) do
        if waiter[2] <= free then
            local list = ARGV[3] .. waiter[1]
            redis.call('DEL', list)
            redis.call('LPUSH', list, 1)
            redis.call('PEXPIRE', list, ARGV[4])
            free = free - waiter[2]
        elseif fair then
            return
        end
    end
end

-- The holders' member of the lease id `lease`, if it holds permits.
local function member_of(lease)
    for _, m in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
        if lease_of(m) == lease then
            return m
        end
    end
    return nil
end

local function remove_waiter(id)
    redis.call('ZREM', KEYS[3], id)
    redis.call('HDEL', KEYS[4], id)
    redis.call('DEL', ARGV[3] .. id)
end

-- A granted waiter leaves the queue, if there is one (`queue`, from queued()): without a
-- queue a wake-up left for it is a hint nobody reads, which expires.
local function granted(id, queue)
    if queue then
        remove_waiter(id)
        live_waiters()
    end
end


if op == 'acquire' then
    local wanted, me = tonumber(ARGV[6]), ARGV[8]
    local fair = ARGV[10] == '1'
    -- With our own member, if this very request holds permits already: it was sent again
    -- (its connection closed before the reply, and the undo sent after it reached the
    -- server first), and is granted once, its lease counted from now, with a new token
    -- (its member rewritten to carry it).
    -- A copy of a request that was undone, come late: refused.
    if noted(KEYS[6], ARGV[5]) then
        return {3, 0, 0}
    end
    local used, own, last = in_use(ARGV[5])
    local set = redis.call('GET', KEYS[2])
    local cap = tonumber(set or ARGV[2])
    local queue = queued()
    local ends = ARGV[7] == '0' and 'inf' or now + tonumber(ARGV[7])
    if set then
        keep_capacity(later(last, ends), ARGV[11])
    end
    if own then
        local token = fence(KEYS[5])
        local held, under = string.match(own, '^(%d+)/(%d+)')
        redis.call('ZREM', KEYS[1], own)
        hold(member_for(held, under, token, ARGV[5]), ends, last)
        granted(me, queue)
        return {1, token, tonumber(under)}
    end
    if wanted > cap then
        remove_waiter(me)
        wake(cap - used, fair)
        return {-2, cap, 0}
    end
    -- In fair mode, the waiters that came first go first: we fit only with all of them
    -- (they were woken for what is free, and may not have come yet).
    local ahead = 0
    if fair then
        for _, waiter in ipairs(live_waiters()) do
            if waiter[1] == me then
                break
            end
            ahead = ahead + waiter[2]
        end
    end
    if used + ahead + wanted <= cap then
        local token = fence(KEYS[5])
        hold(member_for(wanted, cap, token, ARGV[5]), ends, last)
        granted(me, queue)
        return {1, token, cap}
    end
    if ARGV[9] ~= '0' then
        redis.call('ZADD', KEYS[3], 'NX', now_us, me)
        redis.call('HSET', KEYS[4], me, wanted .. '|' .. (now + tonumber(ARGV[9])))
        live_waiters()
    end
    local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
    if first[1] == nil or first[2] == 'inf' then
        return {0, -1, 0}
    end
    return {0, tonumber(first[2]) - now, 0}
elseif op == 'release' then
    -- A lease that ran out is no longer ours, even before a sweep removed it: 0 then.
    local member = ARGV[5]
    local remember = tonumber(ARGV[8])
    if ARGV[7] == '1' then
        -- An undo: the lease id is noted as undone, so that a copy of its request that
        -- comes late is refused.
        forget_old(KEYS[6])
        note(KEYS[6], ARGV[5], remember)
        member = member_of(ARGV[5])
        if not member then
            return 0
        end
    end
    local score = redis.call('ZSCORE', KEYS[1], member)
    if not score then
        -- This release, sent again: it happened.
        return noted(KEYS[6], member) and 1 or 0
    end
    if remember > 0 then
        forget_old(KEYS[6])
    end
    local queue = queued()
    -- The holders keep their expiry: the latest lease's end, or later (this one's).
    redis.call('ZREM', KEYS[1], member)
    if score == 'inf' and redis.call('EXISTS', KEYS[2]) == 1 then
        local left = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
        keep_capacity(left[2] or 0, ARGV[9])
    end
    if queue then
        wake(capacity() - in_use(), ARGV[6] == '1')
    end
    if score ~= 'inf' and tonumber(score) <= now then
        return 0
    end
    if remember > 0 then
        note(KEYS[6], member, remember)
    end
    return 1
elseif op == 'leave' then
    in_use()
    capacity()
    queued()
    remove_waiter(ARGV[5])
    -- A wake-up meant for us may have gone with our list: pass it on.
    wake(capacity() - in_use(), ARGV[6] == '1')
    return 1
elseif op == 'set' then
    local used, _, last = in_use()
    capacity()
    queued()
    redis.call('SET', KEYS[2], ARGV[5])
    keep_capacity(last, ARGV[6])
    wake(tonumber(ARGV[5]) - used, ARGV[7] == '1')
    return {tonumber(ARGV[5]), used}
elseif op == 'reset' then
    capacity()
    queued()
    local removed = 0
    local named = nil
    if #ARGV > 5 then
        named = {}
        for i = 6, #ARGV do
            named[ARGV[i]] = true
        end
    end
    for _, member in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
        local lease = lease_of(member) or ''
        local owner = string.match(lease, '^(.*)#%x+$') or lease
        if (not ARGV[5] or ARGV[5] == '' or owner == ARGV[5])
            and (not named or named[member]) then
            redis.call('ZREM', KEYS[1], member)
            removed = removed + 1
        end
    end
    if removed > 0 then
        touch(KEYS[1])
        -- Every waiter that fits now, whatever the mode: a reset is no release in order.
        wake(capacity() - in_use(), false)
    end
    return removed
elseif op == 'state' then
    local used = in_use()
    queued()
    local out = {tonumber(redis.call('GET', KEYS[2]) or '-1'), used, #live_waiters()}
    local holders = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
    for i = 1, #holders, 2 do
        out[#out + 1] = holders[i]
        if holders[i + 1] == 'inf' then
            out[#out + 1] = -1
        else
            out[#out + 1] = tonumber(holders[i + 1]) - now
        end
    end
    return out
end
return redis.error_reply('ERR semaphore.lua: unknown operation ' .. tostring(op))
