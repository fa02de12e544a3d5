-- terminate: move a session to terminating; unless draining, withdraw its pending actions (all
-- but a running head) in one O(1) step, moving them to the `cancelling` list, and finish the
-- first CANCEL_CHUNK of them (the caller finishes the rest with cancel_pending, a bounded
-- chunk per call, so Redis is never blocked long); mark it terminated at once when no work is
-- left (otherwise the draining worker's release, or the last cancel_pending, does).
-- KEYS: the session keys (see _lib.lua).  ARGV: reason, drain ('1': let pending actions run
-- first), keep.
-- Idempotent, like Celery's revoke: a session already terminating or terminated is returned
-- as it is, {'unchanged', 0, withdrawn actions still to finish, row...} (the caller finishes
-- those, as after its own termination).
-- Returns {'ok', withdrawn, left to finish, row...}, {'unchanged', ...}, {'missing'} or
-- {'invalid', current}.
local current = redis.call('HGET', KEYS[K_ENTRY], 'status')
if not current then return {'missing'} end
if current == 'terminating' or current == 'terminated' then
  local out = {'unchanged', 0, redis.call('LLEN', KEYS[K_CANCELLING])}
  for _, v in ipairs(row()) do out[#out + 1] = v end
  return out
end
if not ALLOWED_FROM['terminating'][current] then return {'invalid', current} end
local ts = now()
set_status(current, 'terminating', ts, reason)
local running = redis.call('EXISTS', KEYS[K_LEASE]) == 1
local withdrawn, left = 0, 0
if drain ~= '1' then
  local pending = redis.call('LLEN', KEYS[K_MAILBOX])
  local head = nil
  if running and pending > 0 then head = redis.call('LPOP', KEYS[K_MAILBOX]) end
  if redis.call('LLEN', KEYS[K_MAILBOX]) > 0 then
    if redis.call('EXISTS', KEYS[K_CANCELLING]) == 0 then
      redis.call('RENAME', KEYS[K_MAILBOX], KEYS[K_CANCELLING])
    else  -- cannot happen (terminate runs once); never overwrite withdrawn ids
      redis.call('RPUSH', KEYS[K_CANCELLING],
                 unpack(redis.call('LRANGE', KEYS[K_MAILBOX], 0, UNPACK_CHUNK - 1)))
      redis.call('LTRIM', KEYS[K_MAILBOX], UNPACK_CHUNK, -1)
    end
  end
  if head then redis.call('LPUSH', KEYS[K_MAILBOX], head) end
  withdrawn = redis.call('LLEN', KEYS[K_CANCELLING])
  left = cancel_chunk(tonumber(keep), ts)
end
if left == 0 and not running and redis.call('LLEN', KEYS[K_MAILBOX]) == 0 then
  unschedule(ts)
end
local out = {'ok', withdrawn, left}
for _, v in ipairs(row()) do out[#out + 1] = v end
return out
