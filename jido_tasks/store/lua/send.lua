-- send: accept one action for a session: store its request, append it to the mailbox, touch
-- activity and set the "drain scheduled" flag. Idempotent per action id: an id whose request
-- is pending or whose record is kept is not sent again; with the same digest (a retried or redelivered send) the
-- reply says so, and with another digest the id is refused as taken.
-- KEYS: the session keys (see _lib.lua).
--   With `worker` set (a worker accepting a by-name send), KEYS[K_EXTRA] is its liveness key.
-- ARGV: action_id, request (JSON), digest (of the action name and params; '' for none),
-- stale_after (seconds after which a flag with no live lease is stale: its drain message was
-- lost, and a new drain must be published; longer once drains were republished with no claim
-- since, see republish_after()); worker, lease_ms, batch_size, alive_ms: with a
-- worker ('' for none), a send that would ask for a drain claims the free lease for it
-- instead, as claim.lua does, so the caller drains at once without another round trip.
-- Returns {'ok', publish (0/1)}, {'claimed', <claim.lua's 'ok' reply after its tag>} (the
-- drain is the caller's to run, under the lease it now holds), {'exists', record JSON or ''
-- while pending} (the same send again), {'changed'} (the id is taken by another action),
-- {'missing'} or {'inactive', status}.
-- An id is known while its request is pending or its record is kept (see _lib.lua).
local known, outcome = known_action(action_id)
if known then
  -- Checked before the status: a redelivered send of an accepted action is not refused
  -- because the session has ended since.
  if digest ~= '' and cjson.decode(known).d == digest then
    return {'exists', outcome}
  end
  return {'changed'}
end
local f = fields({'status', 'scheduled', 'republished'})
if not f.status then return {'missing'} end
if not ACCEPTS_WORK[f.status] then return {'inactive', f.status} end
local ts = now()
redis.call('HSET', KEYS[K_PENDING], action_id, request)
redis.call('RPUSH', KEYS[K_MAILBOX], action_id)
local publish = schedule(f, stale_after, ts)
if publish == 1 and worker ~= '' and redis.call('EXISTS', KEYS[K_LEASE]) == 0 then
  local claimed = claim_free(row(), worker, lease_ms, batch_size, alive_ms)
  claimed[1] = 'claimed'  -- never 'empty': this send just queued an action
  return claimed
end
return {'ok', publish}
