-- batch_lib: the batch bookkeeping shared by ack.lua (a batch job's outcome) and
-- batch.lua (a batch opened, closed, reopened). Included where a script says
-- "--#include batch_lib" (_redis.Scripts), inside the block that uses it, so a script
-- call without batch jobs never runs it.
-- Needs BP (the key prefix, "{ns}:") and BTTL (seconds batch data lives after its
-- last activity) set before it is included.
-- A batch's hash {ns}:batch:<bid>: holds (open `async with` blocks), total, pending
-- (jobs not yet succeeded), kids (child batches not complete), kidss (children not
-- succeeded), parent, kid:<bid> (a child batch), complete_at / success_at / death_at
-- (set once, as its callback is pushed), cb:<event> and cbq:<event> (a callback's
-- payload and queue). Failed jids:
-- the set {ns}:batch:<bid>:failed (a later success removes its jid).
local function bkey(bid)
  return BP .. 'batch:' .. bid
end

local function bnow()
  local t = redis.call('TIME')
  return t[1] .. '.' .. string.format('%06d', tonumber(t[2]))
end

-- Push an event's callback job (stored at creation) onto its queue, as push.lua.
local function bfire(key, event)
  local cb = redis.call('HMGET', key, 'cb:' .. event, 'cbq:' .. event)
  if cb[1] and cb[2] then
    local q = cb[2]
    if redis.call('LPUSH', BP .. 'queue:' .. q, cb[1]) == 1 then
      redis.call('SADD', BP .. 'queues', q)
      local wk = BP .. 'wake:' .. q
      if redis.call('LLEN', wk) == 0 then
        redis.call('LPUSH', wk, '1')
      end
    end
  end
end

local function btouch(key)
  redis.call('EXPIRE', key, BTTL)
  redis.call('EXPIRE', key .. ':failed', BTTL)
end

-- A job of the batch died (or a child batch did): the death callback, once; the
-- parent learns of it too.
local function bdeath(bid)
  local key = bkey(bid)
  local h = redis.call('HMGET', key, 'death_at', 'parent')
  if h[1] then
    return
  end
  redis.call('HSET', key, 'death_at', bnow())
  bfire(key, 'death')
  if h[2] then
    bdeath(h[2])
  end
end

-- Fire what the counters now call for, each event once: complete when every job ran
-- once (pending jobs are all failed ones) and every child completed; success when
-- every job succeeded and every child succeeded. Nothing while a block holds it open.
local function bcheck(bid)
  local key = bkey(bid)
  local h = redis.call('HMGET', key, 'holds', 'pending', 'kids', 'kidss', 'complete_at',
    'success_at', 'parent')
  if not h[1] then
    return -- expired, or never created
  end
  if (tonumber(h[1]) or 0) > 0 then
    return
  end
  local pending, kids, kidss = tonumber(h[2]) or 0, tonumber(h[3]) or 0, tonumber(h[4]) or 0
  local parent = h[7]
  if not h[5] and kids <= 0 and pending <= redis.call('SCARD', key .. ':failed') then
    redis.call('HSET', key, 'complete_at', bnow())
    bfire(key, 'complete')
    if parent then
      redis.call('HINCRBY', bkey(parent), 'kids', -1)
      bcheck(parent)
    end
  end
  if not h[6] and kids <= 0 and kidss <= 0 and pending <= 0 then
    redis.call('HSET', key, 'success_at', bnow())
    bfire(key, 'success')
    if parent then
      redis.call('HINCRBY', bkey(parent), 'kidss', -1)
      bcheck(parent)
    end
  end
end
