-- send: accept one action for a session: store its request, append it to the mailbox, touch
-- activity and set the "drain scheduled" flag. Idempotent per action id: an id whose request
-- is pending or whose record is kept is not sent again; with the same digest (a retried or redelivered send) the
-- reply says so, and with another digest the id is refused as taken.
-- KEYS: the session keys (see _lib.lua).
-- ARGV: action_id, request (JSON), digest (of the action name and params; '' for none),
-- stale_after (seconds after which a flag with no live lease is stale: its drain message was
-- lost, and a new drain must be published; longer once drains were republished with no claim
-- since, see republish_after()).
-- Returns {'ok', publish (0/1)}, {'exists', record JSON or '' while pending} (the same send again),
-- {'changed'} (the id is taken by another action), {'missing'} or {'inactive', status}.
-- An id is known while its request is pending or its record is kept (see _lib.lua).
local known, outcome = redis.call('HGET', KEYS[K_PENDING], action_id), ''
if not known then
  local pos = redis.call('LPOS', KEYS[K_RECORDS], action_id, 'RANK', -1)
  if pos then
    known = redis.call('LINDEX', KEYS[K_RECORDS], pos + 2)
    outcome = known
  end
end
if known then
  -- Checked before the status: a redelivered send of an accepted action is not refused
  -- because the session has ended since.
  if digest ~= '' and cjson.decode(known).d == digest then
    return {'exists', outcome}
  end
  return {'changed'}
end
local f = fields({'status', 'scheduled', 'republished'})
if not f.status then return {'missing'} end
if not ACCEPTS_WORK[f.status] then return {'inactive', f.status} end
local ts = now()
redis.call('HSET', KEYS[K_PENDING], action_id, request)
redis.call('RPUSH', KEYS[K_MAILBOX], action_id)
local publish = 0
if not f.scheduled then
  publish = 1
  redis.call('ZADD', KEYS[K_SCHEDULED], fmt(ts), SID)
  touch(ts, {'scheduled', fmt(ts)}, f.status)
elseif ts - tonumber(f.scheduled) > republish_after(tonumber(stale_after),
                                                    tonumber(f.republished or 0))
       and redis.call('EXISTS', KEYS[K_LEASE]) == 0 then
  publish = 1
  republished(ts, tonumber(stale_after))
  touch(ts, nil, f.status)
else
  touch(ts, nil, f.status)
end
return {'ok', publish}
