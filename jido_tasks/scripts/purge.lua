-- purge: delete a session terminated more than ARGV[6] seconds ago (by Redis TIME): every key
-- it owns (KEYS[1..8]) and its place in every index (KEYS[10..14]). Idempotent: a session
-- already purged (no registry row) only has leftovers removed.
-- KEYS: the session set (see _lib.lua).  ARGV[6] retention seconds.
-- Emits session.purged on the global stream only (the session's own stream is gone).
-- Returns 'purged', 'gone' (nothing was left to purge but leftovers), 'young' (terminated
-- too recently: the terminated index is set right) or 'live' (not terminated: dropped from the
-- terminated index).
local row = redis.call('HMGET', KEYS[K_ENTRY], 'status', 'terminated_at')
local status, at = row[1], tonumber(row[2])
if status and status ~= 'terminated' then
  redis.call('ZREM', KEYS[K_TERMINATED], SID)
  return 'live'
end
if status and at and at + tonumber(ARGV[6]) > now() then
  redis.call('ZADD', KEYS[K_TERMINATED], row[2], SID)
  return 'young'
end
for i = K_ENTRY, K_EVENTS do redis.call('DEL', KEYS[i]) end
for i = K_ACTIVITY, K_SCHEDULED do redis.call('ZREM', KEYS[i], SID) end
if not status then return 'gone' end
local ts = now()
redis.call('XADD', KEYS[K_GEVENTS], 'MAXLEN', '~', ARGV[3], '*', 'type', 'session.purged',
           'sid', SID, 'ts', fmt(ts), 'data', cjson.encode({session_id = SID}))
return 'purged'
