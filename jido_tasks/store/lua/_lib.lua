-- Shared prelude of every session script (jido_tasks/store/scripts.py prepends it).
--
-- Generated before this file, from the Python tuples that the calls use (never edit by hand):
--   K_ENTRY, K_STATE, ...   1-based positions in KEYS (jido_tasks.store.keys.SCRIPT_KEYS):
--                           entry (hash, registry row), state (hash, part name -> JSON of that
--                           top-level key; a string of the whole JSON before parts), mailbox
--                           (list of pending action ids), pending (hash id -> request JSON,
--                           id#p -> running Outcome), records (list of finished actions: id,
--                           finish ms, record JSON), lease (string "token|worker", with a TTL),
--                           events (the session's stream), cancelling (list of withdrawn ids
--                           still to finish), replies (list of by-name ids whose Celery
--                           results are still to store), legacy_actions/results/finished
--                           (records of an older version), events_global (the global stream),
--                           and the indexes activity, active, expiry, terminated, scheduled,
--                           undelivered (zsets), then metrics (hash of counters)
--   OWNED, INDEXES          the positions of the keys a session owns / of the global indexes
--   SID, EVENT_MAXLEN, GLOBAL_EVENT_MAXLEN, DONE_CHANNEL, TERMINATED_EVENTS_MS, RECORD_MS,
--   METRICS                 the common ARGV (DONE_CHANNEL is a pub/sub channel, not a key;
--                           METRICS '1': keep the counters, see count())
--   F_STATUS, F_ERROR       the stored names of the Outcome fields the scripts write
--   PROGRESS_SUFFIX         `<id>` .. this: a running action's progress in the pending hash
--   ACCEPTS_WORK[status], ALLOWED_FROM[target][status]   the lifecycle (jido_tasks.models)
--   CANCEL_CHUNK, UNPACK_CHUNK, TRIM_CHUNK              bounds of the work of one call
--   REPUBLISH_MAX           seconds: the longest wait between two drains recovery republishes
-- and, after this file, the script's own ARGV as named locals (and REST, the position of its
-- first variadic argument).

local function now()
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end

local function fmt(x)
  return string.format('%.6f', x)
end

-- A session's own stream is made when its first event after creation (or after an idle
-- period) is written, not at creation: even a one-entry Redis 7 stream costs about 4.7 kB, so a
-- new session that has done nothing keeps none (its session.created is in the global stream).
-- The stream then begins with that session.created, rebuilt from the registry row, at id 0-1
-- (before any real id): the id a reader of a session without a stream is given for it
-- (jido_tasks/core/events.py), so a reader resuming from there never sees it twice.
local own_stream_ready = false
local function seed_own_stream()
  own_stream_ready = true
  if redis.call('EXISTS', KEYS[K_EVENTS]) == 1 then return end
  local f = redis.call('HMGET', KEYS[K_ENTRY], 'created_at', 'metadata', 'restored_from')
  if not f[1] then return end  -- no registry row: nothing to rebuild it from
  local data = '{"session_id":"' .. SID .. '","metadata":' .. (f[2] or '{}')
  if f[3] then data = data .. ',"restored_from":"' .. f[3] .. '"' end
  redis.call('XADD', KEYS[K_EVENTS], '0-1', 'type', 'session.created', 'sid', SID,
             'ts', f[1], 'data', data .. '}')
end

-- Append an event to the session's stream and the global one (`global_only`: the latter).
local function emit(etype, data_json, ts, global_only)
  local fields = {'type', etype, 'sid', SID, 'ts', fmt(ts), 'data', data_json}
  if not global_only then
    if not own_stream_ready then seed_own_stream() end
    redis.call('XADD', KEYS[K_EVENTS], 'MAXLEN', '~', EVENT_MAXLEN, '*', unpack(fields))
  end
  redis.call('XADD', KEYS[K_EVENTS_GLOBAL], 'MAXLEN', '~', GLOBAL_EVENT_MAXLEN, '*',
             unpack(fields))
end

-- Add `by` (default 1) to the counter `field` of the metrics hash (field names: see
-- KeySchema.metrics in jido_tasks/store/keys.py), unless counters are off.
local function count(field, by)
  if METRICS == '1' then redis.call('HINCRBY', KEYS[K_METRICS], field, by or 1) end
end

