-- commit: atomically apply a group of n finished actions (n >= 1, in mailbox order): check the
-- fencing token and that they are still the first n entries of the mailbox, write the state
-- parts they changed (HSET / HDEL of those fields of the state hash only), store each outcome, drop them
-- from the mailbox, touch activity, append their events, tell waiters. With `last` set (the
-- end of the worker's batch) and nothing left in the mailbox, also release the lease, so a
-- drain that empties the mailbox ends without another round trip.
-- Everything is read and decoded before the first write: Redis does not undo the writes of a
-- script that fails halfway.
-- KEYS: the session keys (see _lib.lua).
-- ARGV: token, n, migrate ('1': the state is still one JSON string (before parts): replace it
-- by the parts that follow, which are all of them), n_set, n_del, events (JSON list of [type,
-- data JSON]), keep, last ('1' if this ends the batch), n_count, n_sum; then from REST on: the
-- action id and Outcome JSON of each of the n actions, n_set part names and JSON values, n_del
-- part names, n_count metrics fields and integer increments (HINCRBY), n_sum metrics fields
-- and float increments (HINCRBYFLOAT): the actions' counters and run-time histogram.
-- Returns 'ok', 'released' (ok, and the lease was dropped: mailbox empty), 'stale' (lease
-- lost: nothing written), 'moved' (one was cancelled meanwhile: nothing written) or 'invalid'
-- (an event is not [type, data JSON]: nothing written).
if lease_token() ~= token then return 'stale' end
local count = tonumber(n)
local head = redis.call('LRANGE', KEYS[K_MAILBOX], 0, count)
for i = 1, count do
  if head[i] ~= ARGV[REST + 2 * (i - 1)] then return 'moved' end
end
local evs = {}
if events ~= '[]' then evs = cjson.decode(events) end
-- Each event must be [type, data JSON] of strings: XADD fails on anything else, which after
-- the writes below would leave a half commit.
for _, ev in ipairs(evs) do
  if type(ev) ~= 'table' or type(ev[1]) ~= 'string' or type(ev[2]) ~= 'string'
      or ev[1] == '' then
    return 'invalid'
  end
end
local ts = now()
local sets, dels = tonumber(n_set), tonumber(n_del)
local at = REST + 2 * count
if migrate == '1' then redis.call('DEL', KEYS[K_STATE]) end
for i = 0, sets - 1 do
  redis.call('HSET', KEYS[K_STATE], ARGV[at + 2 * i], ARGV[at + 2 * i + 1])
end
at = at + 2 * sets
for i = 0, dels - 1 do redis.call('HDEL', KEYS[K_STATE], ARGV[at + i]) end
if METRICS == '1' then
  at = at + dels
  local ncount, nsum = tonumber(n_count), tonumber(n_sum)
  for i = 0, ncount - 1 do
    redis.call('HINCRBY', KEYS[K_METRICS], ARGV[at + 2 * i], ARGV[at + 2 * i + 1])
  end
  at = at + 2 * ncount
  for i = 0, nsum - 1 do
    redis.call('HINCRBYFLOAT', KEYS[K_METRICS], ARGV[at + 2 * i], ARGV[at + 2 * i + 1])
  end
end
redis.call('LTRIM', KEYS[K_MAILBOX], count, -1)
local ids, outcomes = {}, {}
for i = 1, count do
  ids[i] = ARGV[REST + 2 * (i - 1)]
  outcomes[i] = ARGV[REST + 2 * (i - 1) + 1]
end
finish_many(ids, outcomes, tonumber(keep), ts)
local nxt = head[count + 1]
local status
if nxt then
  -- The next action becomes the head: its first run counts as its first attempt.
  status = touch(ts, {'head', nxt, 'head_attempts', 1})
else
  status = touch(ts)
  if last ~= '1' then redis.call('HDEL', KEYS[K_ENTRY], 'head', 'head_attempts') end
end
for _, ev in ipairs(evs) do emit(ev[1], ev[2], ts) end
if last == '1' and not nxt then
  redis.call('DEL', KEYS[K_LEASE])
  unschedule(ts, status)  -- also drops head/head_attempts
  return 'released'
end
return 'ok'
