-- Takes the election's lock, and with the grant proclaims the candidate's value for its
-- term, in one call: the mutex's acquire (mutex/acquire.lua, joined in front as the
-- function take_lock: its KEYS[1..4], ARGV[1..6] and replies), then value.lua's proclaim.
-- KEYS[5]: the proclaimed value (election-value:<name>)
-- KEYS[6]: the observers (election-observers:<name>)
-- ARGV[7]: the value to proclaim
-- ARGV[8]: the prefix of an observer's list (election-observe:<name>:)
-- ARGV[9]: how long a wake-up stays for its observer, in milliseconds
-- Returns the acquire's reply; {-1, 0} when a key holds another type (nothing is changed).
if not (typed(KEYS[5], 'hash') and typed(KEYS[6], 'zset')) then
    return {-1, 0}
end
local reply = take_lock()
if reply[1] == 1 then
    proclaim(KEYS[1], KEYS[5], KEYS[6], ARGV[1], string.format('%d', reply[2]), ARGV[7], '1',
        ARGV[8], ARGV[9])
end
return reply
