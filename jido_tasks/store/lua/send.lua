-- send: accept one action for a session: store its request, append it to the mailbox, touch
-- activity and set the "drain scheduled" flag.
-- KEYS: the session keys (see _lib.lua).
-- ARGV: action_id, request (JSON), stale_after (seconds after which a flag with no live lease
-- is stale: its drain message was lost, and a new drain must be published).
-- Returns {'ok', publish (0/1)}, {'missing'} or {'inactive', status}.
local f = fields({'status', 'scheduled'})
if not f.status then return {'missing'} end
if not ACCEPTS_WORK[f.status] then return {'inactive', f.status} end
local ts = now()
redis.call('HSET', KEYS[K_PENDING], action_id, request)
redis.call('RPUSH', KEYS[K_MAILBOX], action_id)
local publish = 0
if not f.scheduled or (ts - tonumber(f.scheduled) > tonumber(stale_after)
                       and redis.call('EXISTS', KEYS[K_LEASE]) == 0) then
  publish = 1
  redis.call('ZADD', KEYS[K_SCHEDULED], fmt(ts), SID)
  touch(ts, {'scheduled', fmt(ts)}, f.status)
else
  touch(ts, nil, f.status)
end
return {'ok', publish}
