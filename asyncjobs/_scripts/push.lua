-- push: enqueue payloads on one queue, waking idle fetchers.
-- KEYS[1] queues set, KEYS[2] queue list, KEYS[3] wake list of that queue
-- ARGV[1] queue name, ARGV[2..] payloads
-- A hint is pushed only when the queue was empty before this push: a non-empty queue
-- already has a hint, or a fetcher that will pass one on (fetch.lua).
local n = #ARGV - 1
local len = redis.call('LPUSH', KEYS[2], unpack(ARGV, 2))
if len == n then
  redis.call('SADD', KEYS[1], ARGV[1])
  if redis.call('LLEN', KEYS[3]) == 0 then
    redis.call('LPUSH', KEYS[3], '1')
  end
end
return len
