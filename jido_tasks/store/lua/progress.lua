-- progress: record a running action's progress (its Outcome with status running, beside its
-- request in the pending hash) and emit action.progress.
-- KEYS: the session keys (see _lib.lua).  ARGV: token, action_id, outcome, event_data.
-- Returns 1, or 0 if the lease is lost (or the action is no longer pending).
if lease_token() ~= token then return 0 end
if redis.call('HEXISTS', KEYS[K_PENDING], action_id) == 0
   and redis.call('HEXISTS', KEYS[K_LEGACY_ACTIONS], action_id) == 0 then
  return 0
end
redis.call('HSET', KEYS[K_PENDING], action_id .. PROGRESS_SUFFIX, outcome)
emit('action.progress', event_data, now())
return 1
