-- claim: take the lease on a session if it is free, with a new fencing token, and return the
-- first batch of pending actions with the state.
-- KEYS: the session keys (see _lib.lua).  ARGV: worker, lease_ms, batch_size.
-- The state is not read here (a drain loads the parts it needs); only a state still stored as
-- one JSON string (before parts) comes back whole, to be turned into parts by the next commit.
-- Returns {'ok', token, legacy state JSON or '', head_attempts, n, <n registry hash fields and values>,
-- id1, req1, ...}, {'busy', lease ms left}, {'empty'} (nothing pending: the flag is dropped)
-- or {'missing'}.
local flat = row()
if #flat == 0 then return {'missing'} end
if redis.call('EXISTS', KEYS[K_LEASE]) == 1 then
  return {'busy', redis.call('PTTL', KEYS[K_LEASE])}
end
local entry = {}
for i = 1, #flat, 2 do entry[flat[i]] = flat[i + 1] end
local ids = redis.call('LRANGE', KEYS[K_MAILBOX], 0, tonumber(batch_size) - 1)
if #ids == 0 then
  unschedule(now(), entry['status'])
  return {'empty'}
end
local token = redis.call('HINCRBY', KEYS[K_ENTRY], 'fence', 1)
-- The scheduled flag stays as it is: the live lease is what tells recovery to keep off.
redis.call('SET', KEYS[K_LEASE], token .. '|' .. worker, 'PX', lease_ms)
local attempts, items = hand_out(ids, true, {entry['head'], entry['head_attempts']})
local legacy = ''
if redis.call('TYPE', KEYS[K_STATE]).ok == 'string' then
  legacy = redis.call('GET', KEYS[K_STATE])
end
local out = {'ok', token, legacy, attempts, #flat}
for _, v in ipairs(flat) do out[#out + 1] = v end
for _, v in ipairs(items) do out[#out + 1] = v end
return out
