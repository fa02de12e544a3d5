-- extend_lock: give a lock we still hold ARGV[2] more milliseconds to live.
-- KEYS[1] the lock.  ARGV[1] our token, ARGV[2] ms.  (Not a session script.)
-- Returns 1 if extended, 0 if it is no longer ours.
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
