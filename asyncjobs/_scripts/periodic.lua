-- periodic: claim one tick of a periodic entry and enqueue its job, in one atomic step.
-- KEYS[1] entries hash (name -> definition), KEYS[2] the entry's state hash,
-- KEYS[3] the tick's claim key, KEYS[4] the entry's history list,
-- KEYS[5] queues set, KEYS[6] queue list, KEYS[7] wake list of that queue,
-- KEYS[8] the removed-by-hand marker (set by asyncjobs periodic remove)
-- ARGV[1] entry name, ARGV[2] tick (Unix seconds), ARGV[3] claim TTL (ms),
-- ARGV[4] queue name, ARGV[5] payload, ARGV[6] jid, ARGV[7] now (the claim's value),
-- ARGV[8] history length,
-- ARGV[9] mode: 'tick' (a due tick), 'missed' (the latest missed tick: only if newer than
-- the last enqueued one), 'now' (run by hand: no claim, not refused when paused)
-- Returns 1 enqueued, 0 another process claimed it, -1 paused, -2 not in the schedule
-- (a deploy or asyncjobs periodic remove removed it), -3 no schedule at all (Redis lost
-- its data: reconcile again).
-- Exactly once per tick: whoever sets the claim key (SET NX) pushes, in the same step.
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then
  -- No entries and no marker: Redis lost its data. With the marker, the last entries
  -- were removed by hand, and writing them again would undo that.
  if redis.call('EXISTS', KEYS[1]) == 0 and redis.call('EXISTS', KEYS[8]) == 0 then
    return -3
  end
  return -2
end
local state = redis.call('HMGET', KEYS[2], 'paused', 'last')
local tick = tonumber(ARGV[2])
if ARGV[9] ~= 'now' then
  if state[1] == '1' then
    return -1
  end
  if ARGV[9] == 'missed' and state[2] and tonumber(state[2]) >= tick then
    return 0
  end
  if not redis.call('SET', KEYS[3], ARGV[7], 'NX', 'PX', ARGV[3]) then
    return 0
  end
end
local len = redis.call('LPUSH', KEYS[6], ARGV[5])
if len == 1 then
  redis.call('SADD', KEYS[5], ARGV[4])
  if redis.call('LLEN', KEYS[7]) == 0 then
    redis.call('LPUSH', KEYS[7], '1')
  end
end
if ARGV[9] ~= 'now' and (not state[2] or tonumber(state[2]) < tick) then
  redis.call('HSET', KEYS[2], 'last', ARGV[2])
end
-- The time of the push, by the server's clock (the history shows how late a tick was).
local t = redis.call('TIME')
local at = t[1] .. '.' .. string.format('%06d', tonumber(t[2]))
redis.call('HSET', KEYS[2], 'last_jid', ARGV[6], 'last_at', at)
local keep = tonumber(ARGV[8])
if keep > 0 then
  redis.call('LPUSH', KEYS[4], ARGV[2] .. ' ' .. at .. ' ' .. ARGV[6] .. ' ' .. ARGV[9])
  redis.call('LTRIM', KEYS[4], 0, keep - 1)
end
return 1
