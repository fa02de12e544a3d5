-- commit: atomically apply one finished action: check the fencing token and that the action is
-- still the mailbox head, write the new state (unless unchanged or failed), store the outcome,
-- pop the mailbox, touch activity, append the action's events, renew the lease, tell waiters.
-- KEYS: the session set (see _lib.lua).
-- ARGV[5] token, ARGV[6] action id, ARGV[7] outcome JSON, ARGV[8] new state JSON or '' to keep
-- it, ARGV[9] events JSON list of [type, data JSON], ARGV[10] keep_results, ARGV[11] lease ms.
-- Returns 'ok', 'stale' (lease lost: nothing written) or 'moved' (the action was cancelled).
if lease_token() ~= ARGV[5] then return 'stale' end
local aid = ARGV[6]
if redis.call('LINDEX', KEYS[K_MAILBOX], 0) ~= aid then return 'moved' end
local ts = now()
if ARGV[8] ~= '' then redis.call('SET', KEYS[K_STATE], ARGV[8]) end
redis.call('LPOP', KEYS[K_MAILBOX])
local nxt = redis.call('LINDEX', KEYS[K_MAILBOX], 0)
if nxt then
  redis.call('HSET', KEYS[K_ENTRY], 'head', nxt, 'head_attempts', 1)
else
  redis.call('HDEL', KEYS[K_ENTRY], 'head', 'head_attempts')
end
finish(aid, ARGV[7], tonumber(ARGV[10]))
touch(ts)
for _, ev in ipairs(cjson.decode(ARGV[9])) do emit(ev[1], ev[2], ts) end
redis.call('PEXPIRE', KEYS[K_LEASE], ARGV[11])
return 'ok'
