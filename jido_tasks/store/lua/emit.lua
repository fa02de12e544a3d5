-- emit: append one event about a session that no other script records (e.g. a snapshot
-- saved). An idle session gets it on the global stream only (it keeps no stream of its own).
-- KEYS: the session keys (see _lib.lua).  ARGV: event_type, data_json.
-- Returns 1, or 0 if the session does not exist.
local status = redis.call('HGET', KEYS[K_ENTRY], 'status')
if not status then return 0 end
emit(event_type, data_json, now(), status == 'idle')
return 1
