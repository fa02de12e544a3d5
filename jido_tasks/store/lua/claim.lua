-- claim: take the lease on a session if it is free, with a new fencing token, and return the
-- first batch of pending actions with the state.
-- KEYS: the session keys (see _lib.lua), then the claimer's liveness key (K_EXTRA), set with
-- the lease so a claimer is never seen without it.
-- ARGV: worker, lease_ms, batch_size, alive_ms.
-- The state is not read here (a drain loads the parts it needs); only a state still stored as
-- one JSON string (before parts) comes back whole, to be turned into parts by the next commit.
-- Returns {'ok', token, legacy state JSON or '', head_attempts, n, <n registry hash fields
-- and values>, m, <m state part names and JSON: the whole state when small, see small_state;
-- m = -1 when not sent>, id1, req1, ...}, {'busy', lease ms left, lease value "token|worker"},
-- {'empty'} (nothing pending: the flag is dropped) or {'missing'}.
local flat = row()
if #flat == 0 then return {'missing'} end
local lease = redis.call('GET', KEYS[K_LEASE])
if lease then
  return {'busy', redis.call('PTTL', KEYS[K_LEASE]), lease}
end
return claim_free(flat, worker, lease_ms, batch_size, alive_ms)
