-- cancel: withdraw a pending action that no worker is running yet.
-- KEYS: the session keys (see _lib.lua).  ARGV: action_id, reason, keep.
-- Returns 'cancelled', 'running', 'finished' or 'unknown'.
local status = outcome_status(redis.call('HGET', KEYS[K_RESULTS], action_id))
if status and status ~= 'running' then return 'finished' end
if redis.call('LINDEX', KEYS[K_MAILBOX], 0) == action_id
   and redis.call('EXISTS', KEYS[K_LEASE]) == 1 then
  return 'running'
end
if redis.call('LREM', KEYS[K_MAILBOX], 1, action_id) == 0 then
  -- Withdrawn by a termination whose records are still being finished: cancelled already.
  if redis.call('LPOS', KEYS[K_CANCELLING], action_id) then return 'cancelled' end
  return 'unknown'
end
local ts = now()
if METRICS == '1' then count_cancelled(action_names({action_id})) end
finish(action_id, cancelled_outcome(reason, ts), tonumber(keep))
emit('action.cancelled', cjson.encode({action_id = action_id, reason = reason}), ts)
return 'cancelled'
