-- release_lock: delete a lock only if it still holds our token (never another owner's).
-- KEYS[1] the lock.  ARGV[1] our token.  (Not a session script: the session KEYS do not apply.)
-- Returns 1 if released, 0 if it was not ours (expired, or taken by someone else).
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
