-- cancel: withdraw a pending action that no worker is running yet.
-- KEYS: the session set (see _lib.lua).  ARGV[6] action id, ARGV[7] reason, ARGV[8] keep_results.
-- Returns 'cancelled', 'running', 'finished' or 'unknown'.
local aid = ARGV[6]
local done = redis.call('HGET', KEYS[K_RESULTS], aid)
if done and not string.find(done, '"status":"running"', 1, true) then return 'finished' end
if redis.call('LINDEX', KEYS[K_MAILBOX], 0) == aid
   and redis.call('EXISTS', KEYS[K_LEASE]) == 1 then
  return 'running'
end
if redis.call('LREM', KEYS[K_MAILBOX], 1, aid) == 0 then return 'unknown' end
local ts = now()
finish(aid, cjson.encode({status = 'cancelled', reason = ARGV[7], finished_at = ts}),
       tonumber(ARGV[8]))
emit('action.cancelled', cjson.encode({action_id = aid, reason = ARGV[7]}), ts)
return 'cancelled'
