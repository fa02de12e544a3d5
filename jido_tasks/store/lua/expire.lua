-- expire: terminate a session past its idle timeout, with `reason`, after one atomic check
-- (by Redis TIME) that it is still past its timeout, holds no lease and has no pending action.
-- KEYS: the session keys (see _lib.lua).
-- ARGV: reason, snapshot_last (last_activity seen when its snapshot was saved, '' for none).
-- With snapshot_last set, the session expires only if it saw no activity since (the snapshot
-- is current); without it, a session with persistence enabled (registry field `persist`) is
-- not expired but answered {'snapshot', last_activity} so the caller saves one first.
-- Returns {'expired'}, {'snapshot', last_activity}, {'busy', 'lease'|'pending'}, {'fresh'}
-- (not past its timeout: the expiry index is set right), {'changed'} (activity since the
-- snapshot) or {'gone'} (missing or no longer live: dropped from the expiry index).
local f = fields({'status', 'last_activity', 'timeout', 'persist'})
if not ALLOWED_FROM['terminating'][f.status] then
  redis.call('ZREM', KEYS[K_EXPIRY], SID)
  return {'gone'}
end
local ts = now()
local deadline = tonumber(f.last_activity) + tonumber(f.timeout)
if deadline > ts then
  redis.call('ZADD', KEYS[K_EXPIRY], fmt(deadline), SID)
  return {'fresh'}
end
if snapshot_last ~= '' and snapshot_last ~= f.last_activity then return {'changed'} end
if redis.call('EXISTS', KEYS[K_LEASE]) == 1 then return {'busy', 'lease'} end
if redis.call('LLEN', KEYS[K_MAILBOX]) > 0 then return {'busy', 'pending'} end
if snapshot_last == '' and f.persist == '1' then
  return {'snapshot', f.last_activity}
end
set_status(f.status, 'terminating', ts, reason)
unschedule(ts)
count('sessions:expired')
return {'expired'}
