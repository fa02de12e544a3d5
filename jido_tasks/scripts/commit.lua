-- commit: atomically apply one finished action: check the fencing token and that the action is
-- still the mailbox head, write the new state (unless unchanged or failed), store the outcome,
-- pop the mailbox, touch activity, append the action's events, tell waiters. With `last` set
-- (the end of the worker's batch) and nothing left in the mailbox, also release the lease, so
-- a drain that empties the mailbox ends without another round trip.
-- KEYS: the session set (see _lib.lua).
-- ARGV[5] token, ARGV[6] action id, ARGV[7] outcome JSON, ARGV[8] new state JSON or '' to keep
-- it, ARGV[9] events JSON list of [type, data JSON], ARGV[10] keep_results, ARGV[11] '1' if
-- this is the last action of the batch.
-- Returns 'ok', 'released' (ok, and the lease was dropped: mailbox empty), 'stale' (lease
-- lost: nothing written) or 'moved' (the action was cancelled meanwhile: nothing written).
if lease_token() ~= ARGV[5] then return 'stale' end
local aid = ARGV[6]
local head = redis.call('LRANGE', KEYS[K_MAILBOX], 0, 1)
if head[1] ~= aid then return 'moved' end
local ts = now()
if ARGV[8] ~= '' then redis.call('SET', KEYS[K_STATE], ARGV[8]) end
redis.call('LPOP', KEYS[K_MAILBOX])
finish(aid, ARGV[7], tonumber(ARGV[10]))
local status
if head[2] then
  -- The next action becomes the head: its first run counts as its first attempt.
  status = touch(ts, {'head', head[2], 'head_attempts', 1})
else
  status = touch(ts)
  if ARGV[11] ~= '1' then redis.call('HDEL', KEYS[K_ENTRY], 'head', 'head_attempts') end
end
if ARGV[9] ~= '[]' then
  for _, ev in ipairs(cjson.decode(ARGV[9])) do emit(ev[1], ev[2], ts) end
end
if ARGV[11] == '1' and not head[2] then
  redis.call('DEL', KEYS[K_LEASE])
  unschedule(ts, status)  -- also drops head/head_attempts
  return 'released'
end
return 'ok'
