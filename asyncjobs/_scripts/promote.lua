-- promote: move due entries of the schedule or retry zset to their queues.
-- KEYS[1] the zset, then pairs: KEYS[2*i] queue list, KEYS[2*i+1] its wake list
-- ARGV: triples of (member in the zset, payload to enqueue, pair index i)
-- An entry moves only if this call removed it from the zset, so schedulers of several
-- processes racing on the same entry move it exactly once.
local n = 0
for j = 1, #ARGV, 3 do
  if redis.call('ZREM', KEYS[1], ARGV[j]) == 1 then
    local idx = tonumber(ARGV[j + 2])
    redis.call('LPUSH', KEYS[2 * idx], ARGV[j + 1])
    if redis.call('LLEN', KEYS[2 * idx + 1]) == 0 then
      redis.call('LPUSH', KEYS[2 * idx + 1], '1')
    end
    n = n + 1
  end
end
return n
