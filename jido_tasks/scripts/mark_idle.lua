-- mark_idle: an active session with no activity for ARGV[6] seconds (by Redis TIME), no lease
-- and no pending action becomes idle (any later activity makes it active again: see touch()).
-- KEYS: the session set (see _lib.lua).  ARGV[6] idle_after seconds.
-- Returns 'idled', 'busy' (holds a lease or has pending work: looked at again later), 'fresh'
-- (recent activity: the active index is set right) or 'gone' (not active: dropped from it).
local e = KEYS[K_ENTRY]
local row = redis.call('HMGET', e, 'status', 'last_activity')
if row[1] ~= 'active' then
  redis.call('ZREM', KEYS[K_ACTIVE], SID)
  return 'gone'
end
local ts = now()
if tonumber(row[2]) + tonumber(ARGV[6]) > ts then
  redis.call('ZADD', KEYS[K_ACTIVE], row[2], SID)
  return 'fresh'
end
if redis.call('EXISTS', KEYS[K_LEASE]) == 1 or redis.call('LLEN', KEYS[K_MAILBOX]) > 0 then
  return 'busy'
end
set_status('active', 'idle', ts, nil)
return 'idled'
