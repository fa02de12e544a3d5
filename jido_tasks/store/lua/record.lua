-- record: read what is stored of one action (reads only).
-- KEYS: the session keys (see _lib.lua).  ARGV: action_id.
-- Returns {'pending', request, progress Outcome or '', running (0/1), attempt under way}
-- (not finished yet),
-- {'finished', finish ms, record JSON}, {'legacy', request or '', Outcome or '', running}
-- (a record written before the records list) or {'unknown'} (never sent, or its record was
-- dropped: older than `record_retention`, or beyond `keep_results`).
local function running()
  if redis.call('LINDEX', KEYS[K_MAILBOX], 0) == action_id
     and redis.call('EXISTS', KEYS[K_LEASE]) == 1 then
    return 1
  end
  return 0
end
-- The attempt under way of a running head (the registry's head_attempts).
local function attempts(is_running)
  if is_running == 0 then return 0 end
  return tonumber(redis.call('HGET', KEYS[K_ENTRY], 'head_attempts')) or 0
end
local req = redis.call('HGET', KEYS[K_PENDING], action_id)
if req then
  local prog = redis.call('HGET', KEYS[K_PENDING], action_id .. PROGRESS_SUFFIX)
  local r = running()
  return {'pending', req, prog or '', r, attempts(r)}
end
local pos = redis.call('LPOS', KEYS[K_RECORDS], action_id, 'RANK', -1)
if pos then
  local found = redis.call('LRANGE', KEYS[K_RECORDS], pos + 1, pos + 2)
  return {'finished', found[1], found[2]}
end
local lreq = redis.call('HGET', KEYS[K_LEGACY_ACTIONS], action_id)
local lout = redis.call('HGET', KEYS[K_LEGACY_RESULTS], action_id)
if lreq or lout then
  local r = running()
  return {'legacy', lreq or '', lout or '', r, attempts(r)}
end
return {'unknown'}