local function lease_token()
  local lease = redis.call('GET', KEYS[K_LEASE])
  if not lease then return nil end
  return string.match(lease, '^([^|]+)|')
end

-- The registry fields `names` as a table name -> value (false when absent).
local function fields(names)
  local values = redis.call('HMGET', KEYS[K_ENTRY], unpack(names))
  local out = {}
  for i, name in ipairs(names) do out[name] = values[i] end
  return out
end

-- The whole registry row, flat (field, value, ...), for replies.
local function row()
  return redis.call('HGETALL', KEYS[K_ENTRY])
end

-- Change status, keep the indexes in step and emit session.status (and session.terminated).
local function set_status(old, new, ts, reason)
  local e = KEYS[K_ENTRY]
  redis.call('HSET', e, 'status', new, 'updated_at', fmt(ts))
  if new == 'active' then
    local last = redis.call('HGET', e, 'last_activity')
    redis.call('ZADD', KEYS[K_ACTIVE], last, SID)
    redis.call('ZADD', KEYS[K_ACTIVITY], last, SID)
  elseif new == 'idle' then
    -- An idle session keeps one index entry, in `expiry` (exact from now on: nothing moves
    -- its last activity until it is active again); listings find it there.
    local f = redis.call('HMGET', e, 'last_activity', 'timeout')
    redis.call('ZADD', KEYS[K_EXPIRY], fmt(tonumber(f[1]) + tonumber(f[2])), SID)
    redis.call('ZREM', KEYS[K_ACTIVE], SID)
    redis.call('ZREM', KEYS[K_ACTIVITY], SID)
    if redis.call('LLEN', KEYS[K_MAILBOX]) == 0 then  -- records of an older version: go now
      redis.call('DEL', KEYS[K_LEGACY_ACTIONS], KEYS[K_LEGACY_RESULTS], KEYS[K_LEGACY_FINISHED])
    end
    -- An idle session keeps no stream of its own: even a one-entry Redis 7 stream costs about
    -- 4.7 kB, ten times the registry row. Its events stay in the global stream; the session's
    -- stream starts again (with later ids, so resuming still works) when it is active again.
    redis.call('DEL', KEYS[K_EVENTS])
    own_stream_ready = false
  elseif new == 'terminating' then
    redis.call('ZREM', KEYS[K_ACTIVE], SID)
    redis.call('ZREM', KEYS[K_EXPIRY], SID)
    if old == 'idle' then  -- listed through `activity` again, until terminated
      redis.call('ZADD', KEYS[K_ACTIVITY], redis.call('HGET', e, 'last_activity'), SID)
    end
    if reason and reason ~= '' then redis.call('HSET', e, 'reason', reason) end
  elseif new == 'terminated' then
    redis.call('HSET', e, 'terminated_at', fmt(ts))
    if reason and reason ~= '' then redis.call('HSET', e, 'reason', reason) end
    redis.call('HDEL', e, 'scheduled', 'head', 'head_attempts', 'republished')
    redis.call('ZREM', KEYS[K_ACTIVITY], SID)
    redis.call('ZREM', KEYS[K_ACTIVE], SID)
    redis.call('ZREM', KEYS[K_EXPIRY], SID)
    redis.call('ZREM', KEYS[K_SCHEDULED], SID)
    redis.call('ZADD', KEYS[K_TERMINATED], fmt(ts), SID)
  end
  emit('session.status', cjson.encode({status = new, previous_status = old,
                                       updated_at = fmt(ts)}), ts, new == 'idle')
  if new == 'terminated' then
    emit('session.terminated', cjson.encode({session_id = SID,
                                             reason = redis.call('HGET', e, 'reason')}), ts)
    -- Its events stay in the global stream; its own goes after a while, not at the purge,
    -- so terminated sessions kept for `retention` do not each hold a stream.
    redis.call('PEXPIRE', KEYS[K_EVENTS], TERMINATED_EVENTS_MS)
    count('sessions:terminated')
  end
end

