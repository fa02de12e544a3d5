-- renew: heartbeat of the worker holding the lease; keeps the lease and the scheduled flag fresh.
-- KEYS: the session set (see _lib.lua).  ARGV[6] token, ARGV[7] lease ms.
-- Returns 1 if the lease is still ours, 0 if it is lost.
if lease_token() ~= ARGV[6] then return 0 end
local ts = now()
redis.call('PEXPIRE', KEYS[K_LEASE], ARGV[7])
redis.call('HSET', KEYS[K_ENTRY], 'scheduled', fmt(ts))
redis.call('ZADD', KEYS[K_SCHEDULED], fmt(ts), SID)
return 1
