-- transition: change a session's status if the lifecycle (ALLOWED_FROM) allows it.
-- KEYS: the session keys (see _lib.lua).  ARGV: target, reason.
-- Returns {'ok', previous, row...}, {'missing'} or {'invalid', current}.
local current = redis.call('HGET', KEYS[K_ENTRY], 'status')
if not current then return {'missing'} end
local allowed = ALLOWED_FROM[target]
if not allowed or not allowed[current] then return {'invalid', current} end
set_status(current, target, now(), reason)
local out = {'ok', current}
for _, v in ipairs(row()) do out[#out + 1] = v end
return out
