-- Fair mode of a mutex: waiters queue in order of arrival, and a release hands the lock to
-- the first live waiter inside the release (its wake-up is its grant). See docs/mutex.md.
-- KEYS[1]: the lock key (lock:<name>)
-- KEYS[2]: the signal list (lock-signal:<name>): what a release wakes when nobody is queued
-- KEYS[3]: the fencing counter; never lowered
-- KEYS[4]: the grant marker (lock-grant:<name>): "<waiter id>|<token>|<owner id>" of the
--          latest grant, living as long as it
-- KEYS[5]: the queue (lock-queue:<name>): waiter ids, oldest first
-- KEYS[6]: the waiters (lock-waiters:<name>): waiter id -> "deadline|expire|owner id"
-- KEYS[7]: our own wake list (lock-wake:<name>:<our waiter id>)
-- KEYS[8]: the release's tombstone (lock-released:<name>): the token of the grant released
--          last, for ARGV[11] milliseconds, so that a release sent twice is told it happened
-- ARGV[1]: 'acquire', 'first' (an acquire call's first attempt: its waiter id is new, so
--          it has no entry or wake list to clear), 'release' or 'leave'
-- ARGV[2]: our owner id
-- ARGV[3]: our waiter id: this call's, unique to it; also its grant marker
-- ARGV[4]: the expiry of our grant in milliseconds, or '0' for one that never expires
-- ARGV[5]: how long our queue entry lives unless refreshed, in milliseconds; '0' not to
--          queue (a try_lock)
-- ARGV[6]: how long a grant marker lives at least, in milliseconds (for a lock without
--          expiry, a week: no marker is left without an expiry)
-- ARGV[7]: the prefix of the waiters' wake lists (lock-wake:<name>:); a waiter's list is
--          the prefix and its id. It carries the lock's hash tag, so on a cluster every
--          waiter's list shares the lock's slot; the release names the list of the waiter
--          it hands over to, which no caller can know in advance.
-- ARGV[8]: how long a signal or a handed-over grant waits in its list, in milliseconds
-- ARGV[9]: for 'release', the fencing token of the grant to release: when the marker names
--          another grant, the lock is a later grant to the same owner id (this release
--          came late, or twice) and is left alone
-- ARGV[10]: how long a lock without expiry handed to a waiter lives until the waiter
--          claims it, in milliseconds (a few lives of a queue entry: the waiter was live
--          a moment ago)
-- ARGV[11]: how long a release's tombstone, and a note that a waiter is done, stay, in
--          milliseconds
-- ARGV[12]: the prefix of the notes of waiters that are done (lock-done:<name>:), each
--          the prefix and a waiter id: written when it leaves (the note says 'undone') and
--          when its grant is released ('released'); a grant whose marker names a waiter
--          that is done is held by nobody, and the next attempt takes it back
-- Returns, for 'acquire': {1, token} when granted, or when the lock holds a grant handed to
-- us that we had not taken yet (its wake-up was not read, or was lost with a reply, or the
-- lock has no expiry and the handoff's provisional one must be lifted): it is claimed then,
-- its expiry set anew as if granted now; {0, pttl} when held (pttl: the
-- holder's remaining milliseconds, -1 without expiry); {2, 0} when the lock was free but
-- handed to a waiter ahead of us; {-1, 0} when the key holds another type than string.
-- An acquire that does not grant empties our wake list: whatever is there is a grant gone
-- since, and a later wake-up is then always a grant made after this call.
-- For 'release': 0 when not ours (nothing changed), 1 when released with nobody queued (or
-- when this grant's release already happened: a release sent twice), 2 when handed to a
-- waiter (never to the releasing grant's own waiter). For 'leave': 1
-- when we held a grant (handed to us or made by an acquire whose reply was lost) and
-- passed it on, 0 otherwise.
-- Everything that can fail (the counter's INCR) comes before a grant is written: an error
-- aborts the script.
local op, owner, me = ARGV[1], ARGV[2], ARGV[3]

local function remove(id)
    redis.call('LREM', KEYS[5], 0, id)
    redis.call('HDEL', KEYS[6], id)
end

-- The first waiter whose entry has not expired, as {id, expire, owner}; expired entries
-- ahead of it are dropped. The waiter stays queued.
local function live_head()
    while true do
        local id = redis.call('LINDEX', KEYS[5], 0)
        if not id then
            return nil
        end
        local entry = redis.call('HGET', KEYS[6], id)
        if entry then
            local a = string.find(entry, '|', 1, true)
            local b = string.find(entry, '|', a + 1, true)
            if tonumber(string.sub(entry, 1, a - 1)) > clock() then
                return {id, string.sub(entry, a + 1, b - 1), string.sub(entry, b + 1)}
            end
        end
        redis.call('LPOP', KEYS[5])
        redis.call('HDEL', KEYS[6], id)
    end
end

-- Writes the marker of a grant to `holder` (for its waiter `id`) with the token `token`.
local function mark(id, token, expire, holder)
    redis.call('SET', KEYS[4], id .. '|' .. string.format('%d', token) .. '|' .. holder, 'PX',
        math.max(tonumber(expire), tonumber(ARGV[6])))
end

-- Takes the lock for us if it is free: the token, or nil.
local function take()
    local taken
    if ARGV[4] == '0' then
        taken = redis.call('SET', KEYS[1], owner, 'NX')
    else
        taken = redis.call('SET', KEYS[1], owner, 'NX', 'PX', ARGV[4])
    end
    if not taken then
        return nil
    end
    local token = fence(KEYS[3], KEYS[1])
    mark(me, token, ARGV[4], owner)
    return token
end

-- Hands the lock to the first live waiter: grants it and pushes the token to its list,
-- which wakes it. False when nobody is queued. A lock without expiry is handed over with
-- an expiry of ARGV[10] milliseconds, which the waiter's claim lifts: a waiter that died
-- before it could take its grant holds nobody up for longer than that.
local function hand_over()
    local head = live_head()
    if not head then
        return false
    end
    remove(head[1])
    local expire = head[2]
    if expire == '0' then
        expire = ARGV[10]
    end
    local token = fence(KEYS[3])
    redis.call('SET', KEYS[1], head[3], 'PX', expire)
    mark(head[1], token, expire, head[3])
    local wake = ARGV[7] .. head[1]
    redis.call('DEL', wake)
    redis.call('RPUSH', wake, string.format('%d', token))
    redis.call('PEXPIRE', wake, ARGV[8])
    return true
end

local function queue(ttl)
    if redis.call('HEXISTS', KEYS[6], me) == 0 then
        redis.call('RPUSH', KEYS[5], me)
    end
    redis.call('HSET', KEYS[6], me, (clock() + tonumber(ttl)) .. '|' .. ARGV[4] .. '|' .. owner)
    for _, k in ipairs({KEYS[5], KEYS[6]}) do
        if redis.call('PTTL', k) < tonumber(ttl) then
            redis.call('PEXPIRE', k, ttl)
        end
    end
end

local function free()
    redis.call('DEL', KEYS[1], KEYS[2], KEYS[4])
    redis.call('LPUSH', KEYS[2], 1)
    redis.call('PEXPIRE', KEYS[2], ARGV[8])
end

-- Whether the grant the marker names is held by nobody: the waiter it was made for is done
-- (it left, or released it already), and a late copy of its request made it (or a release
-- handed it to that waiter after it left).
local function orphan(marker)
    if not marker then
        return false
    end
    local id, holder = string.match(marker, '^([^|]*)|%d+|(.*)$')
    return id ~= nil and redis.call('GET', KEYS[1]) == holder
        and redis.call('EXISTS', ARGV[12] .. id) == 1
end

-- Whether the latest grant is ours: the marker names our waiter id, and the lock our owner.
local function granted_to_me()
    local marker = redis.call('GET', KEYS[4])
    return marker and string.sub(marker, 1, #me + 1) == me .. '|'
        and redis.call('GET', KEYS[1]) == owner, marker
end

-- Takes the lock if it is free and no live waiter is ahead of us, leaving the queue if we
-- were in it: the reply, or nil.
local function take_first()
    local head = live_head()
    if head and head[1] ~= me then
        return nil
    end
    local token = take()
    if token and head then
        remove(me)
    end
    return token and {1, token}
end

if op == 'acquire' or op == 'first' then
    if op == 'acquire' then
        redis.call('DEL', KEYS[7])
    end
    local taken = take_first()
    if taken then
        return taken
    end
    if redis.call('EXISTS', KEYS[1]) == 1 then
        if redis.call('TYPE', KEYS[1])['ok'] ~= 'string' then
            return {-1, 0}
        end
        local mine, marker = granted_to_me()
        if mine then
            -- Handed to us earlier: claim it, with a lease that starts now.
            remove(me)
            if ARGV[4] == '0' then
                redis.call('PERSIST', KEYS[1])
            else
                redis.call('PEXPIRE', KEYS[1], ARGV[4])
            end
            redis.call('PEXPIRE', KEYS[4], math.max(tonumber(ARGV[4]), tonumber(ARGV[6])))
            return {1, tonumber(string.match(marker, '^[^|]*|(%d+)|'))}
        end
        if not orphan(marker) then
            if ARGV[5] ~= '0' then
                queue(ARGV[5])
            end
            return {0, redis.call('PTTL', KEYS[1])}
        end
        -- Held by nobody: taken back, and free now.
        redis.call('DEL', KEYS[1], KEYS[4])
        taken = take_first()
        if taken then
            return taken
        end
    end
    -- Free, with a waiter ahead of us: it is the waiter's.
    hand_over()
    if ARGV[5] ~= '0' then
        queue(ARGV[5])
    end
    return {2, 0}
elseif op == 'release' then
    local held = redis.call('MGET', KEYS[1], KEYS[4])
    local marker = held[2]
    if held[1] ~= owner
        or (marker and string.match(marker, '^[^|]*|(%d+)|') ~= ARGV[9]) then
        return redis.call('GET', ARGV[12] .. me) == 'released' and 1 or 0
    end
    -- The releasing grant's own waiter is not waiting any more, whatever its entry says.
    if marker then
        local holder = string.match(marker, '^([^|]*)|')
        if redis.call('HDEL', KEYS[6], holder) == 1 then
            redis.call('LREM', KEYS[5], 0, holder)
            redis.call('DEL', ARGV[7] .. holder)
        end
    end
    redis.call('SET', KEYS[8], ARGV[9], 'PX', ARGV[11])
    redis.call('SET', ARGV[12] .. me, 'released', 'PX', ARGV[11])
    if hand_over() then
        return 2
    end
    free()
    return 1
else
    -- Noted as done: a copy of one of its requests that comes late makes a grant that the
    -- next attempt of anyone takes back.
    redis.call('SET', ARGV[12] .. me, 'undone', 'PX', ARGV[11])
    remove(me)
    redis.call('DEL', KEYS[7])
    if not granted_to_me() then
        return 0
    end
    if not hand_over() then
        free()
    end
    return 1
end
