-- progress: record a running action's progress (its Outcome with status running) and emit
-- action.progress.
-- KEYS: the session keys (see _lib.lua).  ARGV: token, action_id, outcome, event_data.
-- Returns 1, or 0 if the lease is lost.
if lease_token() ~= token then return 0 end
redis.call('HSET', KEYS[K_RESULTS], action_id, outcome)
emit('action.progress', event_data, now())
return 1
