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
--   ARGV[4] done channel (pub/sub, not a key)
-- Script-specific ARGV start at ARGV[5].

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
  end
end

-- Record activity now; an idle session becomes active again. `extra` (optional): more
-- field/value pairs for the registry hash, written by the same HSET. `row` (optional): the
-- session's {status, timeout} if the caller has read them already.
local function touch(ts, extra, row)
  local e = KEYS[K_ENTRY]
  row = row or redis.call('HMGET', e, 'status', 'timeout')
  local status = row[1]
  if status == 'terminated' then return status end
  local fields = {'last_activity', fmt(ts)}
  if extra then
    for _, v in ipairs(extra) do fields[#fields + 1] = v end
  end
  redis.call('HSET', e, unpack(fields))
  redis.call('ZADD', KEYS[K_ACTIVITY], fmt(ts), SID)
  if status == 'terminating' then return status end
  redis.call('ZADD', KEYS[K_EXPIRY], fmt(ts + tonumber(row[2])), SID)
  if status == 'idle' then
    set_status('idle', 'active', ts, nil)
  else
    redis.call('ZADD', KEYS[K_ACTIVE], fmt(ts), SID)
  end
  return 'active'
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
-- no work left becomes terminated.
local function unschedule(ts)
  redis.call('HDEL', KEYS[K_ENTRY], 'scheduled', 'head', 'head_attempts')
  redis.call('ZREM', KEYS[K_SCHEDULED], SID)
  if redis.call('HGET', KEYS[K_ENTRY], 'status') == 'terminating' then
    set_status('terminating', 'terminated', ts, nil)
  end
end

-- Up to n pending actions from the head of the mailbox, as a flat list id, request, ...
-- `head_attempts` counts how often the head was handed to a worker: a new claim (`reclaim`)
-- of the same head means the previous holder died or lost its lease while holding it.
local function batch(n, reclaim)
  local ids = redis.call('LRANGE', KEYS[K_MAILBOX], 0, n - 1)
  local out = {}
  if #ids == 0 then return 0, out end
  local e = KEYS[K_ENTRY]
  local attempts
  if redis.call('HGET', e, 'head') ~= ids[1] then
    redis.call('HSET', e, 'head', ids[1], 'head_attempts', 1)
    attempts = 1
  elseif reclaim then
    attempts = redis.call('HINCRBY', e, 'head_attempts', 1)
  else
    attempts = tonumber(redis.call('HGET', e, 'head_attempts'))
  end
  local reqs = redis.call('HMGET', KEYS[K_ACTIONS], unpack(ids))
  for i = 1, #ids do
    out[#out + 1] = ids[i]
    out[#out + 1] = reqs[i] or ''
  end
  return attempts, out
end
