-- send_many: accept n actions for a session, all or none, in order. Every id is looked up
-- before anything is written: an id accepted before with the same digest (a retried batch) is
-- a duplicate and stays as it is; an id taken by other content refuses the whole batch. Then,
-- if any action is new, the session must accept work; the new ones are stored and appended to
-- the mailbox in order, and the drain flag is set once (as send.lua does).
-- KEYS: the session keys (see _lib.lua).
-- ARGV: n, stale_after; then from REST on, for each action: action_id, request (JSON), digest
-- ('' for none).
-- Returns {'ok', publish (0/1), then per action: '' (queued) or 'exists', and the record JSON
-- of a finished duplicate ('' otherwise)}, {'changed', i} (the i-th action's id, 1-based, is
-- taken by another action: nothing written), {'missing'} or {'inactive', status}.
local count = tonumber(n)
local out = {'ok', 0}
local new_ids, new_pairs = {}, {}
for i = 0, count - 1 do
  local aid, digest = ARGV[REST + 3 * i], ARGV[REST + 3 * i + 2]
  local known, outcome = known_action(aid)
  if known then
    if digest == '' or cjson.decode(known).d ~= digest then return {'changed', i + 1} end
    out[#out + 1], out[#out + 2] = 'exists', outcome
  else
    out[#out + 1], out[#out + 2] = '', ''
    new_ids[#new_ids + 1] = aid
    new_pairs[#new_pairs + 1] = aid
    new_pairs[#new_pairs + 1] = ARGV[REST + 3 * i + 1]
  end
end
if #new_ids == 0 then return out end  -- all sent before: accepted again whatever the status
local f = fields({'status', 'scheduled', 'republished'})
if not f.status then return {'missing'} end
if not ACCEPTS_WORK[f.status] then return {'inactive', f.status} end
for first = 1, #new_pairs, UNPACK_CHUNK do  -- UNPACK_CHUNK is even: pairs stay whole
  redis.call('HSET', KEYS[K_PENDING], unpack(new_pairs, first,
                                              math.min(first + UNPACK_CHUNK - 1, #new_pairs)))
end
for first = 1, #new_ids, UNPACK_CHUNK do
  redis.call('RPUSH', KEYS[K_MAILBOX], unpack(new_ids, first,
                                              math.min(first + UNPACK_CHUNK - 1, #new_ids)))
end
out[2] = schedule(f, stale_after, now())
return out
