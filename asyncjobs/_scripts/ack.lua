-- ack: record the outcomes of finished jobs in one step.
-- KEYS[1] in-flight hash, KEYS[2] retry zset, KEYS[3] dead zset,
-- KEYS[4] processed total, KEYS[5] processed today, KEYS[6] failed total,
-- KEYS[7] failed today, KEYS[8] schedule zset
-- ARGV[1] the done fields that are plain jids, joined by spaces (one argument is far
--         cheaper to send than a hundred), ARGV[2] number D of other done fields,
-- ARGV[3..D+2] those fields (whole payloads of garbage jobs),
-- then groups of four: field, target ('retry' | 'dead' | 'drop' | 'schedule'), score,
-- payload ('schedule': a job over a rate limit, back to the schedule; neither processed
-- nor failed);
-- the last three ARGV (before the metrics arguments, if any: see below) are: dead max
-- entries, dead min score (older is trimmed), stats TTL seconds.
-- Only fields still in the hash count: a repeated ack (a retried pipeline) changes
-- nothing.
-- >>> batches (#14): a self-contained block, present only when the acker sends jobs
-- of a batch. It takes its arguments off the END of ARGV, after the metrics ones (so
-- what follows, the metrics block included, sees the layout above): ..., key prefix "{ns}:", batch TTL seconds, then per batch job
-- (field, bid, outcome: done | retry | dead | drop | schedule), their count, 'batches'.
-- A job counts only if its field is still in the in-flight hash (HEXISTS here, the
-- HDEL below removes it in the same atomic step): a repeated or late ack, or a job the
-- reaper gave back, changes no count, so every callback is pushed once.
if ARGV[#ARGV] == 'batches' then
  table.remove(ARGV)
  local nb = tonumber(table.remove(ARGV))
  local first = #ARGV - 3 * nb - 1
  local BP, BTTL = ARGV[first], tonumber(ARGV[first + 1])
  --#include batch_lib
  -- Per job: one HEXISTS (and an SREM once the batch has failures); per batch in the
  -- call: EXISTS, SCARD, one HINCRBY for all its successes, then the checks.
  local seen, live, failures, succeeded, order = {}, {}, {}, {}, {}
  for j = first + 2, #ARGV, 3 do
    local field, bid, outcome = ARGV[j], ARGV[j + 1], ARGV[j + 2]
    if not seen[field] and outcome ~= 'schedule' then
      seen[field] = true
      local key = bkey(bid)
      if live[bid] == nil then
        live[bid] = redis.call('EXISTS', key) == 1 -- expired: nothing to count in
        failures[bid] = live[bid] and redis.call('SCARD', key .. ':failed') or 0
        succeeded[bid] = 0
        order[#order + 1] = bid
      end
      if live[bid] and redis.call('HEXISTS', KEYS[1], field) == 1 then
        if outcome == 'done' then
          succeeded[bid] = succeeded[bid] + 1
          if failures[bid] > 0 then -- a retry that succeeded leaves the failures
            redis.call('SREM', key .. ':failed', field)
          end
        else
          if redis.call('SADD', key .. ':failed', field) == 1 then
            failures[bid] = failures[bid] + 1
          end
          if outcome == 'dead' then
            bdeath(bid)
          end
        end
      end
    end
  end
  for _, bid in ipairs(order) do
    if live[bid] then
      local key = bkey(bid)
      if succeeded[bid] > 0 then
        redis.call('HINCRBY', key, 'pending', -succeeded[bid])
      end
      btouch(key)
      bcheck(bid)
    end
  end
  for _ = first, #ARGV do
    table.remove(ARGV)
  end
end
-- <<< batches
local MK = 9

--#include metrics_lib
local nargv = metrics_tail()
local d = tonumber(ARGV[2])
local done = 0
local fields = {}
for f in string.gmatch(ARGV[1], '%S+') do
  fields[#fields + 1] = f
end
for i = 3, d + 2 do
  fields[#fields + 1] = ARGV[i]
end
-- HDEL in chunks: unpack() of thousands of values would overflow Lua's stack.
for i = 1, #fields, 1000 do
  done = done + redis.call('HDEL', KEYS[1], unpack(fields, i, math.min(i + 999, #fields)))
end
local failed = 0
local moved = 0
local dead = 0
local last = nargv - 3
local i = d + 3
while i <= last do
  local field, target = ARGV[i], ARGV[i + 1]
  if target == 'schedule' then
    if redis.call('HDEL', KEYS[1], field) == 1 then
      redis.call('ZADD', KEYS[8], ARGV[i + 2], ARGV[i + 3])
      moved = moved + 1
    end
  elseif redis.call('HDEL', KEYS[1], field) == 1 then
    failed = failed + 1
    if target == 'retry' then
      redis.call('ZADD', KEYS[2], ARGV[i + 2], ARGV[i + 3])
    elseif target == 'dead' then
      redis.call('ZADD', KEYS[3], ARGV[i + 2], ARGV[i + 3])
      dead = dead + 1
    end
  end
  i = i + 4
end
local ttl = tonumber(ARGV[nargv])
if done + failed > 0 then
  redis.call('INCRBY', KEYS[4], done + failed)
  if redis.call('INCRBY', KEYS[5], done + failed) == done + failed then
    redis.call('EXPIRE', KEYS[5], ttl)
  end
end
if failed > 0 then
  redis.call('INCRBY', KEYS[6], failed)
  if redis.call('INCRBY', KEYS[7], failed) == failed then
    redis.call('EXPIRE', KEYS[7], ttl)
  end
end
if dead > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', '(' .. ARGV[nargv - 1])
  local max = tonumber(ARGV[nargv - 2])
  if redis.call('ZCARD', KEYS[3]) > max then
    redis.call('ZREMRANGEBYRANK', KEYS[3], 0, -max - 1)
  end
end
metrics_write()
return {done, failed + moved}
