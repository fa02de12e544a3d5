-- delivered: the Celery results of these by-name actions are stored: drop their ids from the
-- session's `replies` list (and the session from the `undelivered` index once it is empty),
-- and hand back what is still queued there (a dead worker's or a cancel's leftovers), so the
-- caller stores those too without another round trip. n = 0: only read the leftovers.
-- KEYS: the session keys (see _lib.lua).  ARGV: n, limit, then from REST on the n action ids.
-- Returns a flat list of up to `limit` leftover ids and their record JSON (its Outcome fields;
-- '' when the record is gone: dropped by age or count; the caller acknowledges it without a
-- write).
for i = 0, tonumber(n) - 1 do
  redis.call('LREM', KEYS[K_REPLIES], 1, ARGV[REST + i])
end
local ids = redis.call('LRANGE', KEYS[K_REPLIES], 0, tonumber(limit) - 1)
if #ids == 0 then
  redis.call('ZREM', KEYS[K_UNDELIVERED], SID)
  return {}
end
local out = {}
for _, aid in ipairs(ids) do  -- at most `limit` lookups, each from the newest end
  local pos = redis.call('LPOS', KEYS[K_RECORDS], aid, 'RANK', -1)
  out[#out + 1] = aid
  out[#out + 1] = pos and redis.call('LINDEX', KEYS[K_RECORDS], pos + 2) or ''
end
return out
