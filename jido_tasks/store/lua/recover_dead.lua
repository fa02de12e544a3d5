-- recover_dead: the light recovery (every `recover_interval`, between full sweeps). A session
-- whose lease names a holder whose liveness key is gone, or that has no lease but a head that
-- was handed out (its holder died and the lease expired since), was abandoned: the lease is
-- dropped, the flag refreshed, session.recovered emitted, and the caller publishes a drain.
-- KEYS: the session keys (see _lib.lua), then the holder's liveness key (K_EXTRA) when
-- `expected` is not ''.
-- ARGV: expected (the lease value "token|worker" the caller read, or '' if there was none),
-- stale_after (for the republish backoff, see requeue_abandoned()).
-- A handed-out head with no lease is no evidence once recovery republished a drain that no
-- claim followed yet (that drain may be waiting in the queue): the sweep's backed-off case.
-- Returns 'recover' (publish a drain), 'unscheduled' (nothing pending: flag dropped), 'live'
-- (the holder is alive or the lease changed hands) or 'gone' (no session or no flag).
local e = KEYS[K_ENTRY]
local fl = redis.call('HMGET', e, 'scheduled', 'head', 'republished')
if not fl[1] then return 'gone' end
local lease = redis.call('GET', KEYS[K_LEASE])
if lease then
  if expected == '' or lease ~= expected or redis.call('EXISTS', KEYS[K_EXTRA]) == 1 then
    return 'live'
  end
  redis.call('DEL', KEYS[K_LEASE])
elseif not fl[2] or fl[3] then
  return 'live'  -- no evidence of a dead holder: a drain may be queued (the sweep's case)
end
local ts = now()
return requeue_abandoned(ts, fl[1], {holder = lease or false}, tonumber(stale_after))
