-- emit: append one event about a session that no other script records (e.g. a snapshot
-- saved). An idle session gets it on the global stream only (it keeps no stream of its own).
-- KEYS: the session set (see _lib.lua).  ARGV[6] event type, ARGV[7] data JSON.
-- Returns 1, or 0 if the session does not exist.
local status = redis.call('HGET', KEYS[K_ENTRY], 'status')
if not status then return 0 end
emit(ARGV[6], ARGV[7], now(), status == 'idle')
return 1
