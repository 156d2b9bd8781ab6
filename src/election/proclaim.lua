-- Proclaims a leader's value, withdraws it, or clears it; then pushes the new state to every
-- live observer of the election (value.lua).
-- KEYS[1]: the leader's lock (election:<name>): its owner id, while it leads
-- KEYS[2]: its grant marker (election-grant:<name>): "<attempt>|<term>|<owner id>"
-- KEYS[3]: the proclaimed value (election-value:<name>), a hash of term, owner, value and
--          seq, living as long as the leader's lease (its extends extend it too)
-- KEYS[4]: the observers (election-observers:<name>): observer id -> until when it lives
--          (ms since 1970)
-- ARGV[1]: 'proclaim' (by the leader of term ARGV[3]), 'withdraw' (the proclamation of that
--          term, by its leader resigning), 'clear' (the proclamation of that term, by a
--          reset: whoever's it is, or, if ARGV[2] is not empty, only that owner's) or
--          'orphan' (ARGV[2]'s proclamation, if its term is not held by it: after a
--          campaign whose grant was undone)
-- ARGV[2]: the leader's owner id
-- ARGV[3]: its term (its grant's fencing token)
-- ARGV[4]: the value to proclaim
-- ARGV[5]: the prefix of an observer's list (election-observe:<name>:), followed by its id
-- ARGV[6]: how long a wake-up stays for its observer, in milliseconds
-- ARGV[7]: the proclaim's number within its term, rising (see value.lua)
-- Returns 1 when done; 0 when the leader of that term leads no more (nothing is
-- proclaimed then); -1 when a key holds another type (nothing is changed).
if not (typed(KEYS[1], 'string') and typed(KEYS[2], 'string') and typed(KEYS[3], 'hash')
        and typed(KEYS[4], 'zset')) then
    return -1
end
local op = ARGV[1]
local marker = redis.call('GET', KEYS[2])
local held = redis.call('GET', KEYS[1]) == ARGV[2] and marker
    and string.match(marker, '^[^|]*|(%d+)|')
if op == 'proclaim' then
    if held ~= ARGV[3] then
        return 0
    end
    proclaim(KEYS[1], KEYS[3], KEYS[4], ARGV[2], ARGV[3], ARGV[4], ARGV[7], ARGV[5], ARGV[6])
    return 1
end
local proclaimed = redis.call('HMGET', KEYS[3], 'term', 'owner')
if op == 'orphan' then
    if proclaimed[2] ~= ARGV[2] or held == proclaimed[1] then
        return 1
    end
elseif proclaimed[1] ~= ARGV[3]
    or ((op == 'withdraw' or ARGV[2] ~= '') and proclaimed[2] ~= ARGV[2]) then
    return 1
end
redis.call('DEL', KEYS[3])
wake_observers(KEYS[4], ARGV[5], ARGV[6], '-')
return 1
