-- create: store a new registry row (and optional initial state), index it, emit session.created
-- (to the global stream only: see seed_own_stream in _lib.lua),
-- count sessions:created (and sessions:restored and snapshots:restored for a restored one).
-- KEYS: the session keys (see _lib.lua).
-- ARGV: row_json (field -> string), event_json (session.created data), n_parts; then from REST
-- on, n_parts state part names and JSON values (the initial state, one field per top-level key).
-- Returns the server time used for created_at/updated_at/last_activity, or 'exists'.
if redis.call('EXISTS', KEYS[K_ENTRY]) == 1 then return 'exists' end
local ts = now()
local entry = cjson.decode(row_json)
local flat = {}
for k, v in pairs(entry) do
  flat[#flat + 1] = k
  flat[#flat + 1] = v
end
redis.call('HSET', KEYS[K_ENTRY], unpack(flat))
redis.call('HSET', KEYS[K_ENTRY], 'created_at', fmt(ts), 'updated_at', fmt(ts),
           'last_activity', fmt(ts))
for i = 0, tonumber(n_parts) - 1 do
  redis.call('HSET', KEYS[K_STATE], ARGV[REST + 2 * i], ARGV[REST + 2 * i + 1])
end
redis.call('ZADD', KEYS[K_ACTIVITY], fmt(ts), SID)
redis.call('ZADD', KEYS[K_ACTIVE], fmt(ts), SID)
redis.call('ZADD', KEYS[K_EXPIRY], fmt(ts + tonumber(entry['timeout'])), SID)
emit('session.created', event_json, ts, true)  -- own stream: made when first needed
count('sessions:created')
if entry['restored_from'] then
  count('sessions:restored')
  count('snapshots:restored')
end
return fmt(ts)
