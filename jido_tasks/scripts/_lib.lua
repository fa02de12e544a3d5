-- Shared prelude, prepended to every script by jido_tasks/redis_layer.py.
--
-- Every session script receives the same KEYS (built by jido_tasks.keys, never here):
--   KEYS[1]  entry      hash of the registry row
--   KEYS[2]  state      string, JSON state
--   KEYS[3]  mailbox    list of pending action ids
--   KEYS[4]  actions    hash action id -> request JSON
--   KEYS[5]  results    hash action id -> outcome JSON
--   KEYS[6]  finished   list of finished action ids
--   KEYS[7]  lease      string "token|worker" with a TTL
--   KEYS[8]  events     the session's event stream
--   KEYS[9]  gevents    the global event stream
--   KEYS[10] activity   zset of live sessions by last activity
--   KEYS[11] active     zset of active sessions by last activity
--   KEYS[12] expiry     zset of live sessions by idle deadline
--   KEYS[13] terminated zset of terminated sessions by termination time
--   KEYS[14] scheduled  zset of sessions with a drain scheduled
-- and the same first ARGV:
--   ARGV[1] session id, ARGV[2] session stream maxlen, ARGV[3] global stream maxlen,
--   ARGV[4] done channel (pub/sub, not a key), ARGV[5] ms a terminated session keeps its own
--   event stream
-- Script-specific ARGV start at ARGV[6].

local K_ENTRY, K_STATE, K_MAILBOX, K_ACTIONS, K_RESULTS, K_FINISHED, K_LEASE = 1, 2, 3, 4, 5, 6, 7
local K_EVENTS, K_GEVENTS, K_ACTIVITY, K_ACTIVE, K_EXPIRY, K_TERMINATED, K_SCHEDULED =
  8, 9, 10, 11, 12, 13, 14
local SID = ARGV[1]

local function now()
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end

local function fmt(x)
  return string.format('%.6f', x)
end

-- Append an event to the session's stream and the global one (`global_only`: the latter).
local function emit(etype, data_json, ts, global_only)
  local fields = {'type', etype, 'sid', SID, 'ts', fmt(ts), 'data', data_json}
  if not global_only then
    redis.call('XADD', KEYS[K_EVENTS], 'MAXLEN', '~', ARGV[2], '*', unpack(fields))
  end
  redis.call('XADD', KEYS[K_GEVENTS], 'MAXLEN', '~', ARGV[3], '*', unpack(fields))
end

local function lease_token()
  local lease = redis.call('GET', KEYS[K_LEASE])
  if not lease then return nil end
  return string.match(lease, '^([^|]+)|')
end

-- Change status, keep the indexes in step and emit session.status (and session.terminated).
local function set_status(old, new, ts, reason)
  local e = KEYS[K_ENTRY]
  redis.call('HSET', e, 'status', new, 'updated_at', fmt(ts))
  if new == 'active' then
    local last = redis.call('HGET', e, 'last_activity')
    redis.call('ZADD', KEYS[K_ACTIVE], last, SID)
  elseif new == 'idle' then
    redis.call('ZREM', KEYS[K_ACTIVE], SID)
    -- An idle session keeps no stream of its own: even a one-entry Redis 7 stream costs about
    -- 4.7 kB, ten times the registry row. Its events stay in the global stream; the session's
    -- stream starts again (with later ids, so resuming still works) when it is active again.
    redis.call('DEL', KEYS[K_EVENTS])
  elseif new == 'terminating' then
    redis.call('ZREM', KEYS[K_ACTIVE], SID)
    redis.call('ZREM', KEYS[K_EXPIRY], SID)
    if reason and reason ~= '' then redis.call('HSET', e, 'reason', reason) end
  elseif new == 'terminated' then
    redis.call('HSET', e, 'terminated_at', fmt(ts))
    if reason and reason ~= '' then redis.call('HSET', e, 'reason', reason) end
    redis.call('HDEL', e, 'scheduled', 'head', 'head_attempts')
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
    redis.call('PEXPIRE', KEYS[K_EVENTS], ARGV[5])
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
  local fields = {'last_activity', fmt(ts)}
  if extra then
    for _, v in ipairs(extra) do fields[#fields + 1] = v end
  end
  redis.call('HSET', e, unpack(fields))
  redis.call('ZADD', KEYS[K_ACTIVITY], fmt(ts), SID)
  if status == 'idle' then
    set_status('idle', 'active', ts, nil)
    return 'active'
  end
  return status
end

-- Mark an action finished: outcome stored, id appended to the finished list (bounded),
-- waiters told. The caller has already removed it from the mailbox.
local function finish(aid, outcome_json, keep)
  redis.call('HSET', KEYS[K_RESULTS], aid, outcome_json)
  if redis.call('RPUSH', KEYS[K_FINISHED], aid) > keep then
    local old = redis.call('LPOP', KEYS[K_FINISHED])
    redis.call('HDEL', KEYS[K_ACTIONS], old)
    redis.call('HDEL', KEYS[K_RESULTS], old)
  end
  redis.call('PUBLISH', ARGV[4], aid .. '\n' .. outcome_json)
end

-- Drop the scheduled flag (the mailbox is empty: no head either); a terminating session with
-- no work left becomes terminated. `status` (optional): the status if already read.
local function unschedule(ts, status)
  redis.call('HDEL', KEYS[K_ENTRY], 'scheduled', 'head', 'head_attempts')
  redis.call('ZREM', KEYS[K_SCHEDULED], SID)
  status = status or redis.call('HGET', KEYS[K_ENTRY], 'status')
  if status == 'terminating' then
    set_status('terminating', 'terminated', ts, nil)
  end
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
  local reqs = redis.call('HMGET', KEYS[K_ACTIONS], unpack(ids))
  local out = {}
  for i = 1, #ids do
    out[#out + 1] = ids[i]
    out[#out + 1] = reqs[i] or ''
  end
  return attempts, out
end

-- Up to n pending actions from the head of the mailbox (see hand_out).
local function batch(n, reclaim)
  local ids = redis.call('LRANGE', KEYS[K_MAILBOX], 0, n - 1)
  if #ids == 0 then return 0, {} end
  return hand_out(ids, reclaim, nil)
end
