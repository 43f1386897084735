-- limit_window: N per interval, in fixed windows or a sliding one.
-- KEYS[1] the limiter's key: a hash {w: window number, n: count} (fixed) or a sorted
-- set of grants scored by time (sliding).
-- ARGV[1] 'fixed' | 'sliding', ARGV[2] limit, ARGV[3] interval ms, ARGV[4] cost,
-- ARGV[5] a token unique to this call (sliding: the members it adds).
-- Times are Redis's clock (TIME), the same for every host. Returns {1, 0, now} when
-- allowed, {0, ms until it would be, now} when not.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local limit, interval, cost = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
if ARGV[1] == 'fixed' then
  local w = math.floor(now / interval)
  local h = redis.call('HMGET', KEYS[1], 'w', 'n')
  local n = 0
  if tonumber(h[1]) == w then
    n = tonumber(h[2])
  end
  if n + cost > limit then
    return {0, (w + 1) * interval - now, now}
  end
  redis.call('HSET', KEYS[1], 'w', w, 'n', n + cost)
  redis.call('PEXPIRE', KEYS[1], (w + 1) * interval - now + 1)
  return {1, 0, now}
end
-- Sliding: a grant at `now` counts the grants of (now - interval, now].
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - interval)
local n = redis.call('ZCARD', KEYS[1])
if n + cost > limit then
  local first = redis.call('ZRANGE', KEYS[1], n + cost - limit - 1, n + cost - limit - 1, 'WITHSCORES')
  return {0, tonumber(first[2]) + interval - now + 1, now}
end
for i = 1, cost do
  redis.call('ZADD', KEYS[1], now, ARGV[5] .. ':' .. i)
end
redis.call('PEXPIRE', KEYS[1], interval + 1)
return {1, 0, now}
