-- delivered: the Celery results of these by-name actions are stored: drop their ids from the
-- session's `replies` list (and the session from the `undelivered` index once it is empty),
-- and hand back what is still queued there (a dead worker's or a cancel's leftovers), so the
-- caller stores those too without another round trip. n = 0: only read the leftovers.
-- KEYS: the session keys (see _lib.lua).  ARGV: n, limit, then from REST on the n action ids.
-- Returns a flat list of up to `limit` leftover ids and their Outcome JSON ('' when the
-- outcome is gone: dropped beyond keep_results; the caller acknowledges it without a write).
for i = 0, tonumber(n) - 1 do
  redis.call('LREM', KEYS[K_REPLIES], 1, ARGV[REST + i])
end
local ids = redis.call('LRANGE', KEYS[K_REPLIES], 0, tonumber(limit) - 1)
if #ids == 0 then
  redis.call('ZREM', KEYS[K_UNDELIVERED], SID)
  return {}
end
local outcomes = hmget_many(KEYS[K_RESULTS], ids)
local out = {}
for i = 1, #ids do
  out[#out + 1] = ids[i]
  out[#out + 1] = outcomes[i] or ''
end
return out
