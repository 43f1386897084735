-- done: acknowledge jobs that succeeded (the common case, kept lean: ack.lua does the
-- rest). KEYS[1] in-flight hash, KEYS[2] processed total, KEYS[3] processed today;
-- ARGV[1] the TTL of the day counter, ARGV[2..] the fields of the finished jobs (up to
-- the metrics arguments, if any: see below).
-- Only fields still in the hash count, so a repeated ack (after a lost reply) counts
-- nothing twice.
local MK = 4

--#include metrics_lib
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
