-- release: end a batch. With the mailbox empty, drop the lease and the scheduled flag (and
-- finish a terminating session); otherwise keep the lease and return the next batch, so a send
-- that raced with the end of the batch is never stranded.
-- KEYS: the session keys (see _lib.lua).  ARGV: token, batch_size, lease_ms.
-- Returns {'released'}, {'stale'} or {'more', head_attempts, id1, req1, ...}.
if lease_token() ~= token then return {'stale'} end
if redis.call('LLEN', KEYS[K_MAILBOX]) == 0 then
  redis.call('DEL', KEYS[K_LEASE])
  unschedule(now())
  return {'released'}
end
redis.call('PEXPIRE', KEYS[K_LEASE], lease_ms)
local attempts, items = batch(tonumber(batch_size), false)
local out = {'more', attempts}
for _, v in ipairs(items) do out[#out + 1] = v end
return out
