-- purge: delete a session terminated more than `retention` seconds ago (by Redis TIME): every
-- key it owns (OWNED) and its place in every index (INDEXES). Idempotent: a session already
-- purged (no registry row) only has leftovers removed.
-- KEYS: the session keys (see _lib.lua).  ARGV: retention.
-- Emits session.purged on the global stream only (the session's own stream is gone).
-- Returns 'purged', 'gone' (nothing was left to purge but leftovers), 'young' (terminated
-- too recently: the terminated index is set right) or 'live' (not terminated: dropped from the
-- terminated index).
local f = fields({'status', 'terminated_at'})
local at = tonumber(f.terminated_at)
if f.status and f.status ~= 'terminated' then
  redis.call('ZREM', KEYS[K_TERMINATED], SID)
  return 'live'
end
if f.status and at and at + tonumber(retention) > now() then
  redis.call('ZADD', KEYS[K_TERMINATED], f.terminated_at, SID)
  return 'young'
end
for _, k in ipairs(OWNED) do redis.call('DEL', KEYS[k]) end
for _, k in ipairs(INDEXES) do redis.call('ZREM', KEYS[k], SID) end
if not f.status then return 'gone' end
emit('session.purged', cjson.encode({session_id = SID}), now(), true)
count('sessions:purged')
return 'purged'
