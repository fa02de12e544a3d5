-- touch: record activity on a session (an idle one becomes active again).
-- KEYS: the session keys (see _lib.lua).  No ARGV of its own.
-- Returns {'ok', row...}, {'missing'} or {'inactive', status}.
local status = redis.call('HGET', KEYS[K_ENTRY], 'status')
if not status then return {'missing'} end
if not ACCEPTS_WORK[status] then return {'inactive', status} end
touch(now(), nil, status)
local out = {'ok'}
for _, v in ipairs(row()) do out[#out + 1] = v end
return out
