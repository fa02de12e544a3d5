-- takeover: claim a session whose lease holder is dead. The caller read the lease value
-- (`expected`, "token|worker") from a busy claim and passes that worker's liveness key; the
-- lease is taken over only if it still names that holder and the holder's liveness key is
-- gone (or if the lease has expired meanwhile). The new claim gets a new fencing token, so a
-- holder that was only slow can no longer write.
-- KEYS: the session keys (see _lib.lua), the claimer's liveness key (K_EXTRA), the holder's
-- liveness key (K_EXTRA + 1).
-- ARGV: worker, lease_ms, batch_size, alive_ms, expected.
-- Returns what claim returns; {'busy', lease ms left, lease value, holder's liveness ms left}
-- when the holder is alive or the lease changed hands.
local flat = row()
if #flat == 0 then return {'missing'} end
local lease = redis.call('GET', KEYS[K_LEASE])
if lease then
  if lease ~= expected or redis.call('EXISTS', KEYS[K_EXTRA + 1]) == 1 then
    return {'busy', redis.call('PTTL', KEYS[K_LEASE]), lease,
            redis.call('PTTL', KEYS[K_EXTRA + 1])}
  end
  redis.call('DEL', KEYS[K_LEASE])
end
return claim_free(flat, worker, lease_ms, batch_size, alive_ms)
