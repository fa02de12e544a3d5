-- progress: record a running action's progress and emit action.progress.
-- KEYS: the session set (see _lib.lua).
-- ARGV[5] token, ARGV[6] action id, ARGV[7] outcome JSON (status running + progress),
-- ARGV[8] event data JSON.  Returns 1, or 0 if the lease is lost.
if lease_token() ~= ARGV[5] then return 0 end
redis.call('HSET', KEYS[K_RESULTS], ARGV[6], ARGV[7])
emit('action.progress', ARGV[8], now())
return 1
