-- renew: heartbeat of the worker holding the lease; keeps the lease and the scheduled flag fresh.
-- KEYS: the session keys (see _lib.lua).  ARGV: token, lease_ms.
-- Returns 1 if the lease is still ours, 0 if it is lost.
if lease_token() ~= token then return 0 end
local ts = now()
redis.call('PEXPIRE', KEYS[K_LEASE], lease_ms)
redis.call('HSET', KEYS[K_ENTRY], 'scheduled', fmt(ts))
redis.call('ZADD', KEYS[K_SCHEDULED], fmt(ts), SID)
return 1
