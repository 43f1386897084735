-- batch: open, reopen or close a batch (#14), and fire what its counters call for.
-- KEYS[1] the batch hash (routes the call on a Cluster); the other keys are built from
-- the prefix: one hash tag, so one slot.
-- ARGV[1] key prefix "{ns}:", ARGV[2] TTL seconds, ARGV[3] bid, ARGV[4] action:
--   'open'   ARGV[5] parent bid or '', then field/value pairs of the new hash;
--            takes one hold; a child is counted in its parent and listed there
--            (kid:<bid> = its created_at). Returns 1, or 0 if the parent is gone.
--   'once'   as 'open', for a batch whose bid is derived (a chain's next step, from the
--            step before): if the batch exists already, writes nothing and returns 2
--            if no block holds it (closed: its jobs were all deferred), 3 if one does
--            (a block still deferring, or one whose process died or raised inside it).
--   'reopen' ARGV[5] '1' when the caller is a job of this batch (allowed after
--            complete: the job itself is still pending). Takes one hold. Returns 1,
--            0 if the batch is gone (expired), -1 if it completed.
--   'close'  ARGV[5] jobs added while the hold was held: counted in total and pending,
--            the hold released, callbacks fired. Returns 1, 0 if the batch is gone.
--   'after'  a gate (configure(after=...)): ARGV[5] the waiting job's payload, ARGV[6]
--            its queue, ARGV[7] a description, ARGV[8..] the jids it waits for (tracked
--            jobs). A jid whose outcome is stored counts at once; the others add the
--            gate to {ns}:after:<jid> (result.lua counts them). The job is pushed when
--            all succeeded. Returns 1, or the first jid with neither status nor outcome.
-- 'open' and 'after' add the batch to the index {ns}:batches (sorted set, score
-- created_at): one ZADD, and up to 8 entries older than the TTL whose hash is gone
-- removed (bounded; the listing removes the others it meets).
local BP, BTTL = ARGV[1], tonumber(ARGV[2])
--#include batch_lib
local bid, action = ARGV[3], ARGV[4]
local key = bkey(bid)

local function bindex(created)
  local idx = BP .. 'batches'
  redis.call('ZADD', idx, created, bid)
  local old = redis.call('ZRANGEBYSCORE', idx, '-inf', '(' .. (tonumber(created) - BTTL),
    'LIMIT', 0, 8)
  for _, b in ipairs(old) do
    if redis.call('EXISTS', bkey(b)) == 0 then
      redis.call('ZREM', idx, b)
    end
  end
end
if action == 'once' then
  local holds = redis.call('HGET', key, 'holds')
  if holds then
    return tonumber(holds) > 0 and 3 or 2
  end
  action = 'open'
end
if action == 'open' then
  local parent = ARGV[5]
  local created = nil
  for j = 6, #ARGV - 1, 2 do
    if ARGV[j] == 'created_at' then
      created = ARGV[j + 1]
    end
  end
  created = created or bnow()
  if parent ~= '' then
    local p = redis.call('HMGET', bkey(parent), 'holds')
    if not p[1] then
      return 0
    end
    redis.call('HINCRBY', bkey(parent), 'kids', 1)
    redis.call('HINCRBY', bkey(parent), 'kidss', 1)
    redis.call('HSET', bkey(parent), 'kid:' .. bid, created)
    btouch(bkey(parent))
  end
  redis.call('HSET', key, 'holds', 1, 'total', 0, 'pending', 0, 'kids', 0, 'kidss', 0,
    unpack(ARGV, 6))
  if parent ~= '' then
    redis.call('HSET', key, 'parent', parent)
  end
  btouch(key)
  bindex(created)
  return 1
end
if action == 'after' then
  for j = 8, #ARGV do
    if redis.call('EXISTS', BP .. 'result:' .. ARGV[j], BP .. 'status:' .. ARGV[j]) == 0 then
      return ARGV[j]
    end
  end
  local n = #ARGV - 7
  local created = bnow()
  redis.call('HSET', key, 'holds', 0, 'total', n, 'pending', n, 'kids', 0, 'kidss', 0,
    'desc', ARGV[7], 'created_at', created, 'cb:success', ARGV[5], 'cbq:success', ARGV[6])
  bindex(created)
  for j = 8, #ARGV do
    local jid = ARGV[j]
    local out = redis.call('GET', BP .. 'result:' .. jid)
    if out then
      if string.match(out, '"state":"(%a+)"') == 'succeeded' then
        redis.call('HINCRBY', key, 'pending', -1)
      else
        redis.call('SADD', key .. ':failed', jid)
      end
    else
      redis.call('SADD', BP .. 'after:' .. jid, bid)
      redis.call('EXPIRE', BP .. 'after:' .. jid, BTTL)
    end
  end
  btouch(key)
  bcheck(bid)
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
