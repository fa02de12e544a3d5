-- mark_idle: an active session with no activity for `idle_after` seconds (by Redis TIME), no
-- lease and no pending action becomes idle (any later activity makes it active again: see
-- touch()).
-- KEYS: the session keys (see _lib.lua).  ARGV: idle_after.
-- Returns 'idled', 'busy' (holds a lease or has pending work: looked at again later), 'fresh'
-- (recent activity: the active index is set right) or 'gone' (not active: dropped from it).
local f = fields({'status', 'last_activity'})
if not ALLOWED_FROM['idle'][f.status] then
  redis.call('ZREM', KEYS[K_ACTIVE], SID)
  return 'gone'
end
local ts = now()
if tonumber(f.last_activity) + tonumber(idle_after) > ts then
  redis.call('ZADD', KEYS[K_ACTIVE], f.last_activity, SID)
  return 'fresh'
end
if redis.call('EXISTS', KEYS[K_LEASE]) == 1 or redis.call('LLEN', KEYS[K_MAILBOX]) > 0 then
  return 'busy'
end
set_status(f.status, 'idle', ts, nil)
return 'idled'
