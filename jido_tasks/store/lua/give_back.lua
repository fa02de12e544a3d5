-- give_back: give the lease up while work may remain, so another drain (published by the
-- caller, at the back of the queue) takes the session next. Used when a drain's time slice is
-- over (`clean` = '1': the head was not run, so its next hand-out is its first attempt) and
-- when a drain hit an unexpected error (`clean` = '0': the next claim counts as another
-- attempt of the head, so an action that breaks every drain ends as poison).
-- The scheduled flag stays set and is refreshed: the caller's new drain message is on its way,
-- and should that publish be lost, recovery finds the flag (with no lease) and publishes again.
-- KEYS: the session keys (see _lib.lua).  ARGV: token, clean.
-- Returns 'yielded' (publish a drain), 'released' (mailbox empty: lease and flag dropped) or
-- 'stale' (the lease is not ours: nothing written).
if lease_token() ~= token then return 'stale' end
redis.call('DEL', KEYS[K_LEASE])
local ts = now()
if redis.call('LLEN', KEYS[K_MAILBOX]) == 0 then
  unschedule(ts)
  return 'released'
end
if clean == '1' then redis.call('HDEL', KEYS[K_ENTRY], 'head', 'head_attempts') end
redis.call('HSET', KEYS[K_ENTRY], 'scheduled', fmt(ts))
redis.call('ZADD', KEYS[K_SCHEDULED], fmt(ts), SID)
return 'yielded'
