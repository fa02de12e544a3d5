-- touch: record activity on a session (an idle one becomes active again).
-- KEYS: the session set (see _lib.lua).  No extra ARGV.
-- Returns {'ok', row...}, {'missing'} or {'inactive', status}.
local status = redis.call('HGET', KEYS[K_ENTRY], 'status')
if not status then return {'missing'} end
if status ~= 'active' and status ~= 'idle' then return {'inactive', status} end
touch(now(), nil, status)
local out = {'ok'}
for _, v in ipairs(redis.call('HGETALL', KEYS[K_ENTRY])) do out[#out + 1] = v end
return out
