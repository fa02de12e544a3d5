-- create: store a new registry row (and optional initial state), index it, emit session.created.
-- KEYS: the session keys (see _lib.lua).
-- ARGV: row_json (field -> string), state_json ('' for none), event_json (session.created data).
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
if state_json ~= '' then redis.call('SET', KEYS[K_STATE], state_json) end
redis.call('ZADD', KEYS[K_ACTIVITY], fmt(ts), SID)
redis.call('ZADD', KEYS[K_ACTIVE], fmt(ts), SID)
redis.call('ZADD', KEYS[K_EXPIRY], fmt(ts + tonumber(entry['timeout'])), SID)
emit('session.created', event_json, ts)
return fmt(ts)
