-- schedule: add payloads to the schedule zset, waking a scheduler when one is sooner
-- than anything already there.
-- KEYS[1] schedule zset, KEYS[2] queues set, KEYS[3] scheduler wake list
-- ARGV[1] queue name, then pairs: score, payload
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local earliest = first[2] and tonumber(first[2]) or nil
local added = 0
local soonest = nil
for i = 2, #ARGV, 2 do
  added = added + redis.call('ZADD', KEYS[1], ARGV[i], ARGV[i + 1])
  local s = tonumber(ARGV[i])
  if soonest == nil or s < soonest then soonest = s end
end
redis.call('SADD', KEYS[2], ARGV[1])
if earliest == nil or (soonest ~= nil and soonest < earliest) then
  if redis.call('LLEN', KEYS[3]) == 0 then
    redis.call('LPUSH', KEYS[3], '1')
  end
end
return added
