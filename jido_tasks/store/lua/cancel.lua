-- cancel: withdraw a pending action that no worker is running yet.
-- KEYS: the session keys (see _lib.lua).  ARGV: action_id, reason, keep.
-- Returns 'cancelled', 'running', 'finished' or 'unknown' (never sent, or its record is gone).
if redis.call('LINDEX', KEYS[K_MAILBOX], 0) == action_id
   and redis.call('EXISTS', KEYS[K_LEASE]) == 1 then
  return 'running'
end
if redis.call('LREM', KEYS[K_MAILBOX], 1, action_id) == 0 then
  -- Withdrawn by a termination whose records are still being finished: cancelled already.
  if redis.call('LPOS', KEYS[K_CANCELLING], action_id) then return 'cancelled' end
  if redis.call('LPOS', KEYS[K_RECORDS], action_id, 'RANK', -1)
     or redis.call('HEXISTS', KEYS[K_LEGACY_RESULTS], action_id) == 1 then
    return 'finished'
  end
  return 'unknown'
end
local ts = now()
if METRICS == '1' then count_cancelled(action_names({action_id})) end
finish_many({action_id}, {cancelled_outcome(reason)}, tonumber(keep), ts)
emit('action.cancelled', cjson.encode({action_id = action_id, reason = reason}), ts)
return 'cancelled'
