-- cancel_pending: finish the next CANCEL_CHUNK actions that a termination withdrew (see
-- terminate.lua); when none is left and no work remains, the session becomes terminated.
-- KEYS: the session keys (see _lib.lua).  ARGV: keep.
-- Returns how many withdrawn actions are still left to finish.
local ts = now()
local left = cancel_chunk(tonumber(keep), ts)
if left == 0 and redis.call('EXISTS', KEYS[K_LEASE]) == 0
   and redis.call('LLEN', KEYS[K_MAILBOX]) == 0
   and redis.call('HGET', KEYS[K_ENTRY], 'status') == 'terminating' then
  unschedule(ts, 'terminating')
end
return left
