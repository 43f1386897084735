-- done: acknowledge jobs that succeeded (the common case, kept lean: ack.lua does the
-- rest). KEYS[1] in-flight hash, KEYS[2] processed total, KEYS[3] processed today;
-- ARGV[1] the TTL of the day counter, ARGV[2..] the fields of the finished jobs (up to
-- the metrics arguments, if any: see below).
-- Only fields still in the hash count, so a repeated ack (after a lost reply) counts
-- nothing twice.
local MK = 4

-- ---- metrics (App(metrics=True); _metrics.py) --------------------------------------
-- Present when KEYS has the three metrics keys after the ones above: KEYS[MK] the hash
-- of this minute, KEYS[MK + 1] the totals hash, KEYS[MK + 2] the process's last metrics
-- token. The last four ARGV are then the token of these increments, the minute hash's
-- TTL, M1 and M2; before them, M1 (field, increment) pairs for the minute hash, then M2
-- pairs for the totals. Written unless the token is the last one written: the acker
-- sends a set of increments again, same token, only when it did not learn whether the
-- first call ran, so nothing counts twice.
local function metrics_tail()
  if #KEYS < MK + 2 then
    return #ARGV
  end
  local m1, m2 = tonumber(ARGV[#ARGV - 1]), tonumber(ARGV[#ARGV])
  return #ARGV - 4 - 2 * (m1 + m2)
end
local function metrics_write()
  if #KEYS < MK + 2 then
    return
  end
  local token = ARGV[#ARGV - 3]
  if redis.call('GET', KEYS[MK + 2]) == token then
    return
  end
  redis.call('SET', KEYS[MK + 2], token, 'EX', 3600)
  local m1, m2 = tonumber(ARGV[#ARGV - 1]), tonumber(ARGV[#ARGV])
  local j = #ARGV - 4 - 2 * (m1 + m2) + 1
  for _ = 1, m1 do
    redis.call('HINCRBY', KEYS[MK], ARGV[j], ARGV[j + 1])
    j = j + 2
  end
  for _ = 1, m2 do
    redis.call('HINCRBY', KEYS[MK + 1], ARGV[j], ARGV[j + 1])
    j = j + 2
  end
  redis.call('EXPIRE', KEYS[MK], ARGV[#ARGV - 2])
end
-- ---- end of metrics -----------------------------------------------------------------
local last = metrics_tail()
local n = 0
for i = 2, last, 1000 do
  n = n + redis.call('HDEL', KEYS[1], unpack(ARGV, i, math.min(i + 999, last)))
end
if n > 0 then
  redis.call('INCRBY', KEYS[2], n)
  if redis.call('INCRBY', KEYS[3], n) == n then
    redis.call('EXPIRE', KEYS[3], ARGV[1])
  end
end
metrics_write()
return n
