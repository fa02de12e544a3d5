-- commit: atomically apply a group of n finished actions (n >= 1, in mailbox order): check the
-- fencing token and that they are still the first n entries of the mailbox, write the new
-- state (the state after the last of them; unless unchanged), store each outcome, drop them
-- from the mailbox, touch activity, append their events, tell waiters. With `last` set (the
-- end of the worker's batch) and nothing left in the mailbox, also release the lease, so a
-- drain that empties the mailbox ends without another round trip.
-- KEYS: the session set (see _lib.lua).
-- ARGV[6] token, ARGV[7] n, ARGV[8] new state JSON or '' to keep it, ARGV[9] events JSON list
-- of [type, data JSON], ARGV[10] keep_results, ARGV[11] '1' if this ends the batch,
-- ARGV[12], ARGV[13], ...: action id and outcome JSON of each of the n actions.
-- Returns 'ok', 'released' (ok, and the lease was dropped: mailbox empty), 'stale' (lease
-- lost: nothing written) or 'moved' (one was cancelled meanwhile: nothing written).
if lease_token() ~= ARGV[6] then return 'stale' end
local n = tonumber(ARGV[7])
local head = redis.call('LRANGE', KEYS[K_MAILBOX], 0, n)
for i = 1, n do
  if head[i] ~= ARGV[10 + 2 * i] then return 'moved' end
end
local ts = now()
if ARGV[8] ~= '' then redis.call('SET', KEYS[K_STATE], ARGV[8]) end
redis.call('LTRIM', KEYS[K_MAILBOX], n, -1)
local keep = tonumber(ARGV[10])
for i = 1, n do finish(ARGV[10 + 2 * i], ARGV[11 + 2 * i], keep) end
local nxt = head[n + 1]
local status
if nxt then
  -- The next action becomes the head: its first run counts as its first attempt.
  status = touch(ts, {'head', nxt, 'head_attempts', 1})
else
  status = touch(ts)
  if ARGV[11] ~= '1' then redis.call('HDEL', KEYS[K_ENTRY], 'head', 'head_attempts') end
end
if ARGV[9] ~= '[]' then
  for _, ev in ipairs(cjson.decode(ARGV[9])) do emit(ev[1], ev[2], ts) end
end
if ARGV[11] == '1' and not nxt then
  redis.call('DEL', KEYS[K_LEASE])
  unschedule(ts, status)  -- also drops head/head_attempts
  return 'released'
end
return 'ok'
