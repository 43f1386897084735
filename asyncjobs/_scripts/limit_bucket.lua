-- limit_bucket: token bucket (and points: calls with a cost) or leaky bucket.
-- KEYS[1] the limiter's hash. ARGV[1] 'bucket' | 'leaky', ARGV[2] size, ARGV[3]
-- interval ms (the time to refill, or drain, a whole bucket), ARGV[4] cost.
-- bucket: {v: points left, t: when counted}; refills size per interval, continuously;
--   a call takes `cost` points if it has them.
-- leaky: {v: the time the bucket is empty again (GCRA's theoretical arrival time)};
--   each call pours `cost`, the bucket drains size per interval, evenly; a call that
--   would overflow it is refused.
-- Returns {1, 0, now} when allowed, {0, ms until it would be, now} when not.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local size, interval, cost = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local h = redis.call('HMGET', KEYS[1], 'v', 't')
if ARGV[1] == 'bucket' then
  local rate = size / interval
  local v = size
  if h[1] then
    v = math.min(size, tonumber(h[1]) + (now - tonumber(h[2])) * rate)
  end
  if v < cost then
    return {0, math.ceil((cost - v) / rate), now}
  end
  v = v - cost
  redis.call('HSET', KEYS[1], 'v', tostring(v), 't', now)
  redis.call('PEXPIRE', KEYS[1], math.ceil((size - v) / rate) + 1)
  return {1, 0, now}
end
local step = interval / size
local tat = now
if h[1] then
  tat = math.max(now, tonumber(h[1]))
end
local new = tat + cost * step
if new - now > interval then
  return {0, math.ceil(new - now - interval), now}
end
redis.call('HSET', KEYS[1], 'v', tostring(new))
redis.call('PEXPIRE', KEYS[1], math.ceil(new - now) + 1)
return {1, 0, now}
