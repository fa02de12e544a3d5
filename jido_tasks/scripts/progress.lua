-- progress: record a running action's progress and emit action.progress.
-- KEYS: the session set (see _lib.lua).
-- ARGV[6] token, ARGV[7] action id, ARGV[8] outcome JSON (status running + progress),
-- ARGV[9] event data JSON.  Returns 1, or 0 if the lease is lost.
if lease_token() ~= ARGV[6] then return 0 end
redis.call('HSET', KEYS[K_RESULTS], ARGV[7], ARGV[8])
emit('action.progress', ARGV[9], now())
return 1
