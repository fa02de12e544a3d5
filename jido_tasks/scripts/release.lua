-- release: end a batch. With the mailbox empty, drop the lease and the scheduled flag (and
-- finish a terminating session); otherwise keep the lease and return the next batch, so a send
-- that raced with the end of the batch is never stranded.
-- KEYS: the session set (see _lib.lua).
-- ARGV[6] token, ARGV[7] batch size, ARGV[8] lease ms.
-- Returns {'released'}, {'stale'} or {'more', head_attempts, id1, req1, ...}.
if lease_token() ~= ARGV[6] then return {'stale'} end
if redis.call('LLEN', KEYS[K_MAILBOX]) == 0 then
  redis.call('DEL', KEYS[K_LEASE])
  unschedule(now())
  return {'released'}
end
redis.call('PEXPIRE', KEYS[K_LEASE], ARGV[8])
local attempts, items = batch(tonumber(ARGV[7]), false)
local out = {'more', attempts}
for _, v in ipairs(items) do out[#out + 1] = v end
return out
