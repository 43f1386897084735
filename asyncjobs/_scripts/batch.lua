-- batch: open, reopen or close a batch (#14), and fire what its counters call for.
-- KEYS[1] the batch hash (routes the call on a Cluster); the other keys are built from
-- the prefix: one hash tag, so one slot.
-- ARGV[1] key prefix "{ns}:", ARGV[2] TTL seconds, ARGV[3] bid, ARGV[4] action:
--   'open'   ARGV[5] parent bid or '', then field/value pairs of the new hash;
--            takes one hold. Returns 1, or 0 if the parent is gone or complete.
--   'reopen' ARGV[5] '1' when the caller is a job of this batch (allowed after
--            complete: the job itself is still pending). Takes one hold. Returns 1,
--            0 if the batch is gone (expired), -1 if it completed.
--   'close'  ARGV[5] jobs added while the hold was held: counted in total and pending,
--            the hold released, callbacks fired. Returns 1, 0 if the batch is gone.
local BP, BTTL = ARGV[1], tonumber(ARGV[2])
--#include batch_lib
local bid, action = ARGV[3], ARGV[4]
local key = bkey(bid)
if action == 'open' then
  local parent = ARGV[5]
  if parent ~= '' then
    local p = redis.call('HMGET', bkey(parent), 'holds')
    if not p[1] then
      return 0
    end
    redis.call('HINCRBY', bkey(parent), 'kids', 1)
    redis.call('HINCRBY', bkey(parent), 'kidss', 1)
    btouch(bkey(parent))
  end
  redis.call('HSET', key, 'holds', 1, 'total', 0, 'pending', 0, 'kids', 0, 'kidss', 0,
    unpack(ARGV, 6))
  if parent ~= '' then
    redis.call('HSET', key, 'parent', parent)
  end
  btouch(key)
  return 1
end
if redis.call('EXISTS', key) == 0 then
  return 0
end
if action == 'reopen' then
  if ARGV[5] ~= '1' and redis.call('HEXISTS', key, 'complete_at') == 1 then
    return -1
  end
  redis.call('HINCRBY', key, 'holds', 1)
  btouch(key)
  return 1
end
-- close
local n = tonumber(ARGV[5])
if n > 0 then
  redis.call('HINCRBY', key, 'total', n)
  redis.call('HINCRBY', key, 'pending', n)
end
redis.call('HINCRBY', key, 'holds', -1)
btouch(key)
bcheck(bid)
return 1
