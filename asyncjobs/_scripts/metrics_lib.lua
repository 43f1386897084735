-- metrics_lib: per-job metrics (App(metrics=True); _metrics.py), shared by done.lua and
-- ack.lua, included where they say "--#include metrics_lib" (_redis.Scripts). Needs MK
-- (the index of the first metrics key) set before it is included.
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
