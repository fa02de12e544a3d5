-- send: accept one action for a session: store its request, append it to the mailbox, touch
-- activity and set the "drain scheduled" flag.
-- KEYS: the session set (see _lib.lua).
-- ARGV[6] action id, ARGV[7] request JSON, ARGV[8] seconds after which a flag with no live
-- lease is stale (its drain message was lost) and a new drain must be published.
-- Returns {'ok', publish (0/1)}, {'missing'} or {'inactive', status}.
local row = redis.call('HMGET', KEYS[K_ENTRY], 'status', 'scheduled')
local status, flag = row[1], row[2]
if not status then return {'missing'} end
if status ~= 'active' and status ~= 'idle' then return {'inactive', status} end
local ts = now()
redis.call('HSET', KEYS[K_ACTIONS], ARGV[6], ARGV[7])
redis.call('RPUSH', KEYS[K_MAILBOX], ARGV[6])
local publish = 0
if not flag or (ts - tonumber(flag) > tonumber(ARGV[8])
                and redis.call('EXISTS', KEYS[K_LEASE]) == 0) then
  publish = 1
  redis.call('ZADD', KEYS[K_SCHEDULED], fmt(ts), SID)
  touch(ts, {'scheduled', fmt(ts)}, status)
else
  touch(ts, nil, status)
end
return {'ok', publish}
