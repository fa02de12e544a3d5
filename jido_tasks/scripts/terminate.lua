-- terminate: move a session to terminating; cancel its pending actions unless draining; mark
-- it terminated at once when no work is left (otherwise the draining worker's release does).
-- KEYS: the session set (see _lib.lua).
-- ARGV[6] reason, ARGV[7] '1' to let pending actions finish first, ARGV[8] keep_results.
-- Returns {'ok', cancelled_count, row...}, {'missing'} or {'invalid', current}.
local current = redis.call('HGET', KEYS[K_ENTRY], 'status')
if not current then return {'missing'} end
if current ~= 'active' and current ~= 'idle' then return {'invalid', current} end
local ts = now()
set_status(current, 'terminating', ts, ARGV[6])
local cancelled = 0
local running = redis.call('EXISTS', KEYS[K_LEASE]) == 1
if ARGV[7] ~= '1' then
  local ids = redis.call('LRANGE', KEYS[K_MAILBOX], 0, -1)
  local first = 1
  if running and #ids > 0 then first = 2 end  -- the head may be running: let it finish
  local outcome = cjson.encode({status = 'cancelled', reason = 'session terminating: ' .. ARGV[6],
                                finished_at = ts})
  for i = first, #ids do
    redis.call('LREM', KEYS[K_MAILBOX], 1, ids[i])
    finish(ids[i], outcome, tonumber(ARGV[8]))
    emit('action.cancelled', cjson.encode({action_id = ids[i], reason = ARGV[6]}), ts)
    cancelled = cancelled + 1
  end
end
if redis.call('LLEN', KEYS[K_MAILBOX]) == 0 and not running then
  unschedule(ts)
end
local out = {'ok', cancelled}
for _, v in ipairs(redis.call('HGETALL', KEYS[K_ENTRY])) do out[#out + 1] = v end
return out
