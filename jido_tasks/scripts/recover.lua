-- recover: a session whose drain flag is older than ARGV[6] seconds (by Redis TIME) and that
-- holds no live lease was abandoned (its worker died, or a client died before publishing).
-- With pending actions the flag is refreshed and the caller publishes a new drain; with none
-- the flag is dropped (a terminating session becomes terminated: see unschedule()).
-- KEYS: the session set (see _lib.lua).  ARGV[6] staleness bound in seconds (lease_ttl * 3).
-- Returns 'recover' (publish a drain), 'unscheduled', 'leased' (a lease still lives: looked at
-- again later), 'fresh' (the flag was refreshed meanwhile) or 'gone' (no flag or no session:
-- dropped from the scheduled index).
local e = KEYS[K_ENTRY]
local flag = redis.call('HGET', e, 'scheduled')
if not flag then
  redis.call('ZREM', KEYS[K_SCHEDULED], SID)
  return 'gone'
end
local ts = now()
if ts - tonumber(flag) <= tonumber(ARGV[6]) then
  redis.call('ZADD', KEYS[K_SCHEDULED], flag, SID)
  return 'fresh'
end
if redis.call('EXISTS', KEYS[K_LEASE]) == 1 then return 'leased' end
if redis.call('LLEN', KEYS[K_MAILBOX]) == 0 then
  unschedule(ts)
  return 'unscheduled'
end
redis.call('HSET', e, 'scheduled', fmt(ts))
redis.call('ZADD', KEYS[K_SCHEDULED], fmt(ts), SID)
return 'recover'
