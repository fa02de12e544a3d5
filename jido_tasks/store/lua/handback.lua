-- handback: a worker that lacks the head action's code gives the session back, for a worker
-- that has it: drop the lease (fenced), keep the action pending at the head with its claim
-- uncounted (a hand-back is no crash: it must not bring the action closer to poison), and keep
-- the drain flag fresh (the worker's drain message is retried; recovery covers a lost one).
-- KEYS: the session keys (see _lib.lua).  ARGV: token, action_id.
-- Returns 'ok', 'stale' (lease lost: nothing written) or 'moved' (the action is no longer
-- the head, e.g. cancelled: the lease is kept, the caller reads the mailbox again).
if lease_token() ~= token then return 'stale' end
if redis.call('LINDEX', KEYS[K_MAILBOX], 0) ~= action_id then return 'moved' end
local ts = now()
redis.call('DEL', KEYS[K_LEASE])
redis.call('HSET', KEYS[K_ENTRY], 'head', action_id, 'head_attempts', 0, 'scheduled', fmt(ts))
redis.call('ZADD', KEYS[K_SCHEDULED], fmt(ts), SID)
return 'ok'
