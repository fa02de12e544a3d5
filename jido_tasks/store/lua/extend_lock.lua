-- extend_lock: give a lock we still hold `ms` more milliseconds to live.
-- KEYS[1] the lock.  ARGV: token, ms.  (Not a session script: no prelude.)
-- Returns 1 if extended, 0 if it is no longer ours.
if redis.call('GET', KEYS[1]) == token then return redis.call('PEXPIRE', KEYS[1], ms) end
return 0
