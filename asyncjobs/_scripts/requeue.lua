-- requeue: put in-flight jobs back at the head of their queues (shutdown, cancel).
-- KEYS[1] in-flight hash, then pairs: KEYS[2*i] queue list, KEYS[2*i+1] its wake list
-- ARGV: for each job, its in-flight field and the index i of its queue's pair.
-- Returns how many jobs went back. A field no longer in the hash was acked already.
local n = 0
for i = 1, #ARGV, 2 do
  local field = ARGV[i]
  local idx = tonumber(ARGV[i + 1])
  local p = redis.call('HGET', KEYS[1], field)
  if p then
    local qkey, wkey = KEYS[2 * idx], KEYS[2 * idx + 1]
    redis.call('HDEL', KEYS[1], field)
    redis.call('RPUSH', qkey, p)
    if redis.call('LLEN', wkey) == 0 then
      redis.call('LPUSH', wkey, '1')
    end
    n = n + 1
  end
end
return n
