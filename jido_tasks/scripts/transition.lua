-- transition: change a session's status if the lifecycle allows it from the current one.
-- KEYS: the session set (see _lib.lua).
-- ARGV[6] target status, ARGV[7] comma-separated statuses it may come from, ARGV[8] reason.
-- Returns {'ok', previous, row...}, {'missing'} or {'invalid', current}.
local current = redis.call('HGET', KEYS[K_ENTRY], 'status')
if not current then return {'missing'} end
local allowed = false
for src in string.gmatch(ARGV[7], '[^,]+') do
  if src == current then allowed = true end
end
if not allowed then return {'invalid', current} end
set_status(current, ARGV[6], now(), ARGV[8])
local out = {'ok', current}
for _, v in ipairs(redis.call('HGETALL', KEYS[K_ENTRY])) do out[#out + 1] = v end
return out
