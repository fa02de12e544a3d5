-- create: store a new registry row (and optional initial state), index it, emit session.created.
-- KEYS: the session set (see _lib.lua).
-- ARGV[6] row JSON (field -> string), ARGV[7] state JSON or '' for none,
-- ARGV[8] session.created data JSON.
-- Returns the server time used for created_at/updated_at/last_activity, or 'exists'.
if redis.call('EXISTS', KEYS[K_ENTRY]) == 1 then return 'exists' end
local ts = now()
local row = cjson.decode(ARGV[6])
local flat = {}
for k, v in pairs(row) do
  flat[#flat + 1] = k
  flat[#flat + 1] = v
end
redis.call('HSET', KEYS[K_ENTRY], unpack(flat))
redis.call('HSET', KEYS[K_ENTRY], 'created_at', fmt(ts), 'updated_at', fmt(ts),
           'last_activity', fmt(ts))
if ARGV[7] ~= '' then redis.call('SET', KEYS[K_STATE], ARGV[7]) end
redis.call('ZADD', KEYS[K_ACTIVITY], fmt(ts), SID)
redis.call('ZADD', KEYS[K_ACTIVE], fmt(ts), SID)
redis.call('ZADD', KEYS[K_EXPIRY], fmt(ts + tonumber(row['timeout'])), SID)
emit('session.created', ARGV[8], ts)
return fmt(ts)
