-- recover: a session whose drain flag is older than `stale_after` seconds (by Redis TIME) and
-- that holds no live lease was abandoned (its worker died, or a client died before
-- publishing). With pending actions the flag is refreshed, session.recovered is emitted and
-- the caller publishes a new drain. Each drain so published with no claim since doubles the
-- wait before the next (see republish_after(): a drain waiting in a long queue is not lost,
-- and the queue must not grow by a drain per session each `stale_after`); a claim starts the
-- count again. With no pending action the flag is dropped (a terminating session
-- becomes terminated: see unschedule()). Actions a termination withdrew whose records were
-- left unfinished (the terminating client died) are finished here, a chunk per sweep.
-- KEYS: the session keys (see _lib.lua).  ARGV: stale_after, keep.
-- Returns 'recover' (publish a drain), 'unscheduled', 'leased' (a lease still lives: looked at
-- again later), 'fresh' (the flag was refreshed meanwhile), 'cancelling' (withdrawn actions
-- are left: looked at again by the next sweep) or 'gone' (no flag or no session: dropped from
-- the scheduled index).
local e = KEYS[K_ENTRY]
local fl = redis.call('HMGET', e, 'scheduled', 'republished')
local flag, n, stale = fl[1], tonumber(fl[2] or 0), tonumber(stale_after)
if not flag then
  redis.call('ZREM', KEYS[K_SCHEDULED], SID)
  return 'gone'
end
local ts = now()
if ts - tonumber(flag) <= republish_after(stale, n) then
  redis.call('ZADD', KEYS[K_SCHEDULED], fmt(scheduled_score(tonumber(flag), stale, n)), SID)
  return 'fresh'
end
if redis.call('EXISTS', KEYS[K_LEASE]) == 1 then return 'leased' end
if cancel_chunk(tonumber(keep), ts) > 0 then return 'cancelling' end
local outcome = requeue_abandoned(ts, flag, {}, stale)
if outcome == 'recover' then count('sessions:recovered') end
return outcome