-- Record activity now; an idle session becomes active again. `extra` (optional): more
-- field/value pairs for the registry hash, written by the same HSET; `status` (optional): the
-- session's status if the caller has read it already.
-- Only the `activity` index moves with every touch. The scores in `active` and `expiry` are
-- lower bounds (exact at creation, on becoming active and after a sweep looked at the
-- session): a sweep candidate may have seen activity since, which mark_idle.lua and
-- expire.lua re-check in the registry row before re-scoring it. That keeps send and commit at
-- one index write, and costs the sweep one re-score per session per idle period.
local function touch(ts, extra, status)
  local e = KEYS[K_ENTRY]
  status = status or redis.call('HGET', e, 'status')
  if status == 'terminated' then return status end
  local pairs_ = {'last_activity', fmt(ts)}
  if extra then
    for _, v in ipairs(extra) do pairs_[#pairs_ + 1] = v end
  end
  redis.call('HSET', e, unpack(pairs_))
  redis.call('ZADD', KEYS[K_ACTIVITY], fmt(ts), SID)
  if status == 'idle' then
    set_status('idle', 'active', ts, nil)
    return 'active'
  end
  return status
end

-- One stored record from a request and an outcome JSON object (both written by our models:
-- a JSON object each, with disjoint field names): their fields side by side. Nothing is
-- re-encoded, so params and results keep their exact bytes.
local function merge(request, outcome)
  if not request or #request < 3 or string.sub(request, -1) ~= '}' then return outcome end
  if outcome == '{}' then return request end  -- succeeded, once, no result: nothing to add
  return string.sub(request, 1, -2) .. ',' .. string.sub(outcome, 2)
end

-- Drop finished records older than RECORD_MS (at most TRIM_CHUNK per call; the key's TTL,
-- refreshed on each write, takes the rest when finishes stop) and trim the session's own
-- event stream to the same age.
local function trim_by_age(ts_ms)
  local cutoff = ts_ms - tonumber(RECORD_MS)
  local old = 0
  while old < TRIM_CHUNK do
    local at = redis.call('LINDEX', KEYS[K_RECORDS], 3 * old + 1)
    if not at or tonumber(at) >= cutoff then break end
    old = old + 1
  end
  if old > 0 then redis.call('LTRIM', KEYS[K_RECORDS], 3 * old, -1) end
  redis.call('XTRIM', KEYS[K_EVENTS], 'MINID', '~', string.format('%.0f', cutoff))
end

-- An action sent by name (its request, whose last field is reply_to (stored as "y": see
-- jido_tasks.models.ActionRequest), says "celery") has its id queued in `replies` until its
-- Celery result is stored (`delivered.lua` drops it), so a worker dying between a commit and
-- that write, or a cancel by a client, loses no result: the next drain or the sweep (index
-- `undelivered`) stores it. Bounded by `keep`.
local REPLY_SUFFIX = '"y":"celery"}'
local function queue_reply(aid, req, keep, ts)
  if not req or string.sub(req, -#REPLY_SUFFIX) ~= REPLY_SUFFIX then return end
  if redis.call('RPUSH', KEYS[K_REPLIES], aid) > keep then
    redis.call('LPOP', KEYS[K_REPLIES])
  end
  redis.call('ZADD', KEYS[K_UNDELIVERED], 'NX', fmt(ts), SID)
end

-- The request JSON of each of `ids` (false when gone), from the pending hash or, for actions
-- sent before records existed, the legacy actions hash; all of them leave both.
local function take_requests(ids)
  local reqs = {}
  local fields = {}
  for first = 1, #ids, UNPACK_CHUNK do
    local last = math.min(first + UNPACK_CHUNK - 1, #ids)
    local part = redis.call('HMGET', KEYS[K_PENDING], unpack(ids, first, last))
    for i = 1, #part do reqs[#reqs + 1] = part[i] end
  end
  for i, aid in ipairs(ids) do
    fields[#fields + 1] = aid
    fields[#fields + 1] = aid .. PROGRESS_SUFFIX
    if not reqs[i] then
      reqs[i] = redis.call('HGET', KEYS[K_LEGACY_ACTIONS], aid)
      if reqs[i] then redis.call('HDEL', KEYS[K_LEGACY_ACTIONS], aid) end
    end
  end
  for first = 1, #fields, UNPACK_CHUNK do
    local last = math.min(first + UNPACK_CHUNK - 1, #fields)
    redis.call('HDEL', KEYS[K_PENDING], unpack(fields, first, last))
  end
  return reqs
end

-- Mark actions finished (the caller has removed them from the mailbox): each one's request
-- and Outcome JSON become one record, appended to the records list (three elements: id,
-- finish time in ms, record) bounded by `keep` and by age; waiters are told (message: id,
-- finish time in ms, Outcome JSON). `outcomes[i]` is the Outcome of `ids[i]`.
local function finish_many(ids, outcomes, keep, ts)
  if #ids == 0 then return end
  local reqs = take_requests(ids)
  local ms = string.format('%.0f', ts * 1000)
  local items = {}
  for i, aid in ipairs(ids) do
    items[#items + 1] = aid
    items[#items + 1] = ms
    items[#items + 1] = merge(reqs[i], outcomes[i])
    queue_reply(aid, reqs[i], keep, ts)
  end
  local len = 0
  for first = 1, #items, UNPACK_CHUNK - 1 do  -- a multiple of 3
    local last = math.min(first + UNPACK_CHUNK - 2, #items)
    len = redis.call('RPUSH', KEYS[K_RECORDS], unpack(items, first, last))
  end
  if len > 3 * keep then redis.call('LTRIM', KEYS[K_RECORDS], -3 * keep, -1) end
  trim_by_age(ts * 1000)
  redis.call('PEXPIRE', KEYS[K_RECORDS], RECORD_MS)
  for i, aid in ipairs(ids) do
    redis.call('PUBLISH', DONE_CHANNEL, aid .. '\n' .. ms .. '\n' .. outcomes[i])
  end
end

-- The action names of `ids` (at most CANCEL_CHUNK of them), read before they are finished (a
-- finish may drop old requests).
-- A request is written by ActionRequest.to_json, whose first field is the action name, so the
-- name is matched, not decoded; anything else is decoded ('?' when there is no request).
local function action_names(ids)
  local reqs = redis.call('HMGET', KEYS[K_PENDING], unpack(ids))
  local out = {}
  for i = 1, #ids do
    local req = reqs[i]
    local name = req and string.match(req, '^{"a":"([a-z0-9_.]+)"')
    if req and not name then
      local ok, decoded = pcall(cjson.decode, req)
      name = ok and type(decoded) == 'table' and (decoded.a or decoded.action) or nil
    end
    out[i] = name or '?'
  end
  return out
end

-- Count cancelled actions by name (one HINCRBY per distinct name).
local function count_cancelled(names)
  local by = {}
  for _, name in ipairs(names) do by[name] = (by[name] or 0) + 1 end
  for name, n in pairs(by) do count('actions:cancelled:' .. name, n) end
end

-- The Outcome (jido_tasks.models.Outcome) of an action withdrawn before it ran.
local function cancelled_outcome(message)
  return cjson.encode({[F_STATUS] = 'cancelled',
                       [F_ERROR] = {type = 'ActionCancelled', message = message}})
end

-- Drop the scheduled flag (the mailbox is empty: no head either); a terminating session with
-- no work left becomes terminated. `status` (optional): the status if already read.
local function unschedule(ts, status)
  redis.call('HDEL', KEYS[K_ENTRY], 'scheduled', 'head', 'head_attempts', 'republished')
  redis.call('ZREM', KEYS[K_SCHEDULED], SID)
  status = status or redis.call('HGET', KEYS[K_ENTRY], 'status')
  if status == 'terminating' then
    set_status('terminating', 'terminated', ts, nil)
  end
end

-- Finish up to CANCEL_CHUNK of the actions a termination withdrew (cancelled outcome and
-- event each); returns how many are left. Bounded, so no call blocks Redis for long.
local function cancel_chunk(keep, ts)
  local ids = redis.call('LPOP', KEYS[K_CANCELLING], CANCEL_CHUNK)
  if ids then
    local reason = redis.call('HGET', KEYS[K_ENTRY], 'reason') or ''
    local outcome = cancelled_outcome('session terminating: ' .. reason)
    local names = {}
    if METRICS == '1' then names = action_names(ids) end  -- before the requests are taken
    local outcomes = {}
    for i = 1, #ids do outcomes[i] = outcome end
    finish_many(ids, outcomes, keep, ts)
    for _, aid in ipairs(ids) do
      emit('action.cancelled', cjson.encode({action_id = aid, reason = reason}), ts)
    end
    count_cancelled(names)
  end
  return redis.call('LLEN', KEYS[K_CANCELLING])
end

-- Seconds a drain flag with no live lease may age before recovery publishes a drain again,
-- after `n` drains published since the last claim (the registry's `republished`):
-- `stale_after`, doubled for each of them (a drain merely waiting in a long queue is not lost,
-- and publishing more only lengthens the queue), at most REPUBLISH_MAX (or `stale_after`).
local function republish_after(stale_after, n)
  return math.min(stale_after * 2 ^ n, math.max(REPUBLISH_MAX, stale_after))
end

-- The scheduled index's score of a flag set at `flag` after `n` republishes: the sweep takes
-- the members scored up to now - stale_after, so it finds this one once it is due again.
local function scheduled_score(flag, stale_after, n)
  return flag + republish_after(stale_after, n) - stale_after
end

-- Mark a drain published for a session no drain claimed since (a recovery, or a send that
-- found the flag stale): the flag is set to `ts`, `republished` counted and the index scored
-- with the backoff. Returns the new count.
local function republished(ts, stale_after)
  local n = redis.call('HINCRBY', KEYS[K_ENTRY], 'republished', 1)
  redis.call('HSET', KEYS[K_ENTRY], 'scheduled', fmt(ts))
  redis.call('ZADD', KEYS[K_SCHEDULED], fmt(scheduled_score(ts, stale_after, n)), SID)
  return n
end

-- An abandoned session (no live holder) goes back to the queue: with pending actions its drain
-- flag is refreshed (see republished()), session.recovered emitted (with `data`, which gets
-- `pending`, `abandoned_for` since `flag` and `republished`), and 'recover' returned (the
-- caller publishes a drain); with none the flag is dropped and 'unscheduled' returned. Used by
-- recover.lua (the sweep) and recover_dead.lua (the light recovery).
local function requeue_abandoned(ts, flag, data, stale_after)
  local pending = redis.call('LLEN', KEYS[K_MAILBOX])
  if pending == 0 then
    unschedule(ts)
    return 'unscheduled'
  end
  data.republished = republished(ts, stale_after)
  data.session_id, data.pending, data.abandoned_for = SID, pending, ts - tonumber(flag)
  emit('session.recovered', cjson.encode(data), ts)
  return 'recover'
end

-- HMGET of many fields, UNPACK_CHUNK at a time (Lua's unpack has a hard limit).
local function hmget_many(key, names)
  local out = {}
  for first = 1, #names, UNPACK_CHUNK do
    local last = math.min(first + UNPACK_CHUNK - 1, #names)
    local part = redis.call('HMGET', key, unpack(names, first, last))
    for i = 1, #part do out[#out + 1] = part[i] end
  end
  return out
end

-- Hand out `ids` (the first pending actions) as a flat list id, request, ...
-- `head_attempts` counts how often the head was handed to a worker: a new claim (`reclaim`)
-- of the same head means the previous holder died or lost its lease while holding it.
-- `known`: the registry's {head, head_attempts} if already read.
local function hand_out(ids, reclaim, known)
  local e = KEYS[K_ENTRY]
  known = known or redis.call('HMGET', e, 'head', 'head_attempts')
  local attempts = tonumber(known[2])
  if known[1] ~= ids[1] then
    redis.call('HSET', e, 'head', ids[1], 'head_attempts', 1)
    attempts = 1
  elseif reclaim then
    attempts = redis.call('HINCRBY', e, 'head_attempts', 1)
  end
  local reqs = hmget_many(KEYS[K_PENDING], ids)
  local out = {}
  for i = 1, #ids do
    out[#out + 1] = ids[i]
    -- An action sent before records existed has its request in the legacy hash.
    out[#out + 1] = reqs[i] or redis.call('HGET', KEYS[K_LEGACY_ACTIONS], ids[i]) or ''
  end
  return attempts, out
end

-- Up to n pending actions from the head of the mailbox (see hand_out).
local function batch(n, reclaim)
  local ids = redis.call('LRANGE', KEYS[K_MAILBOX], 0, n - 1)
  if #ids == 0 then return 0, {} end
  return hand_out(ids, reclaim, nil)
end

-- The whole state (flat part name, JSON, ...) when it is small: at most PRELOAD_PARTS parts
-- of at most PRELOAD_BYTES in all (sizes read first, so a big state is never copied), so a
-- drain of a small session reads no part on its own; nil otherwise (the drain reads the parts
-- its actions ask for). An empty state is small: {}.
local function small_state()
  local names = redis.call('HKEYS', KEYS[K_STATE])
  if #names > PRELOAD_PARTS then return nil end
  local size = 0
  for _, name in ipairs(names) do
    size = size + redis.call('HSTRLEN', KEYS[K_STATE], name)
    if size > PRELOAD_BYTES then return nil end
  end
  if #names == 0 then return {} end
  local values = redis.call('HMGET', KEYS[K_STATE], unpack(names))
  local out = {}
  for i, name in ipairs(names) do
    out[#out + 1] = name
    out[#out + 1] = values[i]
  end
  return out
end

-- Take the free lease (`flat`: the registry row, already read): a new fencing token, the
-- claimer's liveness key (KEYS[K_EXTRA], if given) set, the first batch handed out. A reply of claim.
local function claim_free(flat, worker, lease_ms, batch_size, alive_ms)
  local entry = {}
  for i = 1, #flat, 2 do entry[flat[i]] = flat[i + 1] end
  local ids = redis.call('LRANGE', KEYS[K_MAILBOX], 0, tonumber(batch_size) - 1)
  if #ids == 0 then
    unschedule(now(), entry['status'])
    return {'empty'}
  end
  local token = redis.call('HINCRBY', KEYS[K_ENTRY], 'fence', 1)
  -- The scheduled flag stays as it is: the live lease is what tells recovery to keep off.
  -- Drains republished before this claim are done with: the backoff starts again, and the
  -- flag is scored as a fresh one (so the light recovery finds this claimer if it dies).
  if entry['republished'] then
    local ts = now()
    redis.call('HDEL', KEYS[K_ENTRY], 'republished')
    redis.call('HSET', KEYS[K_ENTRY], 'scheduled', fmt(ts))
    redis.call('ZADD', KEYS[K_SCHEDULED], fmt(ts), SID)
  end
  redis.call('SET', KEYS[K_LEASE], token .. '|' .. worker, 'PX', lease_ms)
  if KEYS[K_EXTRA] then redis.call('SET', KEYS[K_EXTRA], '1', 'PX', alive_ms) end
  local attempts, items = hand_out(ids, true, {entry['head'], entry['head_attempts']})
  -- The state is not read here (a drain loads the parts it needs); only a state still stored
  -- as one JSON string (before parts) comes back whole, to be turned into parts by the next
  -- commit.
  local legacy, parts = '', nil
  if redis.call('TYPE', KEYS[K_STATE]).ok == 'string' then
    legacy = redis.call('GET', KEYS[K_STATE])
  else
    parts = small_state()
  end
  local out = {'ok', token, legacy, attempts, #flat}
  for _, v in ipairs(flat) do out[#out + 1] = v end
  out[#out + 1] = parts and #parts or -1
  for _, v in ipairs(parts or {}) do out[#out + 1] = v end
  for _, v in ipairs(items) do out[#out + 1] = v end
  return out
end

-- What is stored of an accepted action id: its JSON (the pending request, or the kept record,
-- which starts with the request's fields and so carries its digest `d`) and the record JSON
-- when it has finished ('' while pending); nil when the id is unknown.
local function known_action(aid)
  local pending = redis.call('HGET', KEYS[K_PENDING], aid)
  if pending then return pending, '' end
  local pos = redis.call('LPOS', KEYS[K_RECORDS], aid, 'RANK', -1)
  if not pos then return nil, '' end
  local record = redis.call('LINDEX', KEYS[K_RECORDS], pos + 2)
  return record, record
end

-- After actions were queued: touch activity and set the drain flag if it was not set, or was
-- set longer ago than republish_after() with no lease (its drain message was lost, unless it
-- waits in a long queue: then the backoff keeps the drains published for it few). `f`: the
-- registry's {status, scheduled, republished}. Returns 1 when the caller must see to a drain,
-- else 0.
local function schedule(f, stale_after, ts)
  if not f.scheduled then
    redis.call('ZADD', KEYS[K_SCHEDULED], fmt(ts), SID)
    touch(ts, {'scheduled', fmt(ts)}, f.status)
    return 1
  end
  local stale = tonumber(stale_after)
  if ts - tonumber(f.scheduled) > republish_after(stale, tonumber(f.republished or 0))
     and redis.call('EXISTS', KEYS[K_LEASE]) == 0 then
    republished(ts, stale)
    touch(ts, nil, f.status)
    return 1
  end
  touch(ts, nil, f.status)
  return 0
end
