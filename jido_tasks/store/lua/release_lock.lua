-- release_lock: delete a lock only if it still holds our token (never another owner's).
-- KEYS[1] the lock.  ARGV: token.  (Not a session script: no prelude.)
-- Returns 1 if released, 0 if it was not ours (expired, or taken by someone else).
if redis.call('GET', KEYS[1]) == token then return redis.call('DEL', KEYS[1]) end
return 0
