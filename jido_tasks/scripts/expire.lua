-- expire: terminate a session past its idle timeout, with reason ARGV[6], after one atomic check
-- (by Redis TIME) that it is still past its timeout, holds no lease and has no pending action.
-- KEYS: the session set (see _lib.lua).
-- ARGV[6] reason, ARGV[7] last_activity seen when its snapshot was saved, or '' for none.
-- With ARGV[7] set, the session expires only if it saw no activity since (the snapshot is
-- current); without it, a session with persistence enabled is not expired but answered
-- {'snapshot', last_activity} so the caller saves one first.
-- Returns {'expired'}, {'snapshot', last_activity}, {'busy', 'lease'|'pending'}, {'fresh'}
-- (not past its timeout: the expiry index is set right), {'changed'} (activity since the
-- snapshot) or {'gone'} (missing or no longer live: dropped from the expiry index).
local e = KEYS[K_ENTRY]
local row = redis.call('HMGET', e, 'status', 'last_activity', 'timeout', 'config')
local status, last, timeout = row[1], row[2], tonumber(row[3])
if status ~= 'active' and status ~= 'idle' then
  redis.call('ZREM', KEYS[K_EXPIRY], SID)
  return {'gone'}
end
local ts = now()
local deadline = tonumber(last) + timeout
if deadline > ts then
  redis.call('ZADD', KEYS[K_EXPIRY], fmt(deadline), SID)
  return {'fresh'}
end
if ARGV[7] ~= '' and ARGV[7] ~= last then return {'changed'} end
if redis.call('EXISTS', KEYS[K_LEASE]) == 1 then return {'busy', 'lease'} end
if redis.call('LLEN', KEYS[K_MAILBOX]) > 0 then return {'busy', 'pending'} end
if ARGV[7] == '' and row[4] and cjson.decode(row[4]).persistence_enabled == true then
  return {'snapshot', last}
end
set_status(status, 'terminating', ts, ARGV[6])
unschedule(ts)
return {'expired'}
