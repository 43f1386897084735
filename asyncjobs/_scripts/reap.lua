-- reap: give back the in-flight jobs of a process whose heartbeat has expired.
-- KEYS[1] its in-flight hash, KEYS[2] its heartbeat key, KEYS[3] processes set,
-- KEYS[4] dead zset, then pairs: KEYS[2*i+3] queue list, KEYS[2*i+4] its wake list
-- ARGV[1] process id, then groups of five: field, pair index i, payload (with its
-- recovery count raised), target ('queue' | 'dead'), score (for dead)
-- Returns {the number of jobs moved, then the payloads it moved to the dead set that
-- contain '"unique":[' (the client releases their unique locks)}, or {-1} if the
-- process is alive after all. Only fields still in the hash move, so racing reapers
-- move each job exactly once.
if redis.call('EXISTS', KEYS[2]) == 1 then
  return {-1}
end
-- >>> batches (#14): present only when a batch job goes to the dead set (a poison
-- pill): ..., key prefix, batch TTL, (field, bid) pairs, their count, 'batches', taken
-- off the END of ARGV. A job counts only if its field is still in the hash (the HDEL
-- below removes it in the same step): a death of its batch, once.
if ARGV[#ARGV] == 'batches' then
  table.remove(ARGV)
  local nb = tonumber(table.remove(ARGV))
  local first = #ARGV - 2 * nb - 1
  local BP, BTTL = ARGV[first], tonumber(ARGV[first + 1])
  --#include batch_lib
  for j = first + 2, #ARGV, 2 do
    local field, bid = ARGV[j], ARGV[j + 1]
    local key = bkey(bid)
    if redis.call('HEXISTS', KEYS[1], field) == 1 and redis.call('EXISTS', key) == 1 then
      redis.call('SADD', key .. ':failed', field)
      bdeath(bid)
      btouch(key)
      bcheck(bid)
    end
  end
  for _ = first, #ARGV do
    table.remove(ARGV)
  end
end
-- <<< batches
local n = 0
local out = {0}
for j = 2, #ARGV, 5 do
  if redis.call('HDEL', KEYS[1], ARGV[j]) == 1 then
    if ARGV[j + 3] == 'dead' then
      redis.call('ZADD', KEYS[4], ARGV[j + 4], ARGV[j + 2])
      if string.find(ARGV[j + 2], '"unique":[', 1, true) then
        out[#out + 1] = ARGV[j + 2]
      end
    else
      local idx = tonumber(ARGV[j + 1])
      redis.call('RPUSH', KEYS[2 * idx + 3], ARGV[j + 2])
      if redis.call('LLEN', KEYS[2 * idx + 4]) == 0 then
        redis.call('LPUSH', KEYS[2 * idx + 4], '1')
      end
    end
    n = n + 1
  end
end
if redis.call('HLEN', KEYS[1]) == 0 then
  redis.call('SREM', KEYS[3], ARGV[1])
end
out[1] = n
return out
