-- emit: append one event about a session that no other script records (e.g. a snapshot
-- saved), and count it. An idle session gets it on the global stream only (it keeps no stream
-- of its own).
-- KEYS: the session keys (see _lib.lua).  ARGV: event_type ('' for no event), data_json,
-- counter (a field of the metrics hash to add 1 to, '' for none; counted even when the session
-- is gone: a deleted snapshot may have outlived its session).
-- Returns 1, or 0 if the session does not exist.
if counter ~= '' then count(counter) end
local status = redis.call('HGET', KEYS[K_ENTRY], 'status')
if not status then return 0 end
if event_type ~= '' then emit(event_type, data_json, now(), status == 'idle') end
return 1
